"""How the report words its numbers: accuracies and intervals in %, grad-eval counts, contrast
means with their intervals (or each seed's difference below FEW_SEEDS pairs), and the verdict's
sentences (who beat whom, decided under Holm; which arm leads)."""

from __future__ import annotations

import math

import pandas as pd

from .headline import FEW_SEEDS, named, per_seed

__all__ = ["arm_cell", "best_sentence", "ci", "mean_and_ci", "num", "pct", "sensitivity", "verdict_sentences"]


def sensitivity(table: pd.DataFrame, models: pd.DataFrame | None = None) -> str:
    """One line: each contrast's mean and CI without the untrusted models."""
    if table.empty:
        return "no contrast."
    parts = []
    for _, r in table.iterrows():
        mean, ci = mean_and_ci(r, models)
        ci = f"({ci})" if ci.startswith("per seed") else ci
        parts.append(f"{r['a']} - {r['b']} {mean} {ci} ({int(r['n'])} seed(s){', decided' if r['decided'] else ''})")
    return "; ".join(parts) + "."


def mean_and_ci(r, models: pd.DataFrame | None = None) -> tuple[str, str]:
    """A contrast row's mean and 95% CI in points, as the report prints them; below FEW_SEEDS pairs
    (and ``models`` given: the counted values the contrast paired) the per-seed differences instead."""
    mean = "n/a" if pd.isna(r["mean"]) else f"{round(100 * r['mean'], 1) + 0.0:+.1f}"
    if models is not None and 0 < int(r["n"]) < FEW_SEEDS:
        return mean, "per seed: " + _seed_diffs(models, r)
    return mean, "n/a" if pd.isna(r["lo"]) else f"[{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"


def _seed_diffs(models: pd.DataFrame, r) -> str:
    """``+1.0 at seed 0, +2.0 at seed 1``: a contrast's paired differences in points, over the units it
    paired (``pair``: the seed, or a searched model's population, named as such)."""
    on = "pair" if "pair" in models else "seed"
    parts = []
    for unit in str(r["seeds"]).split(","):
        both = [models[(models["arm"] == arm) & (models[on].map(lambda v: _same_unit(v, unit)))] for arm in (r["a"], r["b"])]
        if all(len(m) == 1 for m in both):
            a, b = both[0].iloc[0], both[1].iloc[0]
            seed = _same_unit(a["seed"], unit) and _same_unit(b["seed"], unit)
            label = f"seed {_unit(unit)}" if seed else f"pair {_unit(unit)}"
            parts.append(f"{100 * (a['robust_counted'] - b['robust_counted']):+.1f} at {label}")
    return ", ".join(parts) or "n/a"


def _unit(value) -> str:
    """A pairing unit as written: ``2.0`` -> ``2``."""
    try:
        f = float(value)
        return str(int(f)) if f.is_integer() else str(value)
    except (TypeError, ValueError):
        return str(value)


def _same_unit(value, unit: str) -> bool:
    return _unit(value) == _unit(unit)


def pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def ci(mean, lo, hi) -> str:
    """An accuracy's mean and t-interval, the interval cut to [0, 100] (a t-interval over few seeds
    can pass the range an accuracy lives in; the CSV keeps the raw bounds)."""
    return pct(mean) + ("" if pd.isna(lo) else f" [{pct(max(lo, 0.0))}, {pct(min(hi, 1.0))}]")


def arm_cell(a, models: pd.DataFrame, which: str) -> str:
    """An arm's robust or clean accuracy cell: mean and CI from FEW_SEEDS models, else each model's value."""
    if int(a["n_models"]) < FEW_SEEDS:
        return per_seed(models, a["arm"], "robust_counted" if which == "robust" else "clean_acc")
    return ci(a[f"{which}_mean"], a[f"{which}_lo"], a[f"{which}_hi"])


def num(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:,.0f}"


def verdict_sentences(table: pd.DataFrame, twins: dict[str, list[str]] | None = None) -> list[str]:
    """Plain sentences: each contrast that is decided (its 95% CI excludes zero and its t-test
    p-value, Holm-adjusted across the contrasts, is below 0.05: who won, by how many points of
    trusted robust accuracy), or that none is. An arm with ``twins`` (arms holding the same models:
    :func:`analysis.same_models.twins_of`) is named with them."""
    twins = twins or {}
    wins = table[table["decided"].astype(bool)] if len(table) else table
    if wins.empty:
        tested = table[table["n"] >= 2] if len(table) else table
        return ["No contrast is decided (95% CI excluding zero and Holm-adjusted p < 0.05)"
                + (f" ({len(tested)} tested with >= 2 shared seeds)" if len(table) else " (no contrast could be formed)")
                + ": no arm is shown to beat another at this number of seeds."]
    out = []
    for _, c in wins.iterrows():
        winner, loser = (c["a"], c["b"]) if c["mean"] > 0 else (c["b"], c["a"])
        out.append(f"{named(winner, twins)} beat {named(loser, twins)} by {abs(100 * c['mean']):.1f} points of robust accuracy "
                   f"(95% CI {100 * min(abs(c['lo']), abs(c['hi'])):.1f} to {100 * max(abs(c['lo']), abs(c['hi'])):.1f}, "
                   f"Holm p {c['p_holm']:.3g}, {int(c['n'])} paired seeds" + (f"; {c['question']}" if c["question"] else "") + ").")
    return out


def best_sentence(arms: pd.DataFrame, twins: dict[str, list[str]] | None = None) -> str:
    """The highest mean among arms with no untrusted model (an arm with one never leads); arms tied
    with it at the printed precision, and arms holding the same models, are named with it."""
    twins = twins or {}
    ranked = arms[arms["n_untrusted"] == 0].dropna(subset=["robust_mean"]).sort_values("robust_mean", ascending=False)
    if ranked.empty:
        return "No arm leads: every arm has an untrusted model or no model." if len(arms) else ""
    top = ranked.iloc[0]
    tied = [a for a in ranked["arm"] if pct(ranked.set_index("arm").loc[a, "robust_mean"]) == pct(top["robust_mean"])]
    tied = [a for a in tied if not any(a in twins.get(b, []) for b in tied[:tied.index(a)])]  # a twin is named with its arm
    who = " and ".join(named(a, twins, bold=False) for a in tied) + (" (tied)" if len(tied) > 1 else "")
    return (f"Highest mean robust accuracy among arms with no untrusted model: {who} ({pct(top['robust_mean'])}% "
            f"over {top['n_models']} model(s)), at cost (a) {num(top['cost_a'])} and cost (b) {num(top['cost_b'])} "
            "grad evals per model" + ("; a higher mean alone is not a win." if len(ranked) > 1 else "."))
