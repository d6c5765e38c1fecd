"""One training step of each method, as a function of (model, batch, hyperparameters).

``step(model, x, y, hp, ctx) -> StepOutput``: the loss to minimise, the logits on the examples
trained against (for ``train/adv_acc``) and the forward+backward passes spent per example, attack
steps included. The trainer does the backward pass and the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..attacks import fgsm, frozen_eval, kl_to_target, pgd, vat
from .hparams import HParams

__all__ = ["METHOD_STEPS", "StepContext", "StepOutput"]


@dataclass
class StepContext:
    norm: str
    generator: torch.Generator
    labeled: torch.Tensor | None = None  # VAT semi-supervised: which examples of the batch keep their label
    vat_xi: float = 1e-6
    vat_weight: float = 1.0


@dataclass
class StepOutput:
    loss: torch.Tensor
    adv_logits: torch.Tensor
    passes: int  # forward+backward passes per example (forward-only passes are not counted)


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


def pgd_at_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Madry et al. 2018: train on PGD examples from a random start."""
    attack_passes = 0
    x_adv = x
    if hp.eps > 0:
        x_adv = pgd(model, x, y, eps=hp.eps, step_size=hp.step_size, steps=hp.steps, norm=ctx.norm, generator=ctx.generator)
        attack_passes = hp.steps
    loss, logits_adv, passes = _mixed_loss(model, x, x_adv, y, hp.adv_mix)
    return StepOutput(loss, logits_adv, attack_passes + passes)


def fast_at_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Wong et al. 2020 ("Fast is better than free"): FGSM from a random start, step ~1.25 eps."""
    x_adv, attack_passes = x, 0
    if hp.eps > 0:
        x_adv = fgsm(model, x, y, eps=hp.eps, step_size=hp.step_size, norm=ctx.norm, random_init=True, generator=ctx.generator)
        attack_passes = 1
    loss, logits_adv, passes = _mixed_loss(model, x, x_adv, y, hp.adv_mix)
    return StepOutput(loss, logits_adv, attack_passes + passes)


def trades_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Zhang et al. 2019 (arXiv:1901.08573): CE(f(x), y) + beta * KL(f(x) || f(x_adv)).

    x_adv maximises the KL to the clean prediction (computed in eval mode, like the attack).
    """
    x_adv, attack_passes = x, 0
    if hp.eps > 0:
        with frozen_eval(model), torch.no_grad():
            target = F.softmax(model(x), dim=1)
        x_adv = pgd(model, x, target, eps=hp.eps, step_size=hp.step_size, steps=hp.steps, norm=ctx.norm,
                    loss_fn=kl_to_target, generator=ctx.generator)
        attack_passes = hp.steps
    logits_clean, logits_adv = model(torch.cat([x, x_adv])).chunk(2)
    robust = kl_to_target(logits_adv, F.softmax(logits_clean, dim=1)).mean()
    loss = F.cross_entropy(logits_clean, y) + hp.trades_beta * robust
    return StepOutput(loss, logits_adv, attack_passes + 2)


def vat_step(model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
    """Miyato et al. 2018: CE on labelled examples + vat_weight * KL(p(x) || p(x + r_vadv)) on all."""
    x_adv, attack_passes = x, 0
    if hp.eps > 0:
        x_adv = vat(model, x, eps=hp.eps, xi=ctx.vat_xi, iterations=hp.steps, norm=ctx.norm, generator=ctx.generator)
        attack_passes = hp.steps
    logits_clean, logits_adv = model(torch.cat([x, x_adv])).chunk(2)
    labeled = ctx.labeled if ctx.labeled is not None else torch.ones_like(y, dtype=torch.bool)
    ce = F.cross_entropy(logits_clean[labeled], y[labeled]) if labeled.any() else logits_clean.sum() * 0.0
    lds = kl_to_target(logits_adv, F.softmax(logits_clean, dim=1).detach()).mean()
    return StepOutput(ce + ctx.vat_weight * lds, logits_adv, attack_passes + 2)


METHOD_STEPS: dict[str, Callable[..., StepOutput]] = {
    "standard": standard_step,
    "pgd-at": pgd_at_step,
    "fast-at": fast_at_step,
    "trades": trades_step,
    "vat": vat_step,
}
