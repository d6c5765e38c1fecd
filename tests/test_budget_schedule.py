"""The fixed schedule counted in fractions of the budget (issue 21, fault 2): a run whose rounds are
long ramps eps over the first 20% of its training cost and drops lr at 80% of it, step by step."""

from __future__ import annotations

import pytest

from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training import ScheduleController
from metaadv.training.run import TrainingRun

from .resume_helpers import interrupted_and_full, without_seconds

EPS, LR, BUDGET = 0.3, 1e-3, 1000
# PGD-1 on 20 digits costs 2 passes x 20 = 40 a step (a clean step at eps 0: 20); five rounds of five
# steps are about the budget, the rounds cap (10) is never reached: the budget ends the run.
BUDGETED = {"dataset": "digits", "method": "pgd-at", "rounds": 10, "steps_per_round": 5, "batch_size": 20,
            "steps": 1, "eps": EPS, "lr": LR, "lr_schedule": "step", "lr_milestones": [0.8],
            "budget_grad_evals": BUDGET, "val_size": 16, "val_pgd_steps": 1, "device": "cpu"}


def _steps(splits, **changes) -> tuple[list[tuple[int, float, float]], TrainingRun]:
    """``[(cost spent before the step, its eps, its lr)]`` of every optimizer step of a whole run."""
    run = TrainingRun(TrainConfig.from_dict({**BUDGETED, **changes}), splits=splits)
    seen, real = [], run.trainer.method.step

    def step(model, x, y, hp, ctx):
        seen.append((run.trainer.grad_evals, hp.eps, run.trainer.optimizer.param_groups[0]["lr"]))
        return real(model, x, y, hp, ctx)

    run.trainer.method.step = step
    while not run.done:
        run.step()
    return seen, run


def _cost_below_target(seen, total) -> int:
    ends = [s for s, _, _ in seen[1:]] + [total]
    return sum(end - start for (start, eps, _), end in zip(seen, ends) if eps < EPS - 1e-12)


def test_a_budgeted_run_ramps_over_20_percent_of_its_budget_and_drops_lr_at_80(digits_splits):
    seen, run = _steps(digits_splits)
    total = run.trainer.grad_evals
    # Five long rounds and one step: the budget, not the rounds, ends the run, within a step of it.
    assert BUDGET <= total < BUDGET + 40 and len(run.rows) == 6
    # eps rises with the cost spent, linearly from 0, and is at its target from 20% of the budget on.
    for spent, eps, _ in seen:
        assert eps == pytest.approx(EPS * min(1.0, spent / (0.2 * BUDGET)))
    ramp = _cost_below_target(seen, total)
    assert 0.2 * BUDGET <= ramp < 0.2 * BUDGET + 40  # within the one step that crosses 20%
    assert total - ramp > 0.75 * BUDGET
    # lr drops at the first step that starts once 80% of the budget is spent, mid-round.
    assert [lr for _, _, lr in seen] == pytest.approx([LR if s < 0.8 * BUDGET else LR / 10 for s, _, _ in seen])
    drop = next(s for s, _, lr in seen if lr < LR)
    round_starts = {spent for spent, _, _ in seen[::5]}
    assert 0.8 * BUDGET <= drop < 0.8 * BUDGET + 40 and drop not in round_starts
    # The row carries the eps at the round's first and last steps and the lr in force at its end.
    assert (run.rows[0]["hp/eps_start"], run.rows[0]["hp/eps"]) == pytest.approx((0.0, EPS * 140 / 200))
    assert run.rows[1]["hp/eps"] == EPS and run.rows[3]["hp/lr"] == pytest.approx(LR)
    assert run.rows[4]["hp/lr"] == pytest.approx(LR / 10)


def test_the_old_schedule_counted_in_rounds_ramped_over_three_of_five(digits_splits):
    # What the fault was: with eps_ramp_rounds (old configs and checkpoints keep it), the ramp takes
    # 3 of the 5 rounds the budget buys, 60% of the budget below the target eps.
    seen, run = _steps(digits_splits, eps_ramp_rounds=3)
    assert _cost_below_target(seen, run.trainer.grad_evals) > 0.55 * BUDGET


def test_without_a_budget_the_fractions_count_rounds_as_the_old_default_did():
    c = ScheduleController(TrainConfig.from_dict({**BUDGETED, "rounds": 15, "budget_grad_evals": 0}))
    at = [c.step_schedule(r) for r in range(15)]
    # 0.2 of 15 rounds = the old 3-round ramp: round 3 starts at the target; lr x0.1 from round 12.
    assert at[1](0, 0, 4).eps == pytest.approx(EPS / 3) and at[2](0, 2, 4).eps == pytest.approx(EPS * 2.5 / 3)
    assert at[3](0, 0, 4).eps == EPS and at[2](0, 3, 4).eps < EPS
    assert at[11](0, 3, 4).lr == LR and at[12](0, 0, 4).lr == pytest.approx(LR / 10)
    # With a budget the cost decides, whatever the round.
    b = ScheduleController(TrainConfig.from_dict({**BUDGETED, "lr_schedule": "cosine"}))
    assert b.step_schedule(0)(100, 0, 5).eps == pytest.approx(EPS / 2) and b.step_schedule(9)(100, 0, 5).eps == pytest.approx(EPS / 2)
    assert b.step_schedule(3)(500, 0, 5).lr == pytest.approx(LR / 2)


def test_a_budgeted_schedule_resumes_exactly(tmp_path):
    config = TrainConfig.from_dict({**BUDGETED, "budget_grad_evals": 600, "steps_per_round": 4})
    full, resumed, written = interrupted_and_full(config, tmp_path, stop_round=2)
    assert len(written) == 2 and without_seconds(resumed.rows) == without_seconds(full.rows)
    assert full.rows[0]["hp/eps"] < EPS and full.rows[-1]["hp/lr"] < LR  # the resumed rounds ramped and stepped


@pytest.mark.parametrize("changes, message", [
    ({"eps_ramp_fraction": 1.5}, "eps_ramp_fraction must be in"),
    ({"eps_ramp_rounds": -2}, "eps_ramp_rounds must be >= 0"),
    ({"eps_ramp_by": "round"}, "give eps_ramp_rounds too"),
])
def test_bad_ramp_settings_are_one_line(changes, message):
    with pytest.raises(UserError, match=message):
        TrainConfig.from_dict({**BUDGETED, **changes})


def test_in_the_tail_eps_holds_its_target_and_lr_still_steps_at_80_percent(digits_splits):
    seen, run = _steps(digits_splits, tail_fraction=0.5)
    tail = [r for r in run.rows if r["run/tail"]]
    assert tail and all(r["hp/eps"] == EPS and r["hp/eps_start"] == EPS for r in tail)
    assert [lr for _, _, lr in seen] == pytest.approx([LR if s < 0.8 * BUDGET else LR / 10 for s, _, _ in seen])
