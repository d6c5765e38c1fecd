"""One task's contribution to a meta-update, for each method.

``step(model, task, hp, ctx) -> TaskOutput``. MAML, first-order MAML, ADML and AQ return a
differentiable outer ``loss`` whose gradient w.r.t. the module's parameters (theta) is the
task's meta-gradient; Reptile returns that meta-gradient directly (``meta_grad``), since it is not
the gradient of any loss. The learner averages over the meta-batch and takes an Adam step.

- MAML (Finn et al. 2017, arXiv:1703.03400): ``L(theta'(S), Q)`` with
  ``theta'(S) = theta - alpha grad L(theta, S)``, differentiated through the inner steps.
- First-order MAML (same paper, section 5.2): the inner gradients are treated as constants.
- Reptile (Nichol et al. 2018, arXiv:1803.02999): adapt on the task's data to phi, meta-gradient
  ``theta - phi``. The inner loop runs on support and query together: at meta-training time both
  are labelled data of the task, and Reptile has no support/query distinction.
- ADML (Yin et al. 2018, arXiv:1806.03316): adversarial support and query made against theta;
  ``beta1 L(theta'_clean, Q_adv) + beta2 L(theta'_adv, Q_clean)``, crossing clean and
  adversarial adaptation and evaluation. With beta1 + beta2 = 1 and eps = 0 it is MAML's loss.
- Adversarial Querying, AQ (Goldblum, Fowl, Goldstein, NeurIPS 2020, arXiv:1910.00982,
  Algorithm 1): adapt on the clean support, attack the query set against the *adapted* model,
  and take MAML's outer loss ``L(theta'(S), Q_adv)`` on the attacked queries. The attack is a
  constant of the outer gradient (Danskin, as in adversarial training); the paper attacks with
  PGD, so ``--method aq`` defaults to ``attack: pgd``. With eps = 0 it is MAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..attacks import fgsm, pgd
from .config import MetaHParams
from .inner import FunctionalModel, adapt, forward, meta_parameters
from .tasks import Task

__all__ = ["METHOD_STEPS", "MetaContext", "TaskOutput", "make_adversarial"]


@dataclass
class MetaContext:
    first_order: bool = False
    attack: str = "fgsm"  # ADML's training attack
    attack_steps: int = 10
    step_ratio: float = 0.25
    norm: str = "linf"
    generator: torch.Generator | None = None  # PGD random starts


@dataclass
class TaskOutput:
    loss: torch.Tensor  # scalar; differentiable w.r.t. theta unless meta_grad is given
    correct: float  # fraction of the outer examples classified correctly
    passes: int  # forward+backward passes summed over examples (attacks and inner steps included)
    meta_grad: dict[str, torch.Tensor] | None = None


def make_adversarial(model, x: torch.Tensor, y: torch.Tensor, eps: float, ctx: MetaContext) -> tuple[torch.Tensor, int]:
    """FGSM (or PGD) examples against ``model`` as it is now; returns (x_adv, passes per example).

    ADML passes the meta-model (theta), AQ a :class:`FunctionalModel` of the adapted parameters.
    """
    if eps == 0:
        return x, 0
    if ctx.attack == "pgd":
        x_adv = pgd(model, x, y, eps=eps, step_size=ctx.step_ratio * eps, steps=ctx.attack_steps, norm=ctx.norm,
                    generator=ctx.generator)
        return x_adv, ctx.attack_steps
    return fgsm(model, x, y, eps=eps, norm=ctx.norm), 1


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.detach().argmax(1) == y).float().mean().item()


def maml_step(model, task: Task, hp: MetaHParams, ctx: MetaContext) -> TaskOutput:
    """MAML, or first-order MAML when ``ctx.first_order``."""
    adapted = adapt(model, meta_parameters(model), task.xs, task.ys, steps=hp.inner_steps, lr=hp.inner_lr,
                    first_order=ctx.first_order)
    logits = forward(model, adapted, task.xq)
    passes = hp.inner_steps * len(task.ys) + len(task.yq)
    return TaskOutput(F.cross_entropy(logits, task.yq), _accuracy(logits, task.yq), passes)


def reptile_step(model, task: Task, hp: MetaHParams, ctx: MetaContext) -> TaskOutput:
    """Reptile: ``theta - phi`` after ``inner_steps`` SGD steps on the task's support + query."""
    theta = meta_parameters(model)
    x, y = torch.cat([task.xs, task.xq]), torch.cat([task.ys, task.yq])
    phi = adapt(model, {k: p.detach() for k, p in theta.items()}, x, y, steps=hp.inner_steps, lr=hp.inner_lr)
    with torch.no_grad():  # forward only, for the row: not counted as a gradient evaluation
        logits = forward(model, phi, x)
        loss = F.cross_entropy(logits, y)
    meta_grad = {k: theta[k].detach() - phi[k] for k in theta}
    return TaskOutput(loss, _accuracy(logits, y), hp.inner_steps * len(y), meta_grad)


def adml_step(model, task: Task, hp: MetaHParams, ctx: MetaContext) -> TaskOutput:
    """ADML: crossed clean/adversarial adaptation and evaluation, weighted by beta1 and beta2."""
    xs_adv, attack_passes = make_adversarial(model, task.xs, task.ys, hp.eps, ctx)
    xq_adv, _ = make_adversarial(model, task.xq, task.yq, hp.eps, ctx)
    theta = meta_parameters(model)
    kw = dict(steps=hp.inner_steps, lr=hp.inner_lr, first_order=ctx.first_order)
    theta_clean = adapt(model, theta, task.xs, task.ys, **kw)
    theta_adv = adapt(model, theta, xs_adv, task.ys, **kw)
    logits_1 = forward(model, theta_clean, xq_adv)
    logits_2 = forward(model, theta_adv, task.xq)
    loss = hp.beta1 * F.cross_entropy(logits_1, task.yq) + hp.beta2 * F.cross_entropy(logits_2, task.yq)
    correct = (_accuracy(logits_1, task.yq) + _accuracy(logits_2, task.yq)) / 2
    n_s, n_q = len(task.ys), len(task.yq)
    passes = attack_passes * (n_s + n_q) + 2 * hp.inner_steps * n_s + 2 * n_q
    return TaskOutput(loss, correct, passes)


def aq_step(model, task: Task, hp: MetaHParams, ctx: MetaContext) -> TaskOutput:
    """Adversarial Querying: MAML's outer loss on queries attacked against the adapted model."""
    adapted = adapt(model, meta_parameters(model), task.xs, task.ys, steps=hp.inner_steps, lr=hp.inner_lr,
                    first_order=ctx.first_order)
    # The attacker sees theta'(S) as numbers: detached, so the attack adds nothing to the meta-graph.
    learner = FunctionalModel(model, {k: p.detach() for k, p in adapted.items()})
    xq_adv, attack_passes = make_adversarial(learner, task.xq, task.yq, hp.eps, ctx)
    logits = forward(model, adapted, xq_adv)
    n_s, n_q = len(task.ys), len(task.yq)
    passes = hp.inner_steps * n_s + attack_passes * n_q + n_q
    return TaskOutput(F.cross_entropy(logits, task.yq), _accuracy(logits, task.yq), passes)


METHOD_STEPS: dict[str, Callable[..., TaskOutput]] = {
    "maml": maml_step,
    "fomaml": maml_step,  # with ctx.first_order = True (the config forces it)
    "reptile": reptile_step,
    "adml": adml_step,
    "aq": aq_step,
}
