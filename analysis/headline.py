"""The first screen of report.md: a banner for a smoke-size study, the verdict in one sentence, and
how arms are named where two of them hold the same models (:mod:`analysis.same_models`): a verdict
never names one of them without the other."""

from __future__ import annotations

import pandas as pd

__all__ = ["size_banner", "headline", "aim_sentence", "named", "same_models_line", "per_seed", "FEW_SEEDS"]

# Sizes that exist to check that the whole pipeline runs, not to compare arms.
PLUMBING_SIZES = ("tiny", "smoke")
# Below this many seeds a t-interval is wider than the range an accuracy lives in (t_{0.975,1} = 12.7):
# the tables print the per-seed values instead.
FEW_SEEDS = 3


def size_banner(specs: list[dict]) -> list[str]:
    """A quoted banner per study of a plumbing size (study.json ``size`` tiny or smoke), and per pilot
    (study.json ``pilot``: a subset of the declared arms and seeds, ``metaadv study --arms --seeds``)."""
    out = []
    for spec in specs:
        if spec.get("size") in PLUMBING_SIZES:
            out += [f"> **{spec.get('size').capitalize()}-size study ({spec.get('study')}): these numbers check the "
                    "plumbing only.** A few seeds and a tiny budget show that every phase runs and the report "
                    "is written; they say nothing about which arm is better. Run a larger size for that.", ""]
        if spec.get("pilot"):
            p = spec["pilot"]
            out += [f"> **Pilot of {spec.get('study')} ({spec.get('size')}): {len(p['arms'])} of its "
                    f"{len(p['declared_arms'])} arms ({', '.join(p['arms'])}) on {p['seeds']} of its "
                    f"{p['declared_seeds']} seeds.** Its spread sizes the study (the minimum detectable effects "
                    "below); its contrasts are a pilot's, not the study's verdict.", ""]
    return out


def named(arm: str, twins: dict[str, list[str]], bold: bool = True) -> str:
    """``arm``, and with it every arm holding the same models."""
    b = "**" if bold else ""
    others = twins.get(arm) or []
    return f"{b}{arm}{b}" + (f" (= {', '.join(f'{b}{t}{b}' for t in others)}, the same models)" if others else "")


def headline(table: pd.DataFrame, twins: dict[str, list[str]], declared: bool) -> str:
    """The verdict in one sentence: each decided contrast's winner, loser and margin, or that none is."""
    what = "declared contrast" if declared else "pair of arms"
    if table.empty:
        return "**Verdict:** no contrast could be formed (no two arms share a seed), so no arm is shown to beat another."
    wins = table[table["decided"].astype(bool)]
    seeds = sorted({int(n) for n in table["n"]})
    at = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
    if wins.empty:
        return (f"**Verdict:** no arm is shown to beat another: none of the {len(table)} {what}s is decided at {at} "
                "shared seed(s) (decided: 95% CI excluding zero and Holm-adjusted p < 0.05).")
    parts = []
    for _, c in wins.iterrows():
        winner, loser = (c["a"], c["b"]) if c["mean"] > 0 else (c["b"], c["a"])
        lo, hi = sorted((abs(100 * c["lo"]), abs(100 * c["hi"])))
        parts.append(f"{named(winner, twins)} beat {named(loser, twins)} by {abs(100 * c['mean']):.1f} points of "
                     f"robust accuracy (95% CI {lo:.1f} to {hi:.1f}, {int(c['n'])} seeds)")
    rest = len(table) - len(wins)
    return "**Verdict:** " + "; ".join(parts) + (f"; the other {rest} {what}(s) not decided." if rest else ".")


def same_models_line(same: pd.DataFrame) -> list[str]:
    """One line naming each group of arms whose final models are the same models."""
    if same.empty:
        return []
    groups = {tuple(sorted([r["arm"], *[x.strip() for x in r["same_as"].split(",")]])): r["seeds"]
              for _, r in same.iterrows()}
    text = "; ".join(f"{' and '.join(f'**{a}**' for a in g)} (seeds {seeds})" for g, seeds in groups.items())
    return [f"**Same models:** {text} trained the same models: seed by seed the same rounds, training and validation "
            "metrics, hyperparameters and verdicts. Read each group as one arm; a contrast inside a group compares "
            "a model with itself, and a verdict names the group whole.", ""]


def per_seed(models: pd.DataFrame, arm: str, column: str) -> str:
    """An arm's per-seed values in %, as ``41.0, 43.0 (seeds 0, 1)``: what a table shows below
    :data:`FEW_SEEDS` models instead of an interval."""
    g = models[models["arm"] == arm].sort_values("seed", kind="stable")
    values = ", ".join("n/a" if pd.isna(v) else f"{100 * v:.1f}" for v in g[column])
    seeds = ", ".join(str(s) for s in g["seed"])
    return f"{values} (seed{'s' if len(g) > 1 else ''} {seeds})"


def aim_sentence(table: pd.DataFrame, aim: dict | None) -> str:
    """The declared aim and whether any contrast met it (decided, mean at least ``min_effect``), with
    the minimum detectable effect at the seeds run and at the seeds planned: a contrast that misses
    the aim where the MDE is above it was not measured finely enough to show it."""
    if not aim:
        return "No aim was declared in study.json."
    effect = 100 * float(aim["min_effect"])
    judged = table[table["aim_effect"].notna()] if len(table) else table
    met = judged[judged["meets_aim"].astype(bool)] if len(judged) else judged
    head = f"**Aim** (declared before the run): {aim.get('statement') or f'a difference of at least {effect:.1f} points'}."
    if met.empty:
        verdict = f" Not met: no declared contrast is decided with a mean of at least {effect:.1f} points."
    else:
        verdict = " Met by " + ", ".join(f"{r['a']} - {r['b']} ({100 * r['mean']:+.1f}, 95% CI from {100 * r['lo']:.1f})"
                                         for _, r in met.iterrows()) + "."
    # Below 3 pairs t_{n-1} makes the detectable effect hundreds of points: say so rather than print it.
    mdes = [f"{r['a']} - {r['b']} " + (f"{100 * r['mde']:.1f}" if r["n"] >= 3 else f"n/a at {int(r['n'])} pairs")
            + (f" ({100 * r['mde_planned']:.1f} at {int(aim['planned_seeds'])})" if pd.notna(r["mde_planned"]) else "")
            for _, r in judged.iterrows() if pd.notna(r["mde"])]
    if mdes:
        verdict += (" Minimum detectable effect (points, 80% power, Bonferroni over the contrasts) at the seeds run"
                    + (" and, in brackets, at the planned seeds" if aim.get("planned_seeds") else "") + ": " + "; ".join(mdes) + ".")
    return head + verdict
