"""Means with t-based 95% confidence intervals, and paired differences over shared seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _stats

__all__ = ["MIN_PAIRS", "mean_ci", "paired_diff"]

MIN_PAIRS = 3
"""Fewest paired seeds from which a contrast may be called decided (excluding zero)."""


def mean_ci(values, level: float = 0.95) -> dict:
    """``{"mean", "lo", "hi", "half", "sd", "n"}`` of the finite ``values``: mean +- t_{n-1} * sd / sqrt(n)
    (Student's t, two-sided ``level``). With one value the interval is NaN (no spread to measure)."""
    x = np.asarray([v for v in np.asarray(values, dtype=float) if math.isfinite(v)])
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "half": math.nan, "sd": math.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "half": math.nan, "sd": math.nan, "n": 1}
    sd = float(x.std(ddof=1))
    half = float(_stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "half": half, "sd": sd, "n": n}


def paired_diff(frame: pd.DataFrame, a: str, b: str, on: str = "seed", value: str = "robust_acc",
                arm: str = "arm", level: float = 0.95) -> dict:
    """Mean of ``a - b`` over the ``on`` values both arms have (one row per arm and seed in
    ``frame``), with its t-based CI. ``excludes_zero`` is True when the interval lies on one side
    of 0, from at least ``MIN_PAIRS`` pairs whose differences vary: two seeds that happen to differ
    by the same amount (common on a coarse test set) give a zero-width interval, not evidence.
    ``p`` is the two-sided paired t-test p-value (NaN below two pairs)."""
    both = frame[frame[arm].isin([a, b])]
    wide = both.pivot_table(index=on, columns=arm, values=value, aggfunc="mean") if len(both) else pd.DataFrame()
    pairs = wide.dropna(subset=[c for c in (a, b) if c in wide]) if {a, b} <= set(wide.columns) else wide.iloc[0:0]
    diffs = (pairs[a] - pairs[b]).to_numpy(dtype=float) if len(pairs) else np.array([])
    ci = mean_ci(diffs, level)
    p = math.nan
    if ci["n"] >= 2:
        p = 1.0 if ci["sd"] == 0 and ci["mean"] == 0 else float(_stats.ttest_1samp(diffs, 0.0).pvalue)
    excludes = ci["n"] >= MIN_PAIRS and ci["sd"] > 1e-9 and (ci["lo"] > 0 or ci["hi"] < 0)
    return {"a": a, "b": b, **ci, "p": p, "excludes_zero": bool(excludes),
            "seeds": ",".join(str(s) for s in pairs.index.tolist())}
