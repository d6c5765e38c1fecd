"""--controller las: the per-example attack strategy (metaadv/training/las.py, docs/las.md).

The attack with per-example eps and steps, the pass count against a counting hook, the
per-example REINFORCE gradient against a hand computation, the frozen control, learning on a
toy, exact resume, and the threat model's tail.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from metaadv.attacks import pgd, pgd_per_example_steps
from metaadv.config import TrainConfig
from metaadv.training.hparams import HParams
from metaadv.training.las import LasStrategy, kl_to_uniform, per_example_advantages
from metaadv.training.methods import AttackPlan, StepContext, pgd_at_step
from metaadv.training.run import TrainingRun

from .attack_suite import SUITE_BATCH, AttackCase, AttackSuite, cross_entropy_objective
from .resume_helpers import interrupted_and_full, without_seconds

# No eps ramp here (the strategy acts from the first step); tests/test_las.py's ramp test turns it on.
TINY = dict(dataset="digits", controller="las", steps_per_round=3, batch_size=50, val_size=50, val_pgd_steps=2,
            rounds=2, device="cpu", eps=0.2, eps_ramp_fraction=0.0)


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


@contextlib.contextmanager
def counting_grad_passes(model: torch.nn.Module):
    """Counts examples through ``model``'s forward with grad enabled: the forward+backward passes."""
    count = [0]

    def hook(module, inputs, output):
        if torch.is_grad_enabled():
            count[0] += inputs[0].shape[0]

    handle = model.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


# ---- the attack -------------------------------------------------------------------------------

_SUITE_EPS = torch.linspace(0.02, 0.15, SUITE_BATCH)
_SUITE_STEPS = torch.arange(SUITE_BATCH) % 5 + 3


class TestPerExampleStepsSuite(AttackSuite):
    """pgd_per_example_steps joins the shared attack suite (bounds, range, no trace, strength, seeds)."""

    @pytest.fixture(params=[AttackCase(
        "pgd-per-example-steps",
        lambda m, x, y, *, generator: pgd_per_example_steps(m, x, y, eps=_SUITE_EPS, step_size=_SUITE_EPS / 4,
                                                            steps=_SUITE_STEPS, generator=generator),
        _SUITE_EPS, "linf", cross_entropy_objective)], ids=lambda c: c.name)
    def attack_case(self, request):
        return request.param


def test_two_examples_get_perturbations_bounded_by_their_own_eps(digits_model, digits_splits):
    x, y = digits_splits.split("test")
    x, y = x[:2], y[:2]
    plan = AttackPlan(eps=torch.tensor([0.05, 0.2]), step_size=torch.tensor([0.0125, 0.05]), steps=torch.tensor([10, 10]))
    ctx = StepContext(norm="linf", generator=torch.Generator().manual_seed(0), plan=plan)
    out = pgd_at_step(digits_model, x, y, HParams(eps=0.1, steps=1), ctx)
    # Recover x_adv's perturbation from the attack itself (pgd_at_step trains on it; same seed, same start).
    x_adv = pgd_per_example_steps(digits_model, x, y, eps=plan.eps, step_size=plan.step_size, steps=plan.steps,
                                  generator=torch.Generator().manual_seed(0))
    size = (x_adv - x).abs().flatten(1).amax(1)
    assert size[0] <= 0.05 + 1e-6 and size[1] <= 0.2 + 1e-6
    assert size[1] > 0.05 + 1e-3  # the larger eps is really used, not clipped to the smaller one
    assert out.passes == 10 + 1  # the plan's steps, not hp's one step, plus the training pass


def test_each_example_gets_exactly_its_steps(digits_model, digits_splits):
    x, y = digits_splits.split("test")
    x, y = x[:3], y[:3]
    steps = torch.tensor([1, 3, 5])
    with counting_grad_passes(digits_model) as count:
        x_adv = pgd_per_example_steps(digits_model, x, y, eps=0.1, step_size=0.02, steps=steps, random_init=False)
    assert count[0] == 1 + 3 + 5
    for i, k in enumerate(steps.tolist()):  # a finished example is left where its own k steps took it
        alone = pgd(digits_model, x[i : i + 1], y[i : i + 1], eps=0.1, step_size=0.02, steps=k, random_init=False)
        torch.testing.assert_close(x_adv[i : i + 1], alone, rtol=0, atol=1e-6)
        assert not torch.equal(alone, pgd(digits_model, x[i : i + 1], y[i : i + 1], eps=0.1, step_size=0.02, steps=k + 1,
                                          random_init=False))


def test_equal_steps_is_plain_pgd(digits_model, digits_splits):
    x, y = digits_splits.split("test")
    x, y = x[:16], y[:16]
    ours = pgd_per_example_steps(digits_model, x, y, eps=0.1, step_size=0.025, steps=torch.full((16,), 4),
                                 generator=torch.Generator().manual_seed(3))
    theirs = pgd(digits_model, x, y, eps=0.1, step_size=0.025, steps=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("method", ["pgd-at", "trades"])
def test_round_cost_equals_a_counting_hook(method):
    run = TrainingRun(tiny(method=method, las_interval=2))
    t = run.trainer
    with counting_grad_passes(t.model) as count:
        row = t.train_round(run.controller.propose(0))
    assert t.grad_evals + t.reward_grad_evals == count[0]
    training_passes = 1 if method == "pgd-at" else 2
    assert t.grad_evals == round((row["las/steps_mean"] + training_passes) * 3 * 50)
    assert t.reward_grad_evals == 1 * 32 * 5  # one update batch of 3 (interval 2): PGD-5 on 32 examples


# ---- the strategy -----------------------------------------------------------------------------

def test_per_example_reinforce_gradient_matches_a_hand_computation(digits_splits):
    config = tiny()
    las = LasStrategy(config, digits_splits.info, torch.device("cpu"))
    las.updates, las.baseline = 1, [2.0, 0.5, 0.75]  # a known baseline; the heads are still zero (uniform)
    x = digits_splits.train_x[:4]
    actions = torch.tensor([[0, 1, 2], [3, 0, 0], [11, 10, 3], [0, 1, 2]])
    las.learn(x, actions, torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    # By hand: A_i = (L_i - 2) + [i < 2] * (4 / 2) * (4 (R_i - 0.5) + 2 (C_i - 0.75))
    #   i=0: -1 + 2 * (2 + 0.5) = 4;  i=1: 0 + 2 * (-2 + 0.5) = -3;  i=2: 1;  i=3: 2.
    advantages = [4.0, -3.0, 1.0, 2.0]
    h = las.net.body(x).detach()
    for k, head in enumerate(las.net.heads):
        n = head.out_features
        # loss = -1/B sum_i A_i log softmax(z_i)[a_i]; d/dz_i = -A_i (onehot(a_i) - 1/n) / B at uniform.
        dz = torch.stack([-a * (torch.nn.functional.one_hot(actions[i, k], n).float() - 1.0 / n) / 4
                          for i, a in enumerate(advantages)])
        torch.testing.assert_close(head.bias.grad, dz.sum(0))
        torch.testing.assert_close(head.weight.grad, dz.T @ h)
    torch.testing.assert_close(per_example_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 0.0]),
                                                      torch.tensor([1.0, 1.0]), (2.0, 0.5, 0.75), (1.0, 4.0, 2.0)),
                               torch.tensor(advantages))


def test_frozen_strategy_does_not_move_and_is_exactly_uniform():
    run = TrainingRun(tiny(las_frozen=True))
    las = run.trainer.las
    before = {k: v.clone() for k, v in las.net.state_dict().items()}
    row = run.step()
    assert all(torch.equal(before[k], v) for k, v in las.net.state_dict().items())
    for z, n in zip(las.net(run.trainer.kl_x), (12, 11, 4)):
        assert torch.equal(torch.softmax(z, 1), torch.full((len(z), n), 1.0 / n))
    assert row["las/updates"] == 0 and row["las/kl"] == 0.0
    assert row["cost/reward_grad_evals"] == 0  # no look-ahead for a strategy that does not learn
    assert "las/reward" not in row
    assert 0.375 * 0.2 <= row["las/eps_q10"] < row["las/eps_q90"] <= 1.75 * 0.2  # it acts: spread over the grid


def test_strategy_learns_the_clearly_better_choice(digits_splits):
    las = LasStrategy(tiny(las_lr=0.01), digits_splits.info, torch.device("cpu"))
    x = digits_splits.train_x[:64]
    best = len(las.grids["eps"]) - 1

    def p_best():
        with torch.no_grad():
            return torch.softmax(las.net(x)[0], 1)[:, best].mean().item()

    start = p_best()
    for step in range(60):
        actions, _ = las.act(x, step)
        r_loss = (actions[:, 0] == best).float()  # only the largest eps is rewarded
        las.learn(x, actions, r_loss, torch.zeros(32), torch.zeros(32))
    assert start == pytest.approx(1 / 12)
    assert p_best() > 0.3
    assert kl_to_uniform(las.net(x)).mean().item() > 0.1


def test_resume_is_exact(tmp_path):
    config = tiny(rounds=3, steps_per_round=2)
    full, resumed, _ = interrupted_and_full(config, tmp_path, stop_round=1)
    assert without_seconds(resumed.rows) == without_seconds(full.rows)
    assert full.rows[-1]["las/updates"] == 6
    for a, b in ((full.trainer.model, resumed.trainer.model), (full.trainer.las.net, resumed.trainer.las.net)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert full.trainer.las.baseline == resumed.trainer.las.baseline
    assert torch.equal(full.trainer.las.opt.state_dict()["state"][0]["exp_avg"],
                       resumed.trainer.las.opt.state_dict()["state"][0]["exp_avg"])


def test_tail_holds_the_target_eps_with_las_off(monkeypatch):
    run = TrainingRun(tiny(tail_fraction=0.5))
    first = run.step()
    assert first["run/tail"] == 0 and first["las/updates"] == 3 and "las/eps_mean" in first

    def no_acting(*args, **kwargs):
        raise AssertionError("the strategy acted in the tail")

    monkeypatch.setattr(run.trainer.las, "act", no_acting)
    monkeypatch.setattr(run.trainer.las, "learn", no_acting)
    tail = run.step()
    assert tail["run/tail"] == 1 and tail["hp/eps"] == 0.2 and tail["hp/steps"] == 10
    assert tail["las/updates"] == 3 and "las/eps_mean" not in tail and "las/reward" not in tail
    assert tail["cost/grad_evals"] - first["cost/grad_evals"] == 3 * 50 * (10 + 1)  # the configured PGD-10
    assert tail["cost/reward_grad_evals"] == first["cost/reward_grad_evals"]


def test_controller_gives_the_schedule_itself():
    run = TrainingRun(tiny(rounds=5, lr_schedule="step", lr_milestones=[0.5], eps_ramp_rounds=3))
    hp0, hp4 = run.controller.propose(0), run.controller.propose(4)
    assert hp0.eps == pytest.approx(0.2 / 3) and hp4.eps == 0.2  # the schedule's ramp: the strategy's fractions of it
    assert hp4.lr == pytest.approx(0.1 * hp0.lr)


def test_las_draws_its_fractions_of_the_schedules_eps_ramp_and_keeps_its_lr_step(digits_splits):
    """The strategy's eps fractions multiply the schedule's eps in force: its ramp warms them up (the
    first step, at eps 0, is clean and plans nothing), then the target; the lr steps at 80%."""
    from metaadv.config import TrainConfig
    from metaadv.training.run import TrainingRun

    config = TrainConfig.from_dict({"dataset": "digits", "method": "pgd-at", "controller": "las", "rounds": 20,
                                    "steps_per_round": 2, "batch_size": 32, "val_size": 32, "val_pgd_steps": 1,
                                    "budget_grad_evals": 2000, "las_steps": [1, 2], "las_lookahead_size": 8,
                                    "las_lookahead_steps": 1, "eps": 0.3, "device": "cpu"})
    run = TrainingRun(config, splits=digits_splits)
    drawn = []
    real_act = run.trainer.las.act
    run.trainer.las.act = lambda x, step, eps=None: drawn.append(eps) or real_act(x, step, eps)
    while not run.done:
        run.step()
    # The ramp: 20% of 2,000 grad evals; the first step (eps 0) planned nothing, the next drew below 0.3.
    assert drawn[0] > 0 and drawn[0] < 0.3 and drawn == sorted(drawn) and drawn[-1] == pytest.approx(0.3)
    assert run.trainer.las.batches == len(drawn) == run.trainer.global_step - 1
    assert run.rows[-1]["hp/eps"] == pytest.approx(0.3) and run.rows[0]["las/eps_q90"] <= 1.75 * run.rows[0]["hp/eps"] + 1e-9
    lrs = [r["hp/lr"] for r in run.rows]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)  # x0.1 past 80% of the budget
