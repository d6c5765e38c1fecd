"""One training step of each method, as a function of (model, batch, hyperparameters).

``step(model, x, y, hp, ctx) -> StepOutput``: the loss to minimise, the logits on the examples
trained against (for ``train/adv_acc``) and the forward+backward passes spent per example, attack
steps included. The trainer does the backward pass and the optimizer step.

Methods with learnable state of their own (a perturbation generator and its optimizer) implement
the :class:`Method` protocol and join with :func:`register_method`; the trainer checkpoints their
state and adds their ``round_metrics()`` to the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from ..attacks import fgsm, frozen_eval, kl_to_target, pgd, pgd_per_example_steps, vat
from .hparams import HParams
from .parallel import SINGLE_PROCESS, DataParallel

__all__ = ["METHOD_DEFAULTS", "METHOD_STEPS", "METHODS", "PLANNED_METHODS", "AttackPlan", "Method", "StepContext", "StepOutput", "attacker", "build_method",
           "register_method"]


@dataclass(frozen=True)
class AttackPlan:
    """Each example's own attack (a per-example strategy, ``--controller las``): eps and step size in
    pixel units and PGD steps, tensors of shape ``(B,)``; they replace the round's eps, step_ratio and steps."""

    eps: torch.Tensor
    step_size: torch.Tensor
    steps: torch.Tensor  # integer

    def passes(self) -> float:
        """Attack passes per example, a mean: ``passes * B`` is the exact sum of the examples' steps."""
        return float(self.steps.sum().item()) / len(self.steps)


@dataclass
class StepContext:
    norm: str
    generator: torch.Generator
    labeled: torch.Tensor | None = None  # VAT semi-supervised: which examples of the batch keep their label
    vat_xi: float = 1e-2
    vat_weight: float = 1.0
    # Data parallelism (metaadv/training/parallel.py). Attacks run through ``attack_model`` (the
    # classifier itself) while the loss goes through ``model`` (DDP's wrapper, with several
    # workers). Methods with a learner of their own (a generator) scale its per-example mean loss
    # by ``loss_weight`` and average its gradients with ``parallel``, as DDP does the classifier's.
    attack_model: torch.nn.Module | None = None  # None: the step's model
    parallel: "DataParallel" = SINGLE_PROCESS
    loss_weight: float = 1.0
    plan: AttackPlan | None = None  # per-example attacks (PLANNED_METHODS only); None: the round's hp
    pgd_start: str = "random"  # pgd-at's attack start (config pgd_start): a uniform point of the ball, or "zero": x


def attacker(model, ctx: StepContext):
    """The module an attack (or a frozen-classifier pass) should run through."""
    return model if ctx.attack_model is None else ctx.attack_model


@dataclass
class StepOutput:
    loss: torch.Tensor
    adv_logits: torch.Tensor
    passes: float  # forward+backward passes per example (forward-only passes are not counted); a mean when
    # parts of the batch are attacked differently (meta-generator's gen_fraction), so passes * B is exact


def _mixed_loss(model, x, x_adv, y, adv_mix: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(1 - adv_mix) * CE(clean) + adv_mix * CE(adversarial); one pass per loss term used."""
    if adv_mix >= 1.0:
        logits_adv = model(x_adv)
        return F.cross_entropy(logits_adv, y), logits_adv, 1
    logits = model(torch.cat([x, x_adv]))
    logits_clean, logits_adv = logits.chunk(2)
    loss = (1 - adv_mix) * F.cross_entropy(logits_clean, y) + adv_mix * F.cross_entropy(logits_adv, y)
    return loss, logits_adv, 2


def standard_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    logits = model(x)
    return StepOutput(F.cross_entropy(logits, y), logits, 1)


def _pgd_attack(model, x, target, hp: HParams, ctx: StepContext, **kw) -> tuple[torch.Tensor, float]:
    """PGD with the round's eps, step size and steps, or with ``ctx.plan``'s per-example ones;
    returns (x_adv, attack passes per example)."""
    if ctx.plan is not None:
        p = ctx.plan
        x_adv = pgd_per_example_steps(attacker(model, ctx), x, target, eps=p.eps, step_size=p.step_size, steps=p.steps,
                                      norm=ctx.norm, generator=ctx.generator, **kw)
        return x_adv, p.passes()
    if hp.eps == 0:
        return x, 0
    x_adv = pgd(attacker(model, ctx), x, target, eps=hp.eps, step_size=hp.step_size, steps=hp.steps, norm=ctx.norm,
                generator=ctx.generator, **kw)
    return x_adv, hp.steps


def pgd_at_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Madry et al. 2018: train on PGD examples from a random start (``ctx.pgd_start="zero"``: from x
    itself, as the generators start, so a comparison with them is not one of starts)."""
    x_adv, attack_passes = _pgd_attack(model, x, y, hp, ctx, random_init=ctx.pgd_start == "random")
    loss, logits_adv, passes = _mixed_loss(model, x, x_adv, y, hp.adv_mix)
    return StepOutput(loss, logits_adv, attack_passes + passes)


def fast_at_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Wong et al. 2020 ("Fast is better than free"): FGSM from a random start, step ~1.25 eps."""
    x_adv, attack_passes = x, 0
    if hp.eps > 0:
        x_adv = fgsm(attacker(model, ctx), x, y, eps=hp.eps, step_size=hp.step_size, norm=ctx.norm, random_init=True,
                     generator=ctx.generator)
        attack_passes = 1
    loss, logits_adv, passes = _mixed_loss(model, x, x_adv, y, hp.adv_mix)
    return StepOutput(loss, logits_adv, attack_passes + passes)


TRADES_INIT_STD = 0.001  # the attack's start: x + 0.001 N(0, 1), as in the paper's code


def trades_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Zhang et al. 2019 (arXiv:1901.08573): CE(f(x), y) + beta * KL(f(x) || f(x_adv)).

    x_adv maximises the KL to the clean prediction (computed in eval mode, like the attack),
    starting from x + 0.001 N(0, 1). Clean and adversarial examples go through the model in two
    passes, clean first, as in the paper's code: one concatenated batch would give BatchNorm
    statistics of the mixture, in training and in its running averages.
    """
    x_adv, attack_passes = x, 0
    if hp.eps > 0 or ctx.plan is not None:
        frozen = attacker(model, ctx)
        with frozen_eval(frozen), torch.no_grad():
            target = F.softmax(frozen(x), dim=1)
        x_adv, attack_passes = _pgd_attack(model, x, target, hp, ctx, init_std=TRADES_INIT_STD, loss_fn=kl_to_target)
    logits_clean = model(x)
    logits_adv = model(x_adv)
    robust = kl_to_target(logits_adv, F.softmax(logits_clean, dim=1)).mean()
    loss = F.cross_entropy(logits_clean, y) + hp.trades_beta * robust
    return StepOutput(loss, logits_adv, attack_passes + 2)


def vat_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Miyato et al. 2018: CE on labelled examples + vat_weight * KL(p(x) || p(x + r_vadv)) on all."""
    x_adv, attack_passes = x, 0
    if hp.eps > 0:
        x_adv = vat(attacker(model, ctx), x, eps=hp.eps, xi=ctx.vat_xi, iterations=hp.steps, norm=ctx.norm, generator=ctx.generator)
        attack_passes = hp.steps
    logits_clean, logits_adv = model(torch.cat([x, x_adv])).chunk(2)
    labeled = ctx.labeled if ctx.labeled is not None else torch.ones_like(y, dtype=torch.bool)
    ce = F.cross_entropy(logits_clean[labeled], y[labeled]) if labeled.any() else logits_clean.sum() * 0.0
    lds = kl_to_target(logits_adv, F.softmax(logits_clean, dim=1).detach()).mean()
    return StepOutput(ce + ctx.vat_weight * lds, logits_adv, attack_passes + 2)


# The methods whose attack a per-example strategy may plan (``StepContext.plan``).
PLANNED_METHODS = ("pgd-at", "trades")

METHOD_STEPS: dict[str, Callable[..., StepOutput]] = {
    "standard": standard_step,
    "pgd-at": pgd_at_step,
    "fast-at": fast_at_step,
    "trades": trades_step,
    "vat": vat_step,
}


class Method(Protocol):
    def step(self, model, x, y, hp: HParams, ctx: StepContext) -> StepOutput: ...

    def round_metrics(self) -> dict[str, float]:
        """Extra row columns for the round just trained (e.g. ``gen/loss``); resets the tally."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class StatelessMethod:
    """A plain step function as a :class:`Method`: no state, no extra columns."""

    def __init__(self, fn: Callable[..., StepOutput]):
        self.step = fn

    def round_metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# name -> factory(config, dataset_info, device) -> Method
_FACTORIES: dict[str, Callable] = {name: (lambda c, i, d, fn=fn: StatelessMethod(fn)) for name, fn in METHOD_STEPS.items()}
METHODS: list[str] = list(_FACTORIES)  # the registry's names, in registration order

# Config defaults that differ by method; anything given explicitly wins.
METHOD_DEFAULTS: dict[str, dict] = {
    "standard": {"eps_ramp_rounds": 0},
    "pgd-at": {"steps": 10, "step_ratio": 0.25},
    # Wong et al. 2020: FGSM, random start, alpha = 1.25 eps, with their early stop on a PGD check (co_guard).
    "fast-at": {"steps": 1, "step_ratio": 1.25, "co_guard": True},
    "trades": {"steps": 10, "step_ratio": 0.25, "trades_beta": 6.0},
    "vat": {"steps": 1},  # one power iteration, as in Miyato et al.
}


def register_method(name: str, factory: Callable, defaults: dict | None = None) -> None:
    """Add a training method: ``factory(config, dataset_info, device) -> Method``."""
    _FACTORIES[name] = factory
    if name not in METHODS:
        METHODS.append(name)
    METHOD_DEFAULTS[name] = dict(defaults or {})


def build_method(config, info, device) -> Method:
    return _FACTORIES[config.method](config, info, device)
