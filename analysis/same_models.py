"""Arms whose final models are the same models (a replay of the very schedule another arm ran, two
arms declared with one config): a contrast between them measures nothing, and a verdict that names
one of them speaks for both.

The rule: two arms are **the same** when they have final models on the same seeds and, seed by
seed, the two models reported the same rounds with the same training and validation metrics
(``train/*``, ``val/*``) and the same hyperparameters (``hp/*``, where both logged one), and their
verdicts agree (robust and clean accuracy). Training is seeded, so identical trial configs and
seeds give identical rows; two different models matching on every logged loss and accuracy of every
round is not a coincidence one meets. A timing column (``*seconds*``, ``*time*``) never counts.
Values are compared to 9 significant digits (a CSV round trip keeps them).
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["same_model_arms", "twins_of", "SAME_COLUMNS"]

SAME_COLUMNS = ["arm", "same_as", "seeds", "n_models"]
_PREFIXES = ("train/", "val/", "hp/")


def _value(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if math.isnan(f) else float(f"{f:.9g}")


def _fingerprint(rows: pd.DataFrame, model) -> dict | None:
    """``{(round, column): value}`` of a model's logged rows plus its verdict; None when it logged no
    training or validation metric to compare (nothing would tell two models apart)."""
    cols = [c for c in rows.columns if c.startswith(_PREFIXES) and "seconds" not in c and "time" not in c]
    rows = rows.sort_values("report", kind="stable")
    out = {}
    for i, (_, r) in enumerate(rows.iterrows()):
        for c in cols:
            v = _value(r[c])
            if v is not None:
                out[(i, c)] = v
    if not any(c.startswith(("train/", "val/")) for _, c in out):
        return None
    out[("verdict", "robust")] = _value(model["robust_acc"])
    out[("verdict", "clean")] = _value(model["clean_acc"])
    out[("rounds", "")] = tuple(rows["round"]) if "round" in rows else len(rows)
    return out


def _agree(a: dict, b: dict) -> bool:
    """Equal on every key both have, and on the same rows and verdict (hp/* logged by one only is skipped)."""
    if a[("rounds", "")] != b[("rounds", "")] or a[("verdict", "robust")] != b[("verdict", "robust")] \
            or a[("verdict", "clean")] != b[("verdict", "clean")]:
        return False
    shared = [k for k in a if k in b]
    metrics = [k for k in shared if isinstance(k[1], str) and k[1].startswith(("train/", "val/"))]
    return bool(metrics) and all(a[k] == b[k] for k in shared)


def same_model_arms(frame: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """One row per arm that has a twin (module doc): ``arm``, ``same_as`` (the other arms of its group,
    ``", "``-joined, in arm order), ``seeds`` and ``n_models``. Empty when no two arms are the same."""
    if finals.empty:
        return pd.DataFrame(columns=SAME_COLUMNS)
    prints: dict[str, dict] = {}
    for arm, group in finals.groupby("arm", sort=False):
        if group["seed"].duplicated().any():
            continue  # two models of one seed: no seed-by-seed pairing
        per_seed = {}
        for _, m in group.iterrows():
            rows = frame[(frame["arm"] == arm) & (frame["model"] == m["model"])]
            per_seed[m["seed"]] = _fingerprint(rows, m)
        if per_seed and all(v is not None for v in per_seed.values()):
            prints[arm] = per_seed
    arms = list(prints)
    groups: list[list[str]] = []  # each arm joins the first group whose first arm it matches
    for a in arms:
        home = next((g for g in groups if set(prints[g[0]]) == set(prints[a])
                     and all(_agree(prints[g[0]][s], prints[a][s]) for s in prints[a])), None)
        if home is None:
            groups.append([a])
        else:
            home.append(a)
    rows = [{"arm": a, "same_as": ", ".join(x for x in members if x != a),
             "seeds": ",".join(str(s) for s in sorted(prints[a])), "n_models": len(prints[a])}
            for members in groups if len(members) > 1 for a in members]
    return pd.DataFrame(rows, columns=SAME_COLUMNS)


def twins_of(same: pd.DataFrame) -> dict[str, list[str]]:
    """``{arm: [its twins]}`` from :func:`same_model_arms`' table."""
    return {r["arm"]: [x.strip() for x in str(r["same_as"]).split(",") if x.strip()] for _, r in same.iterrows()}
