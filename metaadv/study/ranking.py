"""How a study ranks its trials: a trial's score (its last validation robust accuracy, or minus
infinity when it has no checkpoint, erred or diverged), the best trial, and the best configuration
of a grid search by its mean over the pilot seeds. Shared by the study's units and ``--reuse``."""

from __future__ import annotations

import math

from ..errors import UserError

__all__ = ["score", "best_config", "best_trial"]


def score(trial: dict) -> float:
    value = trial["metrics"].get("val/robust_acc")
    ok = trial["checkpoint"] and not trial["error"] and trial["metrics"].get("status", "ok") != "diverged"
    return float(value) if ok and isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def best_config(trials: list[dict], keys) -> dict:
    """The searched values (``keys``) of the configuration whose trials have the best mean score over
    their seeds (a grid search's pilot seeds; with one trial per configuration, the best trial's)."""
    groups: dict[tuple, list[float]] = {}
    for t in trials:  # a grid value may be a tuple (a LAS eps grid), which a JSON round trip made a list
        values = tuple(tuple(v) if isinstance(v, list) else v for v in (t["config"].get(k) for k in keys))
        groups.setdefault(values, []).append(score(t))
    finite = {values: sum(scores) / len(scores) for values, scores in groups.items() if all(v > -math.inf for v in scores)}
    if not finite:
        raise UserError("no configuration finished on every seed with a finite val/robust_acc and a checkpoint")
    return dict(zip(keys, max(finite, key=finite.get)))


def best_trial(trials: list[dict]) -> dict:
    best = max(trials, key=score)
    if score(best) == -math.inf:
        raise UserError("no trial finished with a finite val/robust_acc and a checkpoint")
    return best
