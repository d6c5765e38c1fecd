"""How each arm spent its budget (cost view a): the epochs it bought, the attack it trained with,
and whether a learned attack strategy moved. At equal training grad evals a cheaper attack buys more
epochs; this table says which trade each arm made, from the rows its final models logged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .summaries import model_lineage

__all__ = ["SPENDING_COLUMNS", "budget_spending", "spending_lines"]

SPENDING_COLUMNS = ["arm", "n_models", "epochs", "attack_steps", "train_eps", "las_kl", "las_kl_min"]


def _per_step(lin: pd.DataFrame, chosen: str, schedule: str) -> float:
    """The mean over training steps of a round's value: a LAS strategy's mean per-example choice
    (``chosen``) where it acted, else the schedule's (``schedule``), each round weighted by the
    training steps it ran (``step`` is cumulative). A round counts at its logged value: an eps ramp
    inside one round counts at the round's end."""
    if schedule not in lin:
        return float("nan")
    values = lin[schedule].astype(float)
    if chosen in lin:
        values = lin[chosen].astype(float).fillna(values)
    steps = lin["step"].astype(float).diff().fillna(lin["step"].astype(float)) if "step" in lin else pd.Series(1.0, index=lin.index)
    ok = values.notna() & steps.gt(0)
    return float(np.average(values[ok], weights=steps[ok])) if ok.any() else float("nan")


def budget_spending(frame: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """Per arm, the means over its final models (every one, trusted or not: spending is not a
    verdict) of: ``epochs`` (the last row's ``epoch``), ``attack_steps`` and ``train_eps`` (per
    training step: :func:`_per_step`), ``las_kl`` (the last logged ``las/kl``: KL of the final to the
    initial, uniform strategy on held-out digits; 0 means it never moved) and its minimum over the
    models. Empty for rows without a training schedule (a few-shot study's)."""
    if finals.empty or "hp/steps" not in frame:
        return pd.DataFrame(columns=SPENDING_COLUMNS)
    per_model = []
    for _, m in finals.iterrows():
        lin = model_lineage(frame, m)
        if lin.empty:
            continue
        kl = lin["las/kl"].dropna() if "las/kl" in lin else pd.Series(dtype=float)
        per_model.append({"arm": m["arm"], "epochs": float(lin["epoch"].iloc[-1]) if "epoch" in lin else float("nan"),
                          "attack_steps": _per_step(lin, "las/steps_mean", "hp/steps"),
                          "train_eps": _per_step(lin, "las/eps_mean", "hp/eps"),
                          "las_kl": float(kl.iloc[-1]) if len(kl) else float("nan")})
    if not per_model:
        return pd.DataFrame(columns=SPENDING_COLUMNS)
    table = pd.DataFrame(per_model)
    grouped = table.groupby("arm", sort=False)
    out = grouped[["epochs", "attack_steps", "train_eps", "las_kl"]].mean()
    out["n_models"], out["las_kl_min"] = grouped.size(), grouped["las_kl"].min()
    return out.reset_index()[SPENDING_COLUMNS]


def _cell(x, digits: int = 2) -> str:
    return "" if pd.isna(x) else f"{x:.{digits}f}"


def spending_lines(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return []
    lines = ["## How each arm spent its budget", "",
             "Cost view: (a), training grad evals. Means over each arm's final models: the epochs the budget bought, the "
             "attack steps and training eps per training step (a LAS arm's per-example choices where its strategy acted, "
             "else the schedule's), and for a LAS arm the KL divergence of its final strategy from its uniform start "
             "on 200 held-out digits (0: it did not move; min over the models beside it). Table `spending.csv`.", "",
             "| arm | models | epochs | attack steps | train eps | LAS KL (min) |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        kl = "" if pd.isna(r["las_kl"]) else f"{r['las_kl']:.2f} ({r['las_kl_min']:.2f})"
        lines.append(f"| {r['arm']} | {int(r['n_models'])} | {_cell(r['epochs'])} | {_cell(r['attack_steps'], 1)} | "
                     f"{_cell(r['train_eps'], 3)} | {kl} |")
    return lines + [""]
