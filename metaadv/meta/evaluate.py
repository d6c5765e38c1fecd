"""Few-shot accuracy, clean and under attack, over an eps sweep, with 95% confidence intervals over tasks.

For each task the meta-learned parameters are adapted on the support set, then the queries are
classified clean and after PGD (``pgd_restarts`` random starts, step ``2.5 eps / steps``) against
the *adapted* model (a :class:`FunctionalModel` holding the adapted parameters is what
:func:`metaadv.attacks.pgd` attacks). The random starts are seeded by the task (its index in the
meta-test and the meta-test's seed), the attack, the eps and the restart, and a query's start is
its row of the whole query batch's draw, so every model meets the same starts on the same task,
whatever queries it or another model left unbroken before (:func:`task_start_seed`).

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
arXiv:2003.01690). With ``square_queries``, the reference's gradient-free Square attack
(Andriushchenko et al. 2020, arXiv:1912.00049) with that many queries follows them, in the same
per-example worst case. Their passes are not counted in ``passes``. AutoAttack seeds itself
(``aa_seed``), so its own starts are not shared query by query as PGD's are.

Accuracies are averaged over tasks and reported with ``1.96 * std / sqrt(n)`` (population std
over tasks), as few-shot papers report them (Finn et al. 2017; Snell et al. 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from ..attacks import pgd
from ..attacks.noise import batch_rows
from .inner import FunctionalModel, adapt, meta_parameters
from .support_attacks import SUPPORT_ATTACKS, attack_support
from .tasks import Task

__all__ = ["FEW_SHOT_AA", "FewShotResult", "SUPPORT_ATTACKS", "TaskScores", "evaluate_task", "evaluate_tasks",
           "few_shot_aa_components", "mean_ci95", "start_generator", "task_start_seed"]

FEW_SHOT_AA = ("apgd-ce", "apgd-dlr", "apgd-t")  # the custom set a few-way task allows (see module doc)
_AA_MIN_WAYS = {"apgd-dlr": 3, "apgd-t": 4}  # DLR reads the 3 (targeted: 4) largest logits


def few_shot_aa_components(ways: int, square: bool = False) -> list[str]:
    """The AutoAttack components run on a ``ways``-way task (and Square last, with ``square``)."""
    return [c for c in FEW_SHOT_AA if ways >= _AA_MIN_WAYS.get(c, 2)] + (["square"] if square else [])


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


def _mix(*keys: int) -> int:
    """A 63-bit seed that depends on every key (numpy's SeedSequence hashing: nearby keys, unrelated seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def task_start_seed(seed: int, task: int) -> int:
    """The seed of the attacks' random starts on task number ``task`` of a meta-test seeded by ``seed``:
    a function of the two alone, so no model's starts depend on what it (or another model) met before."""
    return _mix(seed, task)


_QUERY, _SUPPORT = 0, 1  # which attack a start generator serves


def start_generator(start_seed: int, device, *keys: int) -> torch.Generator:
    """A fresh generator for one attack of a task (``keys``: which attack, eps, learner, restart)."""
    return torch.Generator(device=device).manual_seed(_mix(start_seed, *keys))


def _eps_key(eps: float) -> int:
    return int(round(eps * 1_000_000))


def _attack_survivors(learner, x, y, ok: torch.Tensor, *, eps: float, steps: int, norm: str, restarts: int,
                      start_seed: int, learner_index: int) -> tuple[torch.Tensor, int]:
    """``ok`` with the queries PGD breaks (against ``learner``) set to False, and the passes spent.

    Madry's rule of thumb, as in the trainers' validation: 2.5 eps spread over the steps. Any iterate
    that fools counts (as in metaadv.evaluation.robust), and a fooled query stops costing. Only the
    unbroken queries are attacked, yet each restart draws the whole query batch's starts from its
    own generator (seeded by task, eps, learner and restart) and gives each query its row: a query
    meets the same start whichever queries another model left unbroken.
    """
    # Counted at the full budget on the queries unbroken at the start: at most what ran (as before
    # restarts were run one by one; a later restart attacks only what the earlier ones left).
    passes = steps * restarts * int(ok.sum())
    for restart in range(restarts):
        idx = ok.nonzero().flatten()
        if not len(idx):
            break
        g = start_generator(start_seed, x.device, _QUERY, _eps_key(eps), learner_index, restart)
        with batch_rows(idx, len(x)):
            x_adv = pgd(learner, x[idx], y[idx], eps=eps, step_size=2.5 * eps / steps, steps=steps, norm=norm,
                        restarts=1, generator=g, any_iterate=True)
        ok = ok.clone()
        ok[idx] = _correct(learner, x_adv, y[idx])
    return ok, passes


def _correct(learner, x, y) -> torch.Tensor:
    with torch.no_grad():
        return learner(x).argmax(1) == y


def _autoattack_survivors(learner, x, y, ok: torch.Tensor, *, eps: float, norm: str, ways: int, seed: int,
                          square_queries: int | None = None):
    """``ok`` with the queries AutoAttack's few-shot set breaks (against ``learner``) set to False;
    with ``square_queries``, then the reference's gradient-free Square with that many queries on
    the queries still unbroken (gradient masking cannot hide a model from it)."""
    from ..evaluation.autoattack import ReferenceAutoAttack
    from ..evaluation.checks import keep_in_threat_model

    if not ok.any():
        return ok
    components = FEW_SHOT_AA + (("square",) if square_queries else ())
    ref = ReferenceAutoAttack(learner, eps=eps, norm=norm, version="fast", seed=seed, num_classes=ways,
                              device=x.device, components=components)
    if square_queries:
        ref.aa.square.n_queries = int(square_queries)
    ok = ok.clone()
    for name in ref.components:
        idx = ok.nonzero().flatten()
        if not len(idx):
            break
        x_adv = keep_in_threat_model(x[idx], ref.run(name, x[idx], y[idx]), eps, norm, name)
        ok[idx] = _correct(learner, x_adv, y[idx])
    return ok


def evaluate_task(model, task: Task, *, inner_steps: int, inner_lr: float, eps: float | Sequence[float],
                  pgd_steps: int, norm: str = "linf", start_seed: int = 0, support_attack: str = "none",
                  pgd_restarts: int = 1, autoattack_eps: float | None = None, aa_seed: int = 0,
                  square_queries: int | None = None) -> TaskScores:
    """Adapt on ``task``'s support, measure its queries clean and at every eps in ``eps``.

    ``start_seed`` seeds every random start on this task (:func:`task_start_seed`): each attack
    (support or query, eps, learner, restart) draws from its own generator seeded by it, so two
    models evaluated with the same ``start_seed`` meet the same starts on every query.
    """
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
            g = start_generator(start_seed, task.xs.device, _SUPPORT, _eps_key(e))
            xs, spent = attack_support(support_attack, model, theta, task, eps=e, steps=pgd_steps, norm=norm,
                                       inner_steps=inner_steps, inner_lr=inner_lr, generator=g)
            learners.append(FunctionalModel(model, adapt(model, theta, xs, task.ys, **kw)).eval())
            passes += spent + inner_steps * n_s
            ok &= _correct(learners[-1], task.xq, task.yq)
        for i, learner in enumerate(learners if e > 0 else ()):
            # A query fooled at a smaller eps (or by another learner) is already counted as broken:
            # the ball grows with eps, so only the survivors are attacked.
            ok, spent = _attack_survivors(learner, task.xq, task.yq, ok, eps=e, steps=pgd_steps, norm=norm,
                                          restarts=pgd_restarts, start_seed=start_seed, learner_index=i)
            passes += spent
        robust[e] = ok.float().mean().item()
        if autoattack_eps is not None and e == autoattack_eps:
            aa_ok = ok
            for learner in learners:
                aa_ok = _autoattack_survivors(learner, task.xq, task.yq, aa_ok, eps=e, norm=norm,
                                              ways=int(task.ys.max()) + 1, seed=aa_seed, square_queries=square_queries)
            aa_robust = aa_ok.float().mean().item()
    return TaskScores(clean, robust, passes, aa_robust)


def evaluate_tasks(model, tasks: Iterable[Task], *, device: torch.device | str = "cpu", seed: int = 0,
                   eps: float | Sequence[float], autoattack_eps: float | None = None, aa_tasks: int | None = None,
                   **kwargs) -> FewShotResult:
    """:func:`evaluate_task` over ``tasks`` (moved to ``device``); task ``i``'s random starts seeded by
    ``task_start_seed(seed, i)`` alone, the same for every model.

    AutoAttack (at ``autoattack_eps``) runs on the first ``aa_tasks`` tasks only (all if None).
    """
    eps_list = tuple(sorted({float(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)}))
    if autoattack_eps is not None and float(autoattack_eps) not in eps_list:
        raise ValueError(f"autoattack_eps {autoattack_eps} must be one of the swept eps {eps_list}")
    was_training = model.training
    model.eval()
    result = FewShotResult(eps=eps_list)
    try:
        for i, task in enumerate(tasks):
            aa_eps = autoattack_eps if aa_tasks is None or i < aa_tasks else None
            result.add(evaluate_task(model, task.to(device), start_seed=task_start_seed(seed, i), eps=eps_list,
                                     autoattack_eps=aa_eps, aa_seed=seed, **kwargs))
    finally:
        model.train(was_training)
    return result
