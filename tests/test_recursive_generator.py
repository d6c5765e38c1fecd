"""The recursive generator (L2L-DA), the gradient step after any generator, and what each costs."""

import pytest
import torch
import torch.nn.functional as F

from metaadv.attacks import cross_entropy, frozen_eval, per_example
from metaadv.attacks._common import input_grad
from metaadv.config import TrainConfig
from metaadv.models.generator import RecursiveGenerator, normalized_grad
from metaadv.training.generator_methods import GeneratorTraining, perturbation_norm
from metaadv.training.generator_unroll import unroll
from metaadv.training.hparams import HParams
from metaadv.training.trainer import Trainer

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels


def _unrolled(model, gen, x, y, eps, steps, norm="linf", fresh=True, discount=1.0, noise=None, ratio=0.5):
    eps_b = per_example(eps, x)
    with frozen_eval(model), torch.enable_grad():
        grad0, _, _ = input_grad(model, x, y, cross_entropy)
        return unroll(model, gen, x, y, delta0=torch.zeros_like(x), grad0=grad0, eps_b=eps_b, step_b=eps_b * ratio,
                      steps=steps, norm=norm, discount=discount, noise=noise, fresh=fresh)


def _saturated_batch(splits, n=48):
    x, y = splits.test_x[:n].clone(), splits.test_y[:n]
    x[:8] = x[:8].round()  # pixels at 0 and 1, where the [0, 1] clamp bites
    return x, y


@pytest.mark.parametrize("norm, eps, ratio", [("linf", 0.3, 0.5), ("linf", 0.05, 2.0), ("l2", 1.5, 0.5), ("l2", 0.3, 3.0)])
@pytest.mark.parametrize("steps", [1, 2, 3, 6])
def test_recursive_output_stays_in_the_ball_for_every_k(digits_model, digits_splits, norm, eps, ratio, steps):
    x, y = _saturated_batch(digits_splits)
    gen = RecursiveGenerator(1, width=8)
    with torch.no_grad():  # huge weights: raw outputs far outside any step, so only the projection keeps the ball
        for p in gen.parameters():
            p.mul_(50.0)
    out = _unrolled(digits_model, gen, x, y, eps, steps, norm=norm, ratio=ratio)
    assert (perturbation_norm(out.delta, norm) <= eps + 1e-5).all()
    assert ((x + out.delta) >= 0).all() and ((x + out.delta) <= 1).all()
    # and through the method: the generator, then two final gradient steps of 1.5 eps
    method = GeneratorTraining(1, arch="recursive", width=8)
    x_adv, _ = method.train_generator(digits_model, x, y, HParams(eps=eps, gen_unroll=steps, gen_step_ratio=ratio,
                                                                  gen_final_steps=2, gen_final_ratio=1.5), norm, None)
    assert (perturbation_norm(x_adv - x, norm) <= eps + 1e-5).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()


def test_each_recursive_step_moves_at_most_one_step(digits_model, digits_splits):
    x, y = _saturated_batch(digits_splits)
    gen = RecursiveGenerator(1, width=8)
    eps, step = per_example(0.3, x), per_example(0.05, x)
    g = normalized_grad(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        delta = gen.step(x, torch.zeros_like(x), g, eps, step, "linf")
        assert delta.abs().max() <= 0.05 + 1e-6
        moved = gen.step(x, delta, g, eps, step, "linf") - delta
        assert moved.abs().max() <= 0.05 + 1e-6


@pytest.mark.parametrize("noise", [False, True])
def test_gradient_reaches_every_generator_parameter(digits_model, digits_splits, noise):
    x, y = digits_splits.test_x[:32], digits_splits.test_y[:32]
    gen = RecursiveGenerator(1, width=8, noise=noise)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) if noise else None
    out = _unrolled(digits_model, gen, x, y, 0.2, 3, noise=z)
    out.loss.backward()
    named = dict(gen.named_parameters())
    assert set(named) >= {"gain", "decode.weight", "decode.bias", "encode.0.weight", "encode.2.weight"}
    for name, p in named.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the classifier is a fixed target: nothing of it moved or kept a gradient
    assert all(p.grad is None for p in digits_model.parameters())


def test_the_loss_of_a_later_step_reaches_the_generator_through_the_running_perturbation(digits_model, digits_splits):
    # discount 0: only step K's cross-entropy is in the loss; with K = 2 the generator is used twice, and the
    # loss must depend on the first use (back-propagation through the unroll), not only on the last.
    x, y = digits_splits.test_x[:32], digits_splits.test_y[:32]
    gen = RecursiveGenerator(1, width=8)
    out = _unrolled(digits_model, gen, x, y, 0.2, 2, discount=0.0)
    (grad_first,) = torch.autograd.grad(out.loss, out.delta, retain_graph=True)
    assert grad_first.abs().sum() > 0
    full = torch.autograd.grad(out.loss, gen.gain)[0]
    one_step = _unrolled(digits_model, gen, x, y, 0.2, 1)
    assert not torch.allclose(full, torch.autograd.grad(one_step.loss, gen.gain)[0])


def test_the_first_final_step_reads_the_same_gradient_a_fresh_pass_would(digits_model, digits_splits):
    """The free final step: the generator loss's gradient at x + delta_K has the sign of a fresh CE gradient there."""
    x, y = digits_splits.test_x[:64], digits_splits.test_y[:64]
    out = _unrolled(digits_model, RecursiveGenerator(1, width=8), x, y, 0.2, 3)
    out.loss.backward()
    fresh, _, _ = input_grad(digits_model, (x + out.delta).detach(), y, cross_entropy)
    free = -out.x_last.grad
    nonzero = fresh.abs() > 1e-6 * fresh.abs().max()
    assert nonzero.float().mean() > 0.5
    assert torch.equal(free.sign()[nonzero], fresh.sign()[nonzero])


def _fit(model, splits, arch, seed, eps, steps=60, **kwargs):
    method = GeneratorTraining(1, arch=arch, width=16, seed=seed, **kwargs)
    hp = HParams(eps=eps, gen_lr=1e-2, gen_final_steps=0)
    g, rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(splits.train_x), (64,), generator=g)
        method.train_generator(model, splits.train_x[idx], splits.train_y[idx], hp, "linf", rng)
    return method


def _loss_gain(model, x, y, x_adv):
    with torch.no_grad():
        return F.cross_entropy(model(x_adv), y).item() - F.cross_entropy(model(x), y).item()


# Paired by seed: the same classifier, data order and seed for both generators, judged by the loss *gain* over clean
# on 200 test digits at eps 0.2. Measured (torch 2.14 CPU, seeds 0-2, the default last-step loss): recursive
# 5.21-5.24, one-step 4.57-4.61, the same recursive weights reading their first gradient at every step 4.72-4.74
# (with L2L-DA's summed loss: 5.20-5.23 and 4.76); the margins asserted (0.2) are under half the measured gaps
# (0.60-0.67 and 0.47-0.52).
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recursive_generator_with_fresh_gradients_beats_the_one_step_generator(digits_model, digits_splits, seed):
    eps = 0.2
    x, y = digits_splits.test_x[:200], digits_splits.test_y[:200]
    recursive = _fit(digits_model, digits_splits, "recursive", seed, eps)
    onestep = _fit(digits_model, digits_splits, "onestep", seed, eps)
    fresh = _unrolled(digits_model, recursive.gen, x, y, eps, 3).delta.detach()
    stale = _unrolled(digits_model, recursive.gen, x, y, eps, 3, fresh=False).delta.detach()
    with torch.no_grad():
        from metaadv.training.generator_methods import grad_sign

        sign = grad_sign(digits_model, x, y, eps, "linf", torch.Generator().manual_seed(seed))
        one = onestep.gen.perturb(x, eps, "linf", sign)
    gains = {name: _loss_gain(digits_model, x, y, x + d) for name, d in (("fresh", fresh), ("stale", stale), ("onestep", one))}
    assert gains["fresh"] > gains["onestep"] + 0.2, gains
    assert gains["fresh"] > gains["stale"] + 0.2, gains  # what the fresh reads add, with the same weights


def _trainer(digits_splits, **changes):
    config = TrainConfig.from_dict({"dataset": "digits", "method": "meta-generator", "batch_size": 32, "steps_per_round": 2,
                                    "gen_width": 8, **changes})
    return Trainer(config, digits_splits, torch.device("cpu"))


class _CountingModel(torch.nn.Module):
    """Counts examples through every backward pass of the classifier: a hook on its logits fires once per
    backward that reaches them (input-gradient reads, generator losses, the update), never for a forward alone."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.examples = inner, 0

    def forward(self, x):
        logits = self.inner(x)
        if logits.requires_grad:
            logits.register_hook(lambda g: self._count(len(g)))
        return logits

    def _count(self, n):
        self.examples += n


@pytest.mark.parametrize("hp, per_generator_example", [
    # recursive, K steps, summed loss: first read + (K - 1) reads + K loss terms; the first final step is free
    ({"gen_unroll": 1}, 1 + 0 + 1),
    ({"gen_unroll": 3}, 1 + 2 + 3),
    ({"gen_unroll": 4, "gen_final_steps": 3}, 1 + 3 + 4 + 2),
    ({"gen_unroll": 2, "gen_steps": 2}, 1 + 2 * (1 + 2)),
    ({"gen_unroll": 3, "gen_final_steps": 0}, 1 + 2 + 3),
])
def test_costs_are_counted_per_unroll_step_exactly(digits_splits, hp, per_generator_example):
    trainer = _trainer(digits_splits, gen_step_discount=1.0)  # every step's loss term (L2L-DA's sum)
    counter = _CountingModel(trainer.step_model)
    trainer.step_model = trainer.attack_model = counter  # the update's passes and the attacks' (one process: one model)
    # half the batch by the generator, half by PGD-2; one update pass
    trainer.train_round(HParams(eps=0.2, steps=2, gen_fraction=0.5, **hp))
    expected = 2 * (16 * per_generator_example + 16 * 2 + 32 * 1)
    assert trainer.grad_evals == expected
    assert counter.examples == expected  # what the classifier really did


@pytest.mark.parametrize("changes, per_example", [
    ({}, 1 + 2 + 1),  # the default, last step's loss only: K - 1 reads and one loss term
    ({"gen_step_discount": 0.5}, 1 + 2 + 3),  # every term weighted > 0: K of them
    ({"gen_noise": True, "gen_diversity": 0.5}, 1 + 2 * (2 + 1)),  # two noise draws per image, one first read
    ({"gen_arch": "noise"}, 1),  # a uniform point, then the final step's own read
    ({"gen_arch": "noise", "gen_final_steps": 0}, 0),
    ({"gen_arch": "onestep"}, 1 + 1),  # gradient sign + one generator step; the final step reuses its gradient
    ({"gen_arch": "onestep", "gen_final_steps": 2}, 1 + 1 + 1),
])
def test_cost_of_every_generator_variant_matches_the_classifier_passes(digits_splits, changes, per_example):
    trainer = _trainer(digits_splits, **changes)
    counter = _CountingModel(trainer.step_model)
    trainer.step_model = trainer.attack_model = counter  # the update's passes and the attacks' (one process: one model)
    trainer.train_round(trainer.config.hparams().replace(eps=0.2))
    expected = 2 * 32 * (per_example + 1)
    assert trainer.grad_evals == expected and counter.examples == expected
