"""Few-shot accuracy, clean and under attack, with 95% confidence intervals over tasks.

For each task the meta-learned parameters are adapted on the support set, then the queries are
classified clean and after PGD against the *adapted* model (a :class:`FunctionalModel` holding the
adapted parameters is what :func:`metaadv.attacks.pgd` attacks). The support set is clean by
default: the usual threat model in which the attacker perturbs test inputs, not the few labelled
examples the learner adapts on (as in Yin et al. 2018, arXiv:1806.03316). ``attack_support=True``
also perturbs the support set, with the same PGD against the meta-parameters before adaptation
(the attacker cannot see the adapted model before it exists).

Robust accuracy is the per-example worst case over no attack and PGD. Accuracies are averaged over
tasks and reported with ``1.96 * std / sqrt(n)`` (population std over tasks), as few-shot papers
report them (Finn et al. 2017; Snell et al. 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..attacks import pgd
from .inner import FunctionalModel, adapt, meta_parameters
from .tasks import Task

__all__ = ["FewShotResult", "evaluate_task", "evaluate_tasks", "mean_ci95"]


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the normal 95% interval of the mean)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, 1.96 * std / math.sqrt(n)


@dataclass
class FewShotResult:
    clean: list[float] = field(default_factory=list)  # per-task query accuracy
    robust: list[float] = field(default_factory=list)
    passes: int = 0  # forward+backward passes summed over examples (adaptation and attacks)

    def summary(self) -> dict[str, float]:
        clean, clean_ci = mean_ci95(self.clean)
        robust, robust_ci = mean_ci95(self.robust)
        return {"clean_acc": clean, "clean_ci95": clean_ci, "robust_acc": robust, "robust_ci95": robust_ci,
                "tasks": len(self.clean)}


def _attack(model, x, y, eps: float, steps: int, norm: str, generator) -> torch.Tensor:
    # Madry's rule of thumb, as in the trainers' validation: 2.5 eps spread over the steps.
    return pgd(model, x, y, eps=eps, step_size=2.5 * eps / steps, steps=steps, norm=norm, generator=generator)


def evaluate_task(model, task: Task, *, inner_steps: int, inner_lr: float, eps: float, pgd_steps: int,
                  norm: str = "linf", generator: torch.Generator | None = None,
                  attack_support: bool = False) -> tuple[float, float, int]:
    """Adapt on ``task``'s support, measure its queries; returns (clean acc, robust acc, passes)."""
    theta = {k: p.detach() for k, p in meta_parameters(model).items()}
    xs, passes = task.xs, 0
    if attack_support and eps > 0:
        xs = _attack(model, xs, task.ys, eps, pgd_steps, norm, generator)
        passes += pgd_steps * len(task.ys)
    adapted = adapt(model, theta, xs, task.ys, steps=inner_steps, lr=inner_lr)
    passes += inner_steps * len(task.ys)
    learner = FunctionalModel(model, adapted).eval()
    with torch.no_grad():
        clean_ok = learner(task.xq).argmax(1) == task.yq
    robust_ok = clean_ok
    if eps > 0:
        x_adv = _attack(learner, task.xq, task.yq, eps, pgd_steps, norm, generator)
        passes += pgd_steps * len(task.yq)
        with torch.no_grad():
            robust_ok = clean_ok & (learner(x_adv).argmax(1) == task.yq)
    return clean_ok.float().mean().item(), robust_ok.float().mean().item(), passes


def evaluate_tasks(model, tasks: Iterable[Task], *, device: torch.device | str = "cpu", seed: int = 0,
                   **kwargs) -> FewShotResult:
    """:func:`evaluate_task` over ``tasks`` (moved to ``device``); PGD starts seeded by ``seed``."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    result = FewShotResult()
    try:
        for task in tasks:
            clean, robust, passes = evaluate_task(model, task.to(device), generator=g, **kwargs)
            result.clean.append(clean)
            result.robust.append(robust)
            result.passes += passes
    finally:
        model.train(was_training)
    return result
