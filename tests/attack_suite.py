"""The shared attack suite that every attack joins (CONVENTIONS habit 7; after optuna's
``optuna/testing/pytest_samplers.py``).

Each :class:`AttackCase` is one attack configuration: a callable
``attack(model, x, y, *, generator) -> x_adv`` with everything but the model, the data and the
random source already bound, the ``eps`` and ``norm`` of its threat model (``eps`` a float, or a
per-example tensor of shape ``(SUITE_BATCH,)``), and the objective the attack ascends
(``objective(model, x, y, x_adv) -> (B,)``: cross-entropy for FGSM/PGD, KL(p(x) || p(x_adv)) for
VAT). :class:`AttackSuite` asserts, for every case, on a briefly trained DigitsNet and a batch of
``SUITE_BATCH`` real 8x8 digits:

- the perturbation lies within ``eps`` (+1e-6) in the case's norm, per example;
- ``x_adv`` lies in [0, 1]; ``x`` itself is not modified;
- shape, dtype (float32 and float64) and device are kept;
- the model's train/eval flags are restored, module by module (train, eval and mixed);
- every forward pass during the attack runs in eval mode, and BatchNorm statistics stay put;
- parameter gradients: ``.grad`` stays ``None`` (or unchanged when it was set) and every
  ``requires_grad`` flag is restored;
- the returned tensor is detached (no ``grad_fn``, ``requires_grad`` False);
- the batch-mean objective on ``x_adv`` is not lower than on ``x``, and above the batch mean of
  the per-example best of 10 random perturbations of the full size ``eps`` (so an attack that
  does nothing, adds noise, or climbs the wrong objective fails; on the suite's model every
  attack here clears that baseline several times over);
- the same ``torch.Generator`` seed gives the same ``x_adv`` whatever the global RNG did in
  between, and (for randomised attacks) another seed gives another ``x_adv``.

How a new attack joins:

- an attack in ``metaadv.attacks``: append an :class:`AttackCase` to :data:`ATTACK_CASES` below
  (``tests/test_attacks.py`` runs the suite over that list);
- an attack tested elsewhere: subclass the suite in your own test module and override the
  ``attack_case`` fixture::

      class TestMyAttackSuite(AttackSuite):
          @pytest.fixture(params=[AttackCase("mine", my_attack_fn, eps=0.1, norm="linf",
                                             objective=cross_entropy_objective)],
                          ids=lambda c: c.name)
          def attack_case(self, request):
              return request.param

The suite's fixtures (``digits_model``, ``digits_splits``) live in ``tests/conftest.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaadv.attacks import fgsm, kl_to_target, pgd, vat

__all__ = ["ATTACK_CASES", "SUITE_BATCH", "AttackCase", "AttackSuite", "cross_entropy_objective", "kl_objective"]

SUITE_BATCH = 32
"""Examples per suite batch; a per-example ``eps`` tensor must have this length."""

Attack = Callable[..., torch.Tensor]
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of ``model`` on ``x_adv``: what FGSM and PGD ascend."""
    with torch.no_grad():
        return F.cross_entropy(model(x_adv), y, reduction="none")


def kl_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p(x) || p(x_adv)): what VAT ascends (labels unused)."""
    with torch.no_grad():
        return kl_to_target(model(x_adv), F.softmax(model(x), dim=1))


@dataclass(frozen=True)
class AttackCase:
    name: str
    attack: Attack  # attack(model, x, y, *, generator) -> x_adv
    eps: float | torch.Tensor  # pixel units; a tensor has shape (SUITE_BATCH,)
    norm: str  # "linf" | "l2"
    objective: Objective
    randomised: bool = True  # draws from the generator (False: deterministic by construction)

    def eps_per_example(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.eps, dtype=torch.float64).expand(x.shape[0]).to(x.device)


_PER_EXAMPLE_EPS = torch.linspace(0.0, 0.15, SUITE_BATCH)

ATTACK_CASES: list[AttackCase] = [
    AttackCase("fgsm", lambda m, x, y, *, generator: fgsm(m, x, y, eps=0.1, generator=generator),
               0.1, "linf", cross_entropy_objective, randomised=False),
    AttackCase("fgsm-random-start",
               lambda m, x, y, *, generator: fgsm(m, x, y, eps=0.1, step_size=0.125, random_init=True, generator=generator),
               0.1, "linf", cross_entropy_objective),
    AttackCase("pgd-linf",
               lambda m, x, y, *, generator: pgd(m, x, y, eps=0.1, step_size=0.025, steps=10, generator=generator),
               0.1, "linf", cross_entropy_objective),
    AttackCase("pgd-l2",
               lambda m, x, y, *, generator: pgd(m, x, y, eps=0.5, step_size=0.125, steps=10, norm="l2", generator=generator),
               0.5, "l2", cross_entropy_objective),
    AttackCase("pgd-restarts",
               lambda m, x, y, *, generator: pgd(m, x, y, eps=0.1, step_size=0.025, steps=5, restarts=3, generator=generator),
               0.1, "linf", cross_entropy_objective),
    AttackCase("pgd-per-example-eps",
               lambda m, x, y, *, generator: pgd(m, x, y, eps=_PER_EXAMPLE_EPS, step_size=_PER_EXAMPLE_EPS / 4, steps=10,
                                                 generator=generator),
               _PER_EXAMPLE_EPS, "linf", cross_entropy_objective),
    AttackCase("vat-l2", lambda m, x, y, *, generator: vat(m, x, eps=0.5, norm="l2", generator=generator),
               0.5, "l2", kl_objective),
    AttackCase("vat-linf", lambda m, x, y, *, generator: vat(m, x, eps=0.1, norm="linf", generator=generator),
               0.1, "linf", kl_objective),
]


_RANDOM_TRIES = 10


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _random_perturbation(x: torch.Tensor, eps: torch.Tensor, norm: str, seed: int) -> torch.Tensor:
    """``x`` moved a full ``eps`` in a random direction of the norm (sign noise / a random unit
    direction), clipped to [0, 1]: the baseline an attack has to beat."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    e = eps.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    if norm == "linf":
        delta = e * noise.sign()
    else:
        delta = e * noise / noise.flatten(1).norm(dim=1).view_as(e)
    return (x + delta).clamp(0.0, 1.0)


def _bn_model() -> nn.Module:
    """A tiny seeded classifier with BatchNorm and dropout: train-mode attacks would show."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 10),
    )


class AttackSuite:
    """Properties every attack must have. Subclass as ``Test...`` to run it (see module doc)."""

    @pytest.fixture(params=ATTACK_CASES, ids=lambda case: case.name)
    def attack_case(self, request) -> AttackCase:
        return request.param

    @pytest.fixture
    def batch(self, digits_splits) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = digits_splits.split("test")
        return x[:SUITE_BATCH].clone(), y[:SUITE_BATCH].clone()

    @staticmethod
    def run_attack(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.Tensor:
        return case.attack(model, x, y, generator=torch.Generator(device=x.device).manual_seed(seed))

    # ---- the threat model ----------------------------------------------------------------

    def test_perturbation_within_eps(self, attack_case, digits_model, batch):
        x, y = batch
        x_adv = self.run_attack(attack_case, digits_model, x, y)
        norms = _norms(x_adv.double() - x.double(), attack_case.norm)
        eps = attack_case.eps_per_example(x)
        assert (norms <= eps + 1e-6).all(), f"over eps by up to {(norms - eps).max().item():.3g}"
        # An attack that returns x unchanged would pass the bound; it must actually move.
        assert (norms > 0.5 * eps).any()

    def test_stays_in_valid_range_and_leaves_x_alone(self, attack_case, digits_model, batch):
        x, y = batch
        x_before = x.clone()
        x_adv = self.run_attack(attack_case, digits_model, x, y)
        assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
        assert torch.equal(x, x_before)

    @pytest.mark.parametrize(
        "dtype, device",
        [
            (torch.float32, "cpu"),
            (torch.float64, "cpu"),
            pytest.param(torch.float32, "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
        ],
    )
    def test_keeps_shape_dtype_device(self, attack_case, digits_model, batch, dtype, device):
        model = digits_model.to(device=device, dtype=dtype)
        x, y = batch[0].to(device=device, dtype=dtype), batch[1].to(device)
        x_adv = self.run_attack(attack_case, model, x, y)
        assert x_adv.shape == x.shape
        assert x_adv.dtype == dtype
        assert x_adv.device == x.device

    # ---- no trace left on the model ------------------------------------------------------

    @pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
    def test_restores_module_modes(self, attack_case, digits_model, batch, mode):
        model = digits_model.train(mode != "eval")
        if mode == "mixed":  # e.g. a frozen feature extractor inside a model being trained
            model.net[1].eval()
        before = [m.training for m in model.modules()]
        self.run_attack(attack_case, model, *batch)
        assert [m.training for m in model.modules()] == before

    def test_attacks_in_eval_mode_and_leaves_batchnorm_alone(self, attack_case, batch):
        model = _bn_model().train()
        model(batch[0])  # give BatchNorm non-trivial running statistics
        buffers = {k: v.clone() for k, v in model.state_dict().items()}
        modes_seen: list[bool] = []
        model.register_forward_pre_hook(lambda mod, inp: modes_seen.append(any(m.training for m in mod.modules())))
        self.run_attack(attack_case, model, *batch)
        assert modes_seen and not any(modes_seen), "the attack ran a forward pass in train mode"
        for k, v in model.state_dict().items():
            assert torch.equal(v, buffers[k]), f"{k} changed during the attack"

    def test_leaves_no_parameter_gradients(self, attack_case, digits_model, batch):
        model = digits_model.train()
        params = list(model.parameters())
        params[0].requires_grad_(False)  # a mix of flags, each of which must come back as it was
        flags = [p.requires_grad for p in params]
        self.run_attack(attack_case, model, *batch)
        assert all(p.grad is None for p in params)
        assert [p.requires_grad for p in params] == flags

    def test_keeps_existing_parameter_gradients(self, attack_case, digits_model, batch):
        """Gradients already accumulated by a training step are neither added to nor cleared."""
        x, y = batch
        F.cross_entropy(digits_model(x), y).backward()
        grads = [p.grad.clone() for p in digits_model.parameters()]
        self.run_attack(attack_case, digits_model, x, y)
        for p, g in zip(digits_model.parameters(), grads):
            assert p.grad is not None and torch.equal(p.grad, g)

    def test_returns_detached_tensor(self, attack_case, digits_model, batch):
        x, y = batch
        x_adv = self.run_attack(attack_case, digits_model, x.clone().requires_grad_(True), y)
        assert x_adv.grad_fn is None
        assert not x_adv.requires_grad

    # ---- it is an attack -----------------------------------------------------------------

    def test_objective_not_lower_than_clean(self, attack_case, digits_model, batch):
        x, y = batch
        x_adv = self.run_attack(attack_case, digits_model, x, y)
        clean = attack_case.objective(digits_model, x, y, x).mean()
        adv = attack_case.objective(digits_model, x, y, x_adv).mean()
        assert adv >= clean, f"objective fell from {clean:.4f} to {adv:.4f}"

    def test_objective_beats_random_perturbation(self, attack_case, digits_model, batch):
        x, y = batch
        x_adv = self.run_attack(attack_case, digits_model, x, y)
        eps = attack_case.eps_per_example(x)
        rand = torch.stack([
            attack_case.objective(digits_model, x, y, _random_perturbation(x, eps, attack_case.norm, seed=k))
            for k in range(1, 1 + _RANDOM_TRIES)
        ]).amax(dim=0).mean()
        adv = attack_case.objective(digits_model, x, y, x_adv).mean()
        assert adv > rand, f"attack objective {adv:.4f} not above the best of {_RANDOM_TRIES} random perturbations {rand:.4f}"

    def test_deterministic_given_generator_seed(self, attack_case, digits_model, batch):
        x, y = batch
        first = self.run_attack(attack_case, digits_model, x, y, seed=123)
        torch.rand(1000)  # move the global RNG: only the generator may decide the result
        second = self.run_attack(attack_case, copy.deepcopy(digits_model), x, y, seed=123)
        assert torch.equal(first, second)
        if attack_case.randomised:
            other = self.run_attack(attack_case, digits_model, x, y, seed=124)
            assert not torch.equal(first, other), "the generator seed has no effect"
