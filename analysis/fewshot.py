"""Few-shot meta-test results: per-task CSVs of ``metaadv meta-evaluate --per-task`` into paired comparisons.

Every checkpoint is meta-tested on the same seeded tasks, so two methods' results pair up task by
task (the columns are ``metaadv.meta.metatest.PER_TASK_COLUMNS``: method, train_seed, dataset,
ways, shots, task, eps, clean_acc, robust_acc, aa_robust_acc). A difference between methods has
two sources of noise, and each comparison reports both:

- **tasks**: per task, the mean over a method's training seeds, minus the other method's; the mean
  of those paired differences over the tasks with its t-based 95% CI (``task_*``). It treats the
  trained models as fixed, so it measures how sure we are about *these* models.
- **training seeds**: per training seed, the mean over tasks, paired by seed (seed s of both
  methods shares its initialisation and meta-training task draws), with
  :func:`analysis.stats.paired_diff` (``seed_*``). With 3 seeds its interval is wide, and it is
  what says whether the method, not the particular models, differs.

``decided`` is True only when both intervals exclude zero on the same side.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import pandas as pd

from .stats import mean_ci, paired_diff

__all__ = ["METRICS", "compare", "load_per_task", "method_table", "paired_task_diff", "study_per_task"]

METRICS = ("clean_acc", "robust_acc", "aa_robust_acc")
_KEYS = ("dataset", "ways", "shots")


def load_per_task(paths: Iterable[str | Path]) -> pd.DataFrame:
    """The per-task CSVs of several meta-tests as one frame (``aa_robust_acc`` NaN where not run)."""
    frames = [pd.read_csv(p) for p in paths]
    if not frames:
        raise ValueError("no per-task CSV files given")
    frame = pd.concat(frames, ignore_index=True)
    for m in (m for m in METRICS if m in frame):
        frame[m] = frame[m].map({v: _snap(v) for v in frame[m].dropna().unique()})
    return frame


def _snap(value: float) -> float:
    """A task's accuracy is k / n (n queries, fewer than 1,000) written from float32: back to the
    double nearest k / n. Equal fractions are then equal numbers and their means agree to double
    rounding (about 1e-16), below the no-spread guard of the paired differences (sd <= 1e-9): two
    arms that differ by the same amount on every seed show no spread, where float32 noise (about
    1e-8) would show a spread a t-test calls certain."""
    return float(Fraction(float(value)).limit_denominator(1000))


def _select(frame: pd.DataFrame, eps: float, where: dict) -> pd.DataFrame:
    sel = frame[(frame["eps"] - eps).abs() < 1e-12]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel


def paired_task_diff(frame: pd.DataFrame, a: str, b: str, *, eps: float, metric: str = "robust_acc",
                     level: float = 0.95, **where) -> dict:
    """Mean over shared tasks of (seed-mean of ``a``) - (seed-mean of ``b``) at ``eps``, with its t CI.

    ``where`` narrows the frame (``ways=3``, ``dataset="mnist5k-rot"``, ...). Tasks that only one
    method has, or where ``metric`` is missing (AutoAttack ran on the first tasks only), are left out.
    """
    sel = _select(frame, eps, where).dropna(subset=[metric])
    per_task = sel.pivot_table(index="task", columns="method", values=metric, aggfunc="mean")
    if not {a, b} <= set(per_task.columns):
        return {"a": a, "b": b, **mean_ci([], level)}
    diffs = (per_task[a] - per_task[b]).dropna()
    return {"a": a, "b": b, **mean_ci(diffs.to_numpy(), level)}


def _seed_means(frame: pd.DataFrame, eps: float, metric: str, where: dict) -> pd.DataFrame:
    sel = _select(frame, eps, where).dropna(subset=[metric])
    return sel.groupby(["method", "train_seed"], as_index=False)[metric].mean()


def _per_seed(values: pd.Series) -> str:
    """``"seed:value;..."``: what a report prints instead of an interval below 3 seeds."""
    return ";".join(f"{s}:{float(v)!r}" for s, v in values.items())


def _seed_diffs(means: pd.DataFrame, a: str, b: str, metric: str) -> str:
    wide = means.pivot(index="train_seed", columns="method", values=metric) if len(means) else pd.DataFrame()
    if not {a, b} <= set(wide.columns):
        return ""
    return _per_seed((wide[a] - wide[b]).dropna())


def compare(frame: pd.DataFrame, a: str, b: str, *, eps: float, metric: str = "robust_acc", **where) -> dict:
    """``a - b`` at ``eps``: the task-level and the seed-level paired difference (and ``seed_diffs``,
    each shared seed's difference as ``"seed:diff;..."``), and whether both agree."""
    task = paired_task_diff(frame, a, b, eps=eps, metric=metric, **where)
    means = _seed_means(frame, eps, metric, where)
    seed = paired_diff(means, a, b, on="train_seed", value=metric, arm="method")
    if seed["sd"] <= 1e-9:  # equal differences up to rounding: no spread to test (paired_diff's own guard)
        seed["p"] = 1.0 if seed["n"] >= 2 else seed["p"]
    out = {"a": a, "b": b, "eps": eps, "metric": metric, "diff": task["mean"],
           **{f"task_{k}": task[k] for k in ("lo", "hi", "n")},
           **{f"seed_{k}": seed[k] for k in ("mean", "lo", "hi", "n", "p")}, "seed_diffs": _seed_diffs(means, a, b, metric)}
    above = task["lo"] > 0 and seed["lo"] > 0 and seed["excludes_zero"]
    below = task["hi"] < 0 and seed["hi"] < 0 and seed["excludes_zero"]
    out["decided"] = bool(above or below) and not math.isnan(task["lo"])
    return out


def method_table(frame: pd.DataFrame, *, metric: str = "robust_acc") -> pd.DataFrame:
    """Per (dataset, ways, shots, method, eps): the mean over seeds of the per-seed task mean, its
    CI over seeds (t), the seeds, the task-level half-width of the seed-averaged tasks, and
    ``seed_values`` (each seed's task mean, ``"seed:value;..."``)."""
    rows = []
    for keys, sel in frame.dropna(subset=[metric]).groupby([*_KEYS, "method", "eps"]):
        seed_means = sel.groupby("train_seed")[metric].mean()
        task_means = sel.groupby("task")[metric].mean()
        s, t = mean_ci(seed_means.to_numpy()), mean_ci(task_means.to_numpy())
        rows.append({**dict(zip([*_KEYS, "method", "eps"], keys)), "mean": s["mean"], "seed_half": s["half"],
                     "seeds": s["n"], "task_half": t["half"], "tasks": t["n"], "seed_values": _per_seed(seed_means)})
    return pd.DataFrame(rows)


def study_per_task(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-task rows of a meta study's verdicts (``metaadv study``, kind meta): the sweep's and
    the support-attack pass's, read from the CSVs each verdict JSON of ``models.csv`` names
    (:mod:`metaadv.study.meta_judge`); their ``method`` column is the arm. Empty frames where none."""
    import json

    folder = Path(folder)
    sweeps, supports = [], []
    models = folder / "models.csv"
    table = pd.read_csv(models, dtype=str) if models.is_file() and models.stat().st_size else pd.DataFrame()
    for rel in table.get("eval", pd.Series(dtype=str)).dropna():
        verdict = folder / rel
        if not verdict.is_file():
            continue  # not evaluated yet (a study in progress)
        r = json.loads(verdict.read_text())
        if r.get("per_task"):
            sweeps.append(verdict.parent / r["per_task"])
        if (r.get("support") or {}).get("per_task"):
            supports.append(verdict.parent / r["support"]["per_task"])
    empty = pd.DataFrame(columns=["method", "train_seed", *_KEYS, "task", "eps", *METRICS])
    return (load_per_task(sweeps) if sweeps else empty), (load_per_task(supports) if supports else empty)
