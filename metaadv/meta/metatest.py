"""The meta-test of a finished run: 600 (by default) seeded tasks of unseen classes, over an eps sweep.

The tasks depend only on the data set, the task shape and ``seed``, so every method's checkpoint
is measured on exactly the same tasks, and PGD's random starts are seeded by the task (and attack,
eps, restart: :func:`metaadv.meta.evaluate.task_start_seed`), so every checkpoint meets the same
starts on the same query: per-task results of two checkpoints (``per_task``) pair up task by task.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Sequence

import torch

from ..errors import UserError
from ..training.trainer import resolve_device
from .config import MetaConfig
from .data import load_meta_data
from .evaluate import SUPPORT_ATTACKS, FewShotResult, evaluate_tasks, few_shot_aa_components, mean_ci95
from .learner import build_meta_model
from .run import read_meta_checkpoint

__all__ = ["PER_TASK_COLUMNS", "chance_crossing", "meta_test"]

PER_TASK_COLUMNS = ("method", "train_seed", "dataset", "ways", "shots", "task", "eps", "clean_acc", "robust_acc",
                    "aa_robust_acc")


def _task_stream(pool, n: int, ways: int, shots: int, queries: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield pool.sample(ways, shots, queries, g)


def chance_crossing(sweep: list[dict], chance: float) -> dict:
    """Where robust accuracy stops being above chance with its 95% CI, from the low-eps end.

    ``above_chance_up_to``: the largest eps up to which every swept eps has ``acc - ci > chance``
    (None if not even the smallest); ``first_not_above_chance``: the next eps (None if none).
    """
    up_to, first_not = None, None
    for row in sweep:
        if row["robust_acc"] - row["robust_ci95"] > chance:
            up_to = row["eps"]
        else:
            first_not = row["eps"]
            break
    return {"chance": chance, "above_chance_up_to": up_to, "first_not_above_chance": first_not}


def _check_options(tasks, pgd_steps, pgd_restarts, eps_list, inner_steps, queries, support_attack, autoattack_eps,
                   aa_tasks, per_task, square_queries=None) -> None:
    if tasks < 1 or pgd_steps < 1 or pgd_restarts < 1:
        raise UserError(f"tasks, pgd_steps and pgd_restarts must be >= 1, got {tasks}, {pgd_steps} and {pgd_restarts}")
    for e in eps_list:
        if not 0.0 <= e <= 1.0:
            raise UserError(f"eps must be in [0, 1] (pixel units), got {e}")
    if square_queries is not None and autoattack_eps is None:
        raise UserError("square_queries adds Square to AutoAttack's set: it needs autoattack_eps")
    for name, value in (("inner_steps", inner_steps), ("queries", queries), ("aa_tasks", aa_tasks),
                        ("square_queries", square_queries)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if support_attack not in SUPPORT_ATTACKS:
        raise UserError(f"unknown support attack {support_attack!r}; choose one of {', '.join(SUPPORT_ATTACKS)}")
    if autoattack_eps is not None and autoattack_eps not in eps_list:
        raise UserError(f"--autoattack-eps {autoattack_eps:g} must be one of the --eps values "
                        f"({', '.join(f'{e:g}' for e in eps_list)})")
    if per_task is not None and not Path(per_task).expanduser().parent.is_dir():
        raise UserError(f"--per-task {str(per_task)!r}: its folder does not exist")


def _write_per_task(path, result: FewShotResult, config: MetaConfig, aa_eps: float | None, label: str) -> None:
    with open(Path(path).expanduser(), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PER_TASK_COLUMNS)
        for t, clean in enumerate(result.clean):
            for e in result.eps:
                aa = result.aa_robust[t] if e == aa_eps and t < len(result.aa_robust) else ""
                w.writerow([label, config.seed, config.dataset, config.ways, config.shots, t, e, clean,
                            result.robust_by_eps[e][t], aa])


def meta_test(checkpoint: str | Path, *, tasks: int = 600, eps: float | Sequence[float] | None = None,
              pgd_steps: int = 20, pgd_restarts: int = 1, inner_steps: int | None = None,
              attack_support: bool = False, support_attack: str = "none", queries: int | None = None, seed: int = 0,
              device: str = "auto", data_dir: str | None = None, autoattack_eps: float | None = None,
              aa_tasks: int = 100, per_task: str | Path | None = None, label: str | None = None,
              square_queries: int | None = None) -> dict:
    """Few-shot accuracy of ``checkpoint`` on meta-test tasks, clean and under attack, with 95% CIs.

    ``eps`` one value or a sweep (default: the run's eps); ``inner_steps`` (default: the run's
    evaluation steps) and ``queries`` (default: the run's) may be overridden; ways and shots are
    the run's, since the model's head has ``ways`` outputs and the meta-learned initialisation is
    tuned to ``shots``. ``attack_support=True`` is ``support_attack="theta"``. ``per_task``: a CSV
    path for one row per (task, eps), the input of paired comparisons (``analysis.fewshot``).
    ``label`` names the checkpoint in those rows (their ``method`` column) and in the result
    (default: its method), to tell two variants of one method apart, e.g. ADML with FGSM and PGD.
    ``square_queries``: the reference Square attack with that many queries after AutoAttack's set at
    ``autoattack_eps``, in the same per-example worst case (``aa_robust_acc``).
    """
    if attack_support:
        if support_attack not in ("none", "theta"):
            raise UserError(f"--attack-support is --support-attack theta; it conflicts with --support-attack {support_attack}")
        support_attack = "theta"
    if label is not None and (not label.strip() or "," in label or "\n" in label):
        raise UserError(f"--label must be a non-empty name without commas or line breaks, got {label!r}")
    state = read_meta_checkpoint(checkpoint)
    config = MetaConfig.from_dict(state["config"])
    label = config.method if label is None else label.strip()
    eps_in = config.eps if eps is None else eps
    eps_list = sorted({float(e) for e in ([eps_in] if isinstance(eps_in, (int, float)) else eps_in)})
    if not eps_list:
        raise UserError("--eps needs at least one value")
    _check_options(tasks, pgd_steps, pgd_restarts, eps_list, inner_steps, queries, support_attack, autoattack_eps,
                   aa_tasks, per_task, square_queries)
    steps = inner_steps or config.test_inner_steps
    queries = queries or config.queries
    dev = resolve_device(device)
    data = load_meta_data(config.dataset, data_dir or config.data_dir or None, config.download, ("test",))
    pool = data.pools["test"]
    pool.check(config.ways, config.shots, queries)
    model = build_meta_model(state["arch"], state["model_kwargs"])
    try:
        model.load_state_dict(state["learner"]["model"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"checkpoint weights do not fit {state['arch']!r}: {str(exc).splitlines()[0]}") from None
    model.to(dev)
    start = time.perf_counter()
    result = evaluate_tasks(model, _task_stream(pool, tasks, config.ways, config.shots, queries, seed), device=dev,
                            seed=seed, inner_steps=steps, inner_lr=config.inner_lr, eps=eps_list, pgd_steps=pgd_steps,
                            pgd_restarts=pgd_restarts, norm=config.norm, support_attack=support_attack,
                            autoattack_eps=autoattack_eps, aa_tasks=aa_tasks, square_queries=square_queries)
    seconds = round(time.perf_counter() - start, 3)
    if per_task is not None:
        _write_per_task(per_task, result, config, autoattack_eps, label)
    sweep = result.sweep()
    out = {"checkpoint": str(checkpoint), "method": config.method, "label": label, "dataset": config.dataset,
           "train_seed": config.seed,
           "ways": config.ways, "shots": config.shots, "queries": queries, "inner_steps": steps,
           "inner_lr": config.inner_lr, "eps": eps_list[0] if len(eps_list) == 1 else eps_list, "norm": config.norm,
           "pgd_steps": pgd_steps, "pgd_restarts": pgd_restarts, "support_attack": support_attack,
           "attack_support": support_attack != "none", "seed": seed, **result.summary(), "sweep": sweep,
           **chance_crossing(sweep, 1.0 / config.ways), "grad_evals": result.passes, "seconds": seconds}
    if autoattack_eps is not None:
        aa, aa_ci = mean_ci95(result.aa_robust)
        pgd_same = mean_ci95(result.robust_by_eps[autoattack_eps][: len(result.aa_robust)])[0]
        out.update({"aa_eps": autoattack_eps, "aa_tasks": len(result.aa_robust), "aa_components": few_shot_aa_components(config.ways, bool(square_queries)),
                    "square_queries": square_queries,
                    "aa_robust_acc": aa, "aa_robust_ci95": aa_ci, "aa_pgd_robust_acc": pgd_same})
    return out
