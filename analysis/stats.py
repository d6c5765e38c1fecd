"""Shared statistics for every study: means with t intervals, paired contrasts, Holm's correction.

One place, used by every table (the learned-vs-searched study, the few-shot table, the learner
and evidence studies): a paired contrast gets Student's t interval and p-value (scipy's
``ttest_1samp``) and an exact sign-flip permutation p-value beside it (distribution-free; it never
gives p = 0 for differences that merely happen to be equal: n equal non-zero differences give
2 / 2^n, so it needs 6 pairs to reach 0.05 at all), and the declared contrasts of a study are
Holm-adjusted together (Holm 1979: the i-th smallest of m p-values is multiplied by m - i + 1,
then made monotone). A contrast is *decided* when its t interval excludes zero from at least
``MIN_PAIRS`` varying pairs and its Holm-adjusted t p-value is below ``ALPHA`` (the Holm-adjusted
interval's bound is then on the same side of zero).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats as _stats

__all__ = ["ALPHA", "MIN_PAIRS", "POWER", "holm", "mean_ci", "min_detectable_effect", "paired_diff", "paired_stats",
           "seeds_needed", "sign_flip_p"]

ALPHA = 0.05
POWER = 0.8  # the chance a planned study detects an effect of the minimum detectable size
MIN_PAIRS = 3
"""Fewest paired seeds from which a contrast may be called decided (excluding zero)."""
_ROUNDING = 1e-7  # a spread this small, relative to the values, is rounding (float32 accuracies carry ~1e-8), not variation
_EXACT_UP_TO = 20  # 2^20 sign patterns; beyond, a seeded Monte Carlo of 200,000 patterns
_MONTE_CARLO = 200_000


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
    if sd <= _ROUNDING * max(1.0, float(np.abs(x).max())):
        # A constant sample (up to the rounding of the differences that made it: 0.30 - 0.25 and
        # 0.10 - 0.05 differ in the last bit): no spread, so the interval is the point and no t-test.
        return {"mean": mean, "lo": mean, "hi": mean, "half": 0.0, "sd": 0.0, "n": n}
    ci = _stats.ttest_1samp(x, 0.0).confidence_interval(level)
    return {"mean": mean, "lo": float(ci.low), "hi": float(ci.high), "half": float(ci.high) - mean, "sd": sd, "n": n}


def sign_flip_p(diffs) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of mean(diffs) = 0.

    Under the null each difference is as likely positive as negative; p is the share of the 2^n
    sign patterns whose |mean| is at least the observed one (exact up to 20 pairs, else a seeded
    Monte Carlo that counts the observed pattern). NaN without a pair.
    """
    d = np.asarray([v for v in np.asarray(diffs, dtype=float) if math.isfinite(v)])
    n = len(d)
    if n == 0:
        return math.nan
    observed = abs(d.sum()) - 1e-12 * max(1.0, float(np.abs(d).sum()))  # ties count as extreme
    if n <= _EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ d) >= observed))
    rng = np.random.default_rng(0)
    signs = rng.choice((1.0, -1.0), size=(_MONTE_CARLO, n))
    return float((np.sum(np.abs(signs @ d) >= observed) + 1) / (_MONTE_CARLO + 1))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (NaN stays NaN and does not count towards m)."""
    p = [float(v) for v in pvalues]
    finite = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
    m, out, running = len(finite), [math.nan] * len(p), 0.0
    for rank, (v, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


def paired_stats(diffs, level: float = 0.95) -> dict:
    """The t interval, the t-test's p-value ``p`` and the sign-flip p-value ``p_flip`` of a sample
    of paired differences. A constant sample has no spread to test: its ``p`` is 1."""
    ci = mean_ci(diffs, level)
    d = [v for v in np.asarray(diffs, dtype=float) if math.isfinite(v)]
    p = math.nan
    if ci["n"] >= 2:
        p = 1.0 if ci["sd"] == 0 else float(_stats.ttest_1samp(d, 0.0).pvalue)
    return {**ci, "p": p, "p_flip": sign_flip_p(d)}


def paired_diff(frame: pd.DataFrame, a: str, b: str, on: str = "seed", value: str = "robust_acc",
                arm: str = "arm", level: float = 0.95) -> dict:
    """Mean of ``a - b`` over the ``on`` values both arms have (one row per arm and seed in
    ``frame``; two rows of one arm and seed are refused, not averaged), with its t interval, the
    t-test's p-value ``p`` and the exact sign-flip p-value ``p_flip``. ``excludes_zero`` is True when
    the interval lies on one side of 0, from at least ``MIN_PAIRS`` pairs whose differences vary:
    two seeds that happen to differ by the same amount (common on a coarse test set) give a
    zero-width interval, not evidence."""
    both = frame[frame[arm].isin([a, b])]
    repeated = both[both.duplicated([arm, on], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        raise ValueError(f"arm {first[arm]!r} has {int((repeated[arm] == first[arm]).sum())} rows for {on} "
                         f"{first[on]}: a paired contrast needs one model per {on} and arm (aggregate first)")
    wide = both.pivot(index=on, columns=arm, values=value) if len(both) else pd.DataFrame()
    pairs = wide.dropna(subset=[c for c in (a, b) if c in wide]) if {a, b} <= set(wide.columns) else wide.iloc[0:0]
    diffs = (pairs[a] - pairs[b]).to_numpy(dtype=float) if len(pairs) else np.array([])
    s = paired_stats(diffs, level)
    excludes = s["n"] >= MIN_PAIRS and s["sd"] > 1e-9 and (s["lo"] > 0 or s["hi"] < 0)
    return {"a": a, "b": b, **s, "excludes_zero": bool(excludes),
            "seeds": ",".join(str(v) for v in pairs.index.tolist())}


def min_detectable_effect(sd: float, n: int, *, m: int = 1, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a paired t-test over ``n`` pairs detects with probability
    ``power``, two-sided at ``alpha / m`` (Bonferroni over ``m`` declared contrasts: Holm's first,
    strictest step, so a bound that holds for Holm too), given the differences' standard deviation
    ``sd`` (a pilot's): ``(t_{1 - alpha/(2m), n-1} + t_{power, n-1}) * sd / sqrt(n)``, the usual
    normal-approximation formula with t quantiles (Cohen 1988, ch. 2). NaN below 2 pairs."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return float((_stats.t.ppf(1 - alpha / (2 * m), df) + _stats.t.ppf(power, df)) * sd / math.sqrt(n))


def seeds_needed(sd: float, effect: float, *, m: int = 1, alpha: float = ALPHA, power: float = POWER,
                 most: int = 1000) -> int | None:
    """The fewest pairs whose :func:`min_detectable_effect` is at most ``effect`` (None if more than ``most``)."""
    if effect <= 0 or not math.isfinite(sd):
        return None
    for n in range(2, most + 1):
        if min_detectable_effect(sd, n, m=m, alpha=alpha, power=power) <= effect:
            return n
    return None
