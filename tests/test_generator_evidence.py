"""Issue 23's controls: the generator frozen at initialisation, PGD-AT from a zero start, the guard's
revert without its stop, and a budget that counts the policy's reward checks."""

import pytest
import torch

from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training.methods import StepContext, pgd_at_step
from metaadv.training.run import TrainingRun

TINY = {"dataset": "digits", "rounds": 2, "steps_per_round": 2, "batch_size": 20, "val_size": 20, "val_pgd_steps": 1,
        "gen_width": 8, "gen_unroll": 2, "eps_ramp_rounds": 0, "device": "cpu"}


def tiny(**changes):
    return TrainConfig.from_dict({**TINY, **changes})


def _clone(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _moved(before: dict, module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("method", ["meta-generator", "advgan"])
def test_a_frozen_generator_never_moves_while_the_classifier_trains(digits_splits, method):
    run = TrainingRun(tiny(method=method, gen_frozen=True), splits=digits_splits)
    gen, model = run.trainer.method.gen, run.trainer.model
    gen_before, model_before = _clone(gen), _clone(model)
    disc_before = _clone(run.trainer.method.disc) if method == "advgan" else None
    rows = [run.step(), run.step()]
    assert not _moved(gen_before, gen)
    assert _moved(model_before, model)
    if disc_before is not None:  # no generator learning, so no discriminator to learn against
        assert not _moved(disc_before, run.trainer.method.disc)
    assert all(r["cost/grad_evals"] > 0 for r in rows)


def test_the_same_generator_learning_moves(digits_splits):
    run = TrainingRun(tiny(method="meta-generator"), splits=digits_splits)
    before = _clone(run.trainer.method.gen)
    run.step()
    assert _moved(before, run.trainer.method.gen)  # so the frozen test's "never moves" is the option's doing


def test_frozen_and_learned_generators_spend_the_same_classifier_passes(digits_splits):
    """With one final step and the last step's loss only, the frozen generator's first final step reads its
    own gradient (one pass) where the learned one reuses its loss term's: the same total, and no more."""
    costs = {}
    for frozen in (False, True):
        run = TrainingRun(tiny(method="meta-generator", gen_frozen=frozen, gen_final_steps=1), splits=digits_splits)
        costs[frozen] = run.step()["cost/grad_evals"]
    k = TINY["gen_unroll"]
    assert costs[True] == costs[False] == 2 * 20 * (1 + (k - 1) + 1 + 0 + 1)
    # Without a final step the frozen generator spends nothing on its (absent) loss term: one pass fewer.
    run = TrainingRun(tiny(method="meta-generator", gen_frozen=True, gen_final_steps=0), splits=digits_splits)
    assert run.step()["cost/grad_evals"] == 2 * 20 * (1 + (k - 1) + 1)


@pytest.mark.parametrize("changes", [{"method": "pgd-at", "gen_frozen": True},
                                     {"method": "meta-generator", "gen_arch": "noise", "gen_frozen": True},
                                     {"method": "meta-generator", "gen_frozen": True, "gen_noise": True, "gen_diversity": 0.1},
                                     {"method": "trades", "pgd_start": "zero"},
                                     {"method": "pgd-at", "pgd_start": "middle"},
                                     {"budget_counts": "everything"}])
def test_the_new_keys_refuse_what_they_cannot_mean(changes):
    with pytest.raises(UserError):
        tiny(**changes)


class _Linear(torch.nn.Module):
    """logits = W x: the input gradient of the cross-entropy is known in closed form."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(64, 10, bias=False)
        torch.nn.init.normal_(self.w.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.w(x.flatten(1))


def test_a_zero_start_pgd_step_is_one_signed_gradient_step_from_x():
    model = _Linear()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    y = torch.arange(6) % 10
    hp = tiny(method="pgd-at", steps=1, step_ratio=0.25, eps=0.2).hparams()
    seen = {}
    real_forward = model.forward

    def spy(inp):  # the training loss's forward sees the adversarial batch
        seen["x_adv"] = inp.detach().clone()
        return real_forward(inp)

    x_in = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_in), y), x_in)
    model.forward = spy
    pgd_at_step(model, x, y, hp, StepContext(norm="linf", generator=torch.Generator().manual_seed(2), pgd_start="zero"))
    assert torch.allclose(seen["x_adv"] - x, hp.step_size * grad.sign(), atol=1e-6)
    # The default random start lands elsewhere: the same step from a uniform point of the ball.
    pgd_at_step(model, x, y, hp, StepContext(norm="linf", generator=torch.Generator().manual_seed(2)))
    assert not torch.allclose(seen["x_adv"] - x, hp.step_size * grad.sign(), atol=1e-3)


def test_random_start_stays_the_default_and_zero_reaches_the_trainer(digits_splits, monkeypatch):
    assert tiny(method="pgd-at").pgd_start == "random"
    starts = []
    import metaadv.training.methods as methods

    real = methods.pgd

    def spy(*args, random_init=True, **kw):
        starts.append(random_init)
        return real(*args, random_init=random_init, **kw)

    monkeypatch.setattr(methods, "pgd", spy)
    TrainingRun(tiny(method="pgd-at", steps=2), splits=digits_splits).step()
    TrainingRun(tiny(method="pgd-at", steps=2, pgd_start="zero"), splits=digits_splits).step()
    assert starts == [True, True, False, False]


def test_the_guard_without_its_stop_reverts_and_trains_on(digits_splits, monkeypatch):
    run = TrainingRun(tiny(method="meta-generator", rounds=5, co_threshold=0.2, co_guard_stop=False), splits=digits_splits)
    values = iter([0.4, 0.6, 0.3, 0.5, 0.5])  # round 3 falls 0.3 below round 2's 0.6
    real = run.trainer.validate
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real(*a), "val/robust_acc": next(values)})
    run.step()
    run.step()
    best = _clone(run.trainer.model)
    with pytest.warns(UserWarning, match="reverted to round 2.*training continues"):
        row = run.step()
    assert row["train/co_detected"] == 1 and not run.done and not run.stopped_reason
    assert not _moved(best, run.trainer.model)  # reverted to round 2's weights
    rows = [run.step(), run.step()]
    assert run.done and len(run.rows) == 5 and [r["train/co_detected"] for r in rows] == [0, 0]
    assert _moved(best, run.trainer.model)  # and trained on from them


def _policy_run(digits_splits, counts: str, budget: int) -> TrainingRun:
    config = tiny(method="pgd-at", steps=2, controller="policy", rounds=50, budget_grad_evals=budget, budget_counts=counts,
                  policy_reward_size=20, policy_reward_steps=2)
    run = TrainingRun(config, splits=digits_splits)
    while not run.done:
        run.step()
    return run


def test_a_budget_of_train_and_decisions_stops_the_policy_when_both_together_reach_it(digits_splits):
    budget = 1_000
    train_only = _policy_run(digits_splits, "train", budget)
    both = _policy_run(digits_splits, "train+decisions", budget)
    t, b = train_only.trainer, both.trainer
    assert t.grad_evals >= budget and t.reward_grad_evals > 0  # the reward checks came on top
    assert b.grad_evals + b.reward_grad_evals >= budget
    # Stopped at the round where training and reward checks reach it: the round before had not.
    last = both.rows[-2]
    assert last["cost/grad_evals"] + last["cost/reward_grad_evals"] < budget
    assert b.grad_evals < t.grad_evals


def test_l2l_das_classifier_loss_is_the_mean_over_the_clean_batch_and_both_copies():
    from metaadv.training.generator_methods import _copies_loss

    model = _Linear()
    g = torch.Generator().manual_seed(3)
    x, adv = torch.rand(5, 1, 8, 8, generator=g), torch.rand(10, 1, 8, 8, generator=g)
    y = torch.arange(5)
    loss, logits_adv, passes = _copies_loss(model, x, adv, y, 2 / 3)
    # L2L-DA's f_update_style=1: one cross-entropy over [x, adv_1, adv_2] with labels [y, y, y].
    reference = torch.nn.functional.cross_entropy(model(torch.cat([x, adv])), y.repeat(3))
    assert torch.allclose(loss, reference, atol=1e-6) and passes == 3 and logits_adv.shape == (10, 10)


def test_both_noise_draws_train_the_classifier_and_are_paid_for(digits_splits, monkeypatch):
    import metaadv.training.generator_methods as gm

    l2l = dict(method="meta-generator", gen_noise=True, gen_diversity=0.02, gen_step_discount=1.0, gen_final_steps=0,
               adv_mix=2 / 3)
    seen = []
    real = gm._copies_loss
    monkeypatch.setattr(gm, "_copies_loss", lambda model, x, x_adv, y, mix: seen.append(len(x_adv) // len(x)) or
                        real(model, x, x_adv, y, mix))
    costs = {}
    for copies in (1, 2):
        run = TrainingRun(tiny(**l2l, gen_train_copies=copies), splits=digits_splits)
        costs[copies] = run.step()["cost/grad_evals"]
    k = TINY["gen_unroll"]
    generator = 1 + 2 * ((k - 1) + k)  # the first read, then two draws of K - 1 reads and K loss terms
    assert costs == {1: 2 * 20 * (generator + 2), 2: 2 * 20 * (generator + 3)}
    assert seen == [2, 2]  # copies 2 only, both steps of the round
    with pytest.raises(UserError, match="gen-train-copies"):
        tiny(method="meta-generator", gen_train_copies=2)
