"""The threat model's tail (``tail_fraction``): whatever the controller chooses, a run ends at the target eps."""

from __future__ import annotations

import pytest
import torch

from metaadv.cli import main
from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training.run import TrainingRun

TINY = {"dataset": "digits", "method": "pgd-at", "rounds": 4, "steps_per_round": 2, "batch_size": 32, "val_size": 32,
        "val_pgd_steps": 2, "steps": 2, "eps": 0.3, "device": "cpu"}


def _run(splits, **changes) -> TrainingRun:
    run = TrainingRun(TrainConfig.from_dict({**TINY, **changes}), splits=splits)
    while not run.done:
        run.step()
    return run


def test_the_tail_holds_the_target_eps_and_attack_where_the_schedule_would_not(digits_splits):
    # A ramp of 10 rounds never reaches 0.3 in 4; the tail's last half does, with the configured attack.
    ramp = {"eps_ramp_rounds": 10, "eps_ramp_by": "round", "lr_schedule": "constant"}
    plain, held = _run(digits_splits, **ramp), _run(digits_splits, **ramp, tail_fraction=0.5)
    assert [r["hp/eps"] for r in plain.rows] == pytest.approx([0.03, 0.06, 0.09, 0.12])
    assert [r["hp/eps"] for r in held.rows] == pytest.approx([0.03, 0.06, 0.3, 0.3])
    assert [r["run/tail"] for r in held.rows] == [0, 0, 1, 1] and "run/tail" not in plain.rows[0]
    assert all(r["hp/steps"] == 2 and r["hp/eps_start"] == pytest.approx(0.3) for r in held.rows[2:])


def test_with_a_budget_the_tail_is_the_last_fraction_of_the_budget(digits_splits):
    # PGD-2 costs 3 passes x 32 = 96 a step, 192 a round; the tail begins once 0.75 x 1152 = 864 are spent.
    run = _run(digits_splits, rounds=50, budget_grad_evals=1152, tail_fraction=0.25, eps_ramp_rounds=50,
               eps_ramp_by="round")
    # After round 4: 768 < 864, after round 5: 960: round 6 is the tail, and the budget ends it.
    assert [r["run/tail"] for r in run.rows] == [0, 0, 0, 0, 0, 1] and run.rows[-1]["cost/grad_evals"] == 1152
    assert run.rows[-1]["hp/eps"] == pytest.approx(0.3) and all(r["hp/eps"] < 0.3 for r in run.rows[:-1])


def test_a_policy_neither_chooses_nor_learns_in_the_tail(digits_splits):
    run = TrainingRun(TrainConfig.from_dict({**TINY, "controller": "policy", "policy_eps": [0.25, 0.5],
                                             "policy_lr_mult": [0.5], "tail_fraction": 0.5}), splits=digits_splits)
    run.step(), run.step()
    policy = {k: v.clone() for k, v in run.controller.state_dict()["net"].items()}
    updates = run.controller.state_dict().get("updates")
    rows = [run.step(), run.step()]
    assert [r["run/tail"] for r in run.rows] == [0, 0, 1, 1]
    assert all(r["hp/eps"] == pytest.approx(0.3) and not any(k.startswith("policy/") for k in r) for r in rows)
    # The lr of the policy's last round holds (it picked 0.5 x lr), and the policy did not move.
    assert all(r["hp/lr"] == pytest.approx(run.rows[1]["hp/lr"]) for r in rows)
    assert all(torch.equal(policy[k], v) for k, v in run.controller.state_dict()["net"].items())
    assert run.controller.state_dict().get("updates") == updates


@pytest.mark.parametrize("fraction", ["1.0", "-0.1", "1.5"])
def test_a_tail_fraction_outside_0_1_is_one_line_and_writes_nothing(tmp_path, capsys, fraction):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--dataset", "digits", "--tail-fraction", fraction]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tail_fraction must be in [0, 1)" in err[0] and not out.exists()
    with pytest.raises(UserError):
        TrainConfig.from_dict({"tail_fraction": float(fraction)})


def test_the_tail_trains_with_its_own_attack_where_one_is_set(digits_splits):
    # A searched run's config holds the searched attack (PGD-1 here); its tail uses the fixed arm's PGD-3 at 0.25 eps.
    run = _run(digits_splits, steps=1, step_ratio=1.0, eps_ramp_rounds=0, tail_fraction=0.5, tail_steps=3,
               tail_step_ratio=0.25)
    assert [r["hp/steps"] for r in run.rows] == [1, 1, 3, 3]
    assert [r["hp/step_size"] for r in run.rows] == pytest.approx([0.3, 0.3, 0.075, 0.075])
    assert run.rows[2]["cost/grad_evals"] - run.rows[1]["cost/grad_evals"] == 2 * 32 * (3 + 1)  # PGD-3 + the update
