"""Few-shot accuracy, clean and under attack, over an eps sweep, with 95% confidence intervals over tasks.

For each task the meta-learned parameters are adapted on the support set, then the queries are
classified clean and after PGD (``pgd_restarts`` random starts, step ``2.5 eps / steps``) against
the *adapted* model (a :class:`FunctionalModel` holding the adapted parameters is what
:func:`metaadv.attacks.pgd` attacks).

The support set is clean by default: the usual threat model in which the attacker perturbs test
inputs, not the few labelled examples the learner adapts on (as in Yin et al. 2018,
arXiv:1806.03316). ``support_attack`` also lets the attacker perturb the support set within the
same eps (:mod:`.support_attacks`): ``theta`` (PGD against the meta-parameters before adaptation)
or ``unrolled`` (PGD through the inner loop, adaptive). The queries are then attacked against
the model adapted on the attacked support.

Robust accuracy is the per-example worst case over every attack run at that eps *or a smaller
one in the sweep* (an attack within a smaller ball is within the larger one too), and over no
attack: a query counts as robust only if the clean-support model classifies it correctly clean
and under PGD, and, with a support attack, the attacked-support model does too, clean and under
PGD. So the sweep is non-increasing in eps, and an attacked support never reads as more robust
than a clean one. (Queries are classified independently given the adapted parameters; with
transductive BatchNorm, ``--arch preact-resnet18``, a query batch shares its statistics, so
there the per-query worst case is an approximation.)

``autoattack_eps``: at that one eps, the reference AutoAttack's APGD-CE, APGD-DLR (ways >= 3) and
APGD-T with ways - 1 target classes (ways >= 4) also attack the queries left robust, against the
same adapted models; ``aa_robust`` is the worst case over PGD and AutoAttack (Croce and Hein 2020,
arXiv:2003.01690). Its passes are not counted in ``passes``.

Accuracies are averaged over tasks and reported with ``1.96 * std / sqrt(n)`` (population std
over tasks), as few-shot papers report them (Finn et al. 2017; Snell et al. 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from ..attacks import pgd
from .inner import FunctionalModel, adapt, meta_parameters
from .support_attacks import SUPPORT_ATTACKS, attack_support
from .tasks import Task

__all__ = ["FEW_SHOT_AA", "FewShotResult", "SUPPORT_ATTACKS", "TaskScores", "evaluate_task", "evaluate_tasks",
           "few_shot_aa_components", "mean_ci95"]

FEW_SHOT_AA = ("apgd-ce", "apgd-dlr", "apgd-t")  # the custom set a few-way task allows (see module doc)
_AA_MIN_WAYS = {"apgd-dlr": 3, "apgd-t": 4}  # DLR reads the 3 (targeted: 4) largest logits


def few_shot_aa_components(ways: int) -> list[str]:
    """The AutoAttack components run on a ``ways``-way task."""
    return [c for c in FEW_SHOT_AA if ways >= _AA_MIN_WAYS.get(c, 2)]


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the normal 95% interval of the mean)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, 1.96 * std / math.sqrt(n)


@dataclass
class TaskScores:
    clean: float  # query accuracy, clean support and clean queries
    robust: dict[float, float]  # eps -> query accuracy under the worst case of the attacks up to eps
    passes: int  # forward+backward passes summed over examples (adaptation and PGD, each PGD at its full
    # budget on the queries it attacks: at most what it ran; not AutoAttack)
    aa_robust: float | None = None  # at autoattack_eps: worst case over PGD and AutoAttack


@dataclass
class FewShotResult:
    eps: tuple[float, ...] = ()  # ascending
    clean: list[float] = field(default_factory=list)  # per-task query accuracy
    robust_by_eps: dict[float, list[float]] = field(default_factory=dict)
    aa_robust: list[float] = field(default_factory=list)
    passes: int = 0  # forward+backward passes summed over examples (adaptation and attacks)

    @property
    def robust(self) -> list[float]:
        """Per-task robust accuracy at the largest eps (the only one outside a sweep)."""
        return self.robust_by_eps[self.eps[-1]] if self.eps else []

    def add(self, scores: TaskScores) -> None:
        self.clean.append(scores.clean)
        for e, acc in scores.robust.items():
            self.robust_by_eps.setdefault(e, []).append(acc)
        if scores.aa_robust is not None:
            self.aa_robust.append(scores.aa_robust)
        self.passes += scores.passes

    def summary(self) -> dict[str, float]:
        clean, clean_ci = mean_ci95(self.clean)
        robust, robust_ci = mean_ci95(self.robust)
        return {"clean_acc": clean, "clean_ci95": clean_ci, "robust_acc": robust, "robust_ci95": robust_ci,
                "tasks": len(self.clean)}

    def sweep(self) -> list[dict[str, float]]:
        """One ``{"eps", "robust_acc", "robust_ci95"}`` per eps, ascending."""
        return [dict(zip(("eps", "robust_acc", "robust_ci95"), (e, *mean_ci95(self.robust_by_eps[e]))))
                for e in self.eps]


def _attack(model, x, y, eps: float, steps: int, norm: str, generator, restarts: int = 1) -> torch.Tensor:
    # Madry's rule of thumb, as in the trainers' validation: 2.5 eps spread over the steps. Any
    # iterate that fools counts (as in metaadv.evaluation.robust), and a fooled query stops costing.
    return pgd(model, x, y, eps=eps, step_size=2.5 * eps / steps, steps=steps, norm=norm, restarts=restarts,
               generator=generator, any_iterate=True)


def _correct(learner, x, y) -> torch.Tensor:
    with torch.no_grad():
        return learner(x).argmax(1) == y


def _autoattack_survivors(learner, x, y, ok: torch.Tensor, *, eps: float, norm: str, ways: int, seed: int):
    """``ok`` with the queries AutoAttack's few-shot set breaks (against ``learner``) set to False."""
    from ..evaluation.autoattack import ReferenceAutoAttack
    from ..evaluation.checks import keep_in_threat_model

    if not ok.any():
        return ok
    ref = ReferenceAutoAttack(learner, eps=eps, norm=norm, version="fast", seed=seed, num_classes=ways,
                              device=x.device, components=FEW_SHOT_AA)
    ok = ok.clone()
    for name in ref.components:
        idx = ok.nonzero().flatten()
        if not len(idx):
            break
        x_adv = keep_in_threat_model(x[idx], ref.run(name, x[idx], y[idx]), eps, norm, name)
        ok[idx] = _correct(learner, x_adv, y[idx])
    return ok


def evaluate_task(model, task: Task, *, inner_steps: int, inner_lr: float, eps: float | Sequence[float],
                  pgd_steps: int, norm: str = "linf", generator: torch.Generator | None = None,
                  support_attack: str = "none", pgd_restarts: int = 1, autoattack_eps: float | None = None,
                  aa_seed: int = 0) -> TaskScores:
    """Adapt on ``task``'s support, measure its queries clean and at every eps in ``eps``."""
    if support_attack not in SUPPORT_ATTACKS:
        raise ValueError(f"unknown support attack {support_attack!r}; choose one of {', '.join(SUPPORT_ATTACKS)}")
    eps_list = sorted({float(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)})
    theta = {k: p.detach() for k, p in meta_parameters(model).items()}
    n_s = len(task.ys)
    kw = dict(steps=inner_steps, lr=inner_lr)
    clean_learner = FunctionalModel(model, adapt(model, theta, task.xs, task.ys, **kw)).eval()
    passes = inner_steps * n_s
    ok = _correct(clean_learner, task.xq, task.yq)
    clean = ok.float().mean().item()
    robust, aa_robust = {}, None
    for e in eps_list:
        learners = [clean_learner]
        if e > 0 and support_attack != "none":
            xs, spent = attack_support(support_attack, model, theta, task, eps=e, steps=pgd_steps, norm=norm,
                                       inner_steps=inner_steps, inner_lr=inner_lr, generator=generator)
            learners.append(FunctionalModel(model, adapt(model, theta, xs, task.ys, **kw)).eval())
            passes += spent + inner_steps * n_s
            ok &= _correct(learners[-1], task.xq, task.yq)
        for learner in learners if e > 0 else ():
            # A query fooled at a smaller eps (or by another learner) is already counted as broken:
            # the ball grows with eps, so only the survivors are attacked.
            idx = ok.nonzero().flatten()
            if not len(idx):
                break
            x_adv = _attack(learner, task.xq[idx], task.yq[idx], e, pgd_steps, norm, generator, pgd_restarts)
            passes += pgd_steps * pgd_restarts * len(idx)  # at most: fooled queries stop early
            ok[idx] = _correct(learner, x_adv, task.yq[idx])
        robust[e] = ok.float().mean().item()
        if autoattack_eps is not None and e == autoattack_eps:
            aa_ok = ok
            for learner in learners:
                aa_ok = _autoattack_survivors(learner, task.xq, task.yq, aa_ok, eps=e, norm=norm,
                                              ways=int(task.ys.max()) + 1, seed=aa_seed)
            aa_robust = aa_ok.float().mean().item()
    return TaskScores(clean, robust, passes, aa_robust)


def evaluate_tasks(model, tasks: Iterable[Task], *, device: torch.device | str = "cpu", seed: int = 0,
                   eps: float | Sequence[float], autoattack_eps: float | None = None, aa_tasks: int | None = None,
                   **kwargs) -> FewShotResult:
    """:func:`evaluate_task` over ``tasks`` (moved to ``device``); PGD starts seeded by ``seed``.

    AutoAttack (at ``autoattack_eps``) runs on the first ``aa_tasks`` tasks only (all if None).
    """
    eps_list = tuple(sorted({float(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)}))
    if autoattack_eps is not None and float(autoattack_eps) not in eps_list:
        raise ValueError(f"autoattack_eps {autoattack_eps} must be one of the swept eps {eps_list}")
    was_training = model.training
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    result = FewShotResult(eps=eps_list)
    try:
        for i, task in enumerate(tasks):
            aa_eps = autoattack_eps if aa_tasks is None or i < aa_tasks else None
            result.add(evaluate_task(model, task.to(device), generator=g, eps=eps_list, autoattack_eps=aa_eps,
                                     aa_seed=seed, **kwargs))
    finally:
        model.train(was_training)
    return result
