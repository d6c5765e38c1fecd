"""What the CLI prints at the end of a search: where the results are, and the best trial(s)."""

from __future__ import annotations

import math
import os

from .experiment import Experiment

__all__ = ["summary_lines", "pareto_front", "trial_rows"]

SHOWN = ("round", "val/clean_acc", "val/robust_acc", "train/loss", "cost/grad_evals")


def trial_rows(grid) -> list[dict]:
    """One dict per trial: id, status, final config, last reported row, checkpoint path."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        status = "ERROR" if result.error else metrics.get("status", "ok")
        rows.append({"trial_id": metrics.get("trial_id") or os.path.basename(result.path), "status": status, "config": result.config or {},
                     "metrics": metrics, "path": result.path,
                     "checkpoint": result.checkpoint.path if result.checkpoint else None})
    return rows


def _finite(row: dict, metrics) -> bool:
    return all(isinstance(row["metrics"].get(m), (int, float)) and math.isfinite(row["metrics"][m]) for m in metrics)


def pareto_front(rows: list[dict], metrics, modes) -> list[dict]:
    """Trials no other trial beats on every metric (last reported values)."""
    sign = [1 if m == "max" else -1 for m in modes]
    scored = [r for r in rows if r["status"] == "ok" and _finite(r, metrics)]

    def value(r):
        return [s * r["metrics"][m] for s, m in zip(sign, metrics)]

    def dominated(r):
        return any(all(a >= b for a, b in zip(value(o), value(r))) and value(o) != value(r) for o in scored)

    return [r for r in scored if not dominated(r)]


def _describe(row: dict, exp: Experiment) -> str:
    hps = ", ".join(f"{k}={_fmt(row['config'].get(k))}" for k in exp.space)
    vals = "  ".join(f"{k} {_fmt(row['metrics'][k])}" for k in SHOWN if k in row["metrics"])
    return f"  trial {row['trial_id']}: {vals}\n    {hps}\n    checkpoint: {row['checkpoint']}"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_lines(grid, exp: Experiment, seconds: float) -> list[str]:
    rows = trial_rows(grid)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [f"results: {grid.experiment_path}  ({len(rows)} trials: "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; {seconds:.0f} s)"]
    if exp.scheduler in ("pbt", "pb2"):
        # PB2 inherits PBT's logging, file names included.
        lines.append(f"exploits: {grid.experiment_path}/pbt_global.txt (one JSON line each)")
    if exp.multi_objective:
        front = sorted(pareto_front(rows, exp.metrics, exp.modes), key=lambda r: -r["metrics"][exp.metrics[-1]])
        lines.append(f"pareto front over {', '.join(exp.metrics)} ({len(front)} trials):")
        lines += [_describe(r, exp) for r in front]
        return lines
    best = [r for r in rows if r["status"] == "ok" and _finite(r, exp.metrics)]
    if not best:
        lines.append("no trial reported a finite " + exp.metric)
        return lines
    sign = 1 if exp.mode == "max" else -1
    top = max(best, key=lambda r: sign * r["metrics"][exp.metric])
    lines.append(f"best trial by last {exp.metric} ({exp.mode}):")
    lines.append(_describe(top, exp))
    return lines
