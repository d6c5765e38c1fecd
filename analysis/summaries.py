"""Summaries over a loaded frame: final models, arms, contrasts, curves, Pareto front, importance.

Robust accuracy is the ``metaadv evaluate`` verdict (``eval/robust_acc``, per-example worst case)
where a model has one; otherwise the last training-time validation (``val/robust_acc``), and the
``metric_source`` column says which. A verdict with ``eval/trusted`` False is **untrusted**: it is
never dropped. It is counted at its worst case (``robust_counted``): the measured robust accuracy
when a gradient-free Square attack was part of it (``--attacks ...,square``, or the standard
AutoAttack), else 0, since a masked model's gradient attacks say nothing of its robustness; it is
flagged (``n_untrusted``), and the report adds a sensitivity line without it. It never leads.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from .cost import arm_cost, model_cost
from .lineage import lineage_rows
from .stats import ALPHA, holm, mean_ci, min_detectable_effect, paired_diff

__all__ = ["final_models", "arm_summary", "contrasts", "robust_vs_cost", "pareto_front", "hp_importance",
           "schedules", "SCHEDULE_HPS", "model_lineage"]

# A training run's schedule; a meta-learning run's inner and outer learning rates where present.
SCHEDULE_HPS = ("hp/eps", "hp/steps", "hp/step_size", "hp/lr", "hp/inner_lr", "hp/meta_lr")
# The tables' columns, also when a study in progress has no final model (or no trusted one) yet.
FINAL_COLUMNS = ["arm", "model", "experiment", "trial", "seed", "pair", "method", "controller", "robust_acc", "clean_acc",
                 "metric_source", "trusted", "square", "robust_counted", "cost_a", "cost_a_validation"]
ARM_COLUMNS = ["arm", "n_models", "n_untrusted", "robust_mean", "robust_lo", "robust_hi", "clean_mean", "clean_lo",
               "clean_hi", "cost_a", "cost_b", "cost_b_total", "metric_source"]


def _untrusted(value) -> bool:
    return value is False or (isinstance(value, (bool, np.bool_)) and not value) or str(value) == "False"


def final_models(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per final model: ``arm, model, experiment, trial, seed, method, controller,
    robust_acc, clean_acc, metric_source ("eval" | "val"), trusted (True/False/NaN), cost_a,
    cost_a_validation``."""
    final = frame[frame["final_model"].astype(bool)].sort_values("report", kind="stable")
    if final.empty:
        return pd.DataFrame(columns=FINAL_COLUMNS)
    last = final.groupby(["arm", "model"], sort=False).tail(1).reset_index(drop=True)
    has_eval = last["eval/robust_acc"].notna() if "eval/robust_acc" in last else pd.Series(False, index=last.index)
    out = last[["arm", "model", "experiment", "trial", "seed", "method", "controller"]].copy()
    # What paired contrasts match on: a study's ``pair`` (a searched model's population), else the seed.
    out.insert(5, "pair", last["pair"].fillna(last["seed"]).to_numpy() if "pair" in last else last["seed"].to_numpy())
    out["robust_acc"] = np.where(has_eval, last.get("eval/robust_acc"), last.get("val/robust_acc")).astype(float)
    out["clean_acc"] = np.where(has_eval, last.get("eval/clean_acc"), last.get("val/clean_acc")).astype(float)
    out["metric_source"] = np.where(has_eval, "eval", "val")
    out["trusted"] = last["eval/trusted"] if "eval/trusted" in last else np.nan
    square = last["eval/per_attack/square"].notna() if "eval/per_attack/square" in last else pd.Series(False, index=last.index)
    aa = last["eval/aa_version"].astype(str) if "eval/aa_version" in last else pd.Series("", index=last.index)
    out["square"] = (square | aa.isin(["standard", "plus"])).to_numpy()
    untrusted = out["trusted"].map(_untrusted).astype(bool)
    out["robust_counted"] = np.where(untrusted & ~out["square"], 0.0, out["robust_acc"]).astype(float)
    costs = model_cost(frame)
    return out.merge(costs.drop(columns="seed"), on=["arm", "model"], how="left")


def _trusted(finals: pd.DataFrame) -> pd.DataFrame:
    return finals[~finals["trusted"].map(_untrusted).astype(bool)]  # bool even when empty: a mask, not columns


def arm_summary(frame: pd.DataFrame, finals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per arm: ``n_models, n_untrusted, robust_mean, robust_lo, robust_hi`` (every model, an
    untrusted one at its worst case ``robust_counted``; 95% t-CI over seeds), ``clean_mean,
    clean_lo, clean_hi``, ``cost_a`` (mean per-model budget), ``cost_b`` / ``cost_b_total`` (see
    :mod:`analysis.cost`), ``metric_source``."""
    finals = final_models(frame) if finals is None else finals
    if finals.empty:
        return pd.DataFrame(columns=ARM_COLUMNS)
    costs = arm_cost(frame).set_index("arm")
    rows = []
    for arm, group in finals.groupby("arm", sort=False):
        good = _trusted(group)
        r, c = mean_ci(group["robust_counted"]), mean_ci(group["clean_acc"])
        rows.append({"arm": arm, "n_models": len(group), "n_untrusted": len(group) - len(good),
                     "robust_mean": r["mean"], "robust_lo": r["lo"], "robust_hi": r["hi"],
                     "clean_mean": c["mean"], "clean_lo": c["lo"], "clean_hi": c["hi"],
                     "cost_a": group["cost_a"].mean(), "cost_b": costs.loc[arm, "cost_b"],
                     "cost_b_total": costs.loc[arm, "cost_b_total"],
                     "metric_source": "/".join(sorted(set(group["metric_source"])))})
    return pd.DataFrame(rows, columns=ARM_COLUMNS)


def contrasts(finals: pd.DataFrame, declared=None, *, trusted_only: bool = False, aim: dict | None = None) -> pd.DataFrame:
    """Paired differences of robust accuracy over shared seeds (an untrusted model at its worst
    case ``robust_counted``; ``trusted_only``: the sensitivity analysis without untrusted models):
    matched on ``pair`` (the seed; a searched model's population): one row per ``[arm_a, arm_b, question]`` in ``declared`` (study.json's), or every pair of arms
    when none is declared. Columns: ``a, b, question, mean, lo, hi, half, sd, n, p, p_holm, p_flip, p_flip_holm,
    excludes_zero, decided, seeds``: ``p`` the paired t-test's, ``p_flip`` the exact sign-flip test's,
    each Holm-adjusted across the rows; ``decided``: excludes zero and Holm-adjusted ``p`` < ALPHA.

    With the study's declared ``aim`` (study.json): ``aim_effect`` (its ``min_effect`` where the aim
    covers the contrast), ``meets_aim`` (decided, and a mean of at least that), ``mde`` (the minimum
    detectable effect at these pairs' spread and count, at ALPHA over the declared contrasts and
    80% power: :func:`analysis.stats.min_detectable_effect`) and ``mde_planned`` (the same at the
    aim's ``planned_seeds``): whether the study, as sized, could have seen the effect it aims at."""
    arms = list(dict.fromkeys(finals["arm"]))
    pairs = [tuple(c) + (("",) if len(c) == 2 else ()) for c in declared] if declared else \
        [(a, b, "") for a, b in itertools.combinations(arms, 2)]
    counted = _trusted(finals) if trusted_only else finals
    on = "pair" if "pair" in counted else "seed"
    rows = [{**paired_diff(counted, a, b, on=on, value="robust_counted"), "question": q} for a, b, q in pairs]
    for key in ("p", "p_flip"):
        for row, adjusted in zip(rows, holm([r[key] for r in rows])):
            row[f"{key}_holm"] = adjusted
    aim = aim or {}
    covered = set(aim.get("contrasts") or [f"{a} - {b}" for a, b, _ in pairs])
    planned = int(aim.get("planned_seeds") or 0)
    for row in rows:
        row["decided"] = bool(row["excludes_zero"] and row["p_holm"] < ALPHA)
        effect = float(aim["min_effect"]) if "min_effect" in aim and f"{row['a']} - {row['b']}" in covered else math.nan
        row["aim_effect"] = effect
        row["meets_aim"] = bool(row["decided"] and math.isfinite(effect) and row["mean"] >= effect)
        row["mde"] = min_detectable_effect(row["sd"], row["n"], m=len(rows))
        row["mde_planned"] = min_detectable_effect(row["sd"], planned, m=len(rows)) if planned else math.nan
    cols = ["a", "b", "question", "mean", "lo", "hi", "half", "sd", "n", "p", "p_holm", "p_flip", "p_flip_holm",
            "excludes_zero", "decided", "aim_effect", "meets_aim", "mde", "mde_planned", "seeds"]
    return pd.DataFrame(rows, columns=cols)


def model_lineage(frame: pd.DataFrame, model_row) -> pd.DataFrame:
    """A final model's rows, one per round: its PBT lineage across exploits, else its own trial's."""
    sub = frame[(frame["arm"] == model_row["arm"]) & (frame["model"] == model_row["model"])]
    if "pbt/segment" in frame and sub["pbt/segment"].fillna(0).max() > 0:
        return lineage_rows(frame[frame["arm"] == model_row["arm"]], model_row["experiment"], model_row["trial"])
    return sub.sort_values("report", kind="stable").drop_duplicates("round", keep="last")


def robust_vs_cost(frame: pd.DataFrame, finals: pd.DataFrame | None = None, points: int = 25) -> pd.DataFrame:
    """Per arm, validation robust accuracy along the trusted final models' lineages against cost (a):
    each model's ``val/robust_acc`` interpolated linearly in its cumulative training grad evals onto
    ``points`` costs evenly spread from the arm's first report to where its first model stops, then ``robust_mean, robust_lo, robust_hi``
    (95% t-CI) and ``n`` over the models whose run covers that cost. Columns ``arm, cost_a,
    robust_mean, robust_lo, robust_hi, n``. A cost grid, not rounds: arms whose rounds cost
    different amounts (PGD-1 vs PGD-10) are read at equal cost."""
    finals = final_models(frame) if finals is None else finals
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for _, m in _trusted(finals).iterrows():
        lin = model_lineage(frame, m)
        cost, robust = lin["cost/grad_evals"].to_numpy(dtype=float), lin["val/robust_acc"].to_numpy(dtype=float)
        ok = np.isfinite(cost) & np.isfinite(robust)
        if ok.any():
            curves.setdefault(m["arm"], []).append((cost[ok], robust[ok]))
    rows = []
    for arm, models in curves.items():
        # Up to where the first model stops (the budget): past it only the runs whose last round
        # overshot remain, and their mean would be no arm's.
        lo, hi = min(c[0] for c, _ in models), min(c[-1] for c, _ in models)
        for x in np.unique(np.linspace(lo, hi, points)):
            values = [np.interp(x, c, r) for c, r in models if c[0] <= x <= c[-1]]
            ci = mean_ci(pd.Series(values, dtype=float))
            rows.append({"arm": arm, "cost_a": float(x), "robust_mean": ci["mean"], "robust_lo": ci["lo"],
                         "robust_hi": ci["hi"], "n": ci["n"]})
    return pd.DataFrame(rows, columns=["arm", "cost_a", "robust_mean", "robust_lo", "robust_hi", "n"])


def pareto_front(finals: pd.DataFrame) -> pd.DataFrame:
    """Trusted final models no other beats on both clean and robust accuracy (higher is better),
    sorted by robust accuracy."""
    good = _trusted(finals).dropna(subset=["clean_acc", "robust_acc"])
    if good.empty:
        return good.reset_index(drop=True)
    pts = good[["clean_acc", "robust_acc"]].to_numpy(dtype=float)
    keep = [not any((o >= p).all() and (o > p).any() for o in pts) for p in pts]
    return good[keep].sort_values("robust_acc", ascending=False).reset_index(drop=True)


def schedules(frame: pd.DataFrame, finals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per arm, the schedule (``round`` + ``hp/eps, hp/steps, hp/step_size, hp/lr``, and a meta run's
    ``hp/inner_lr, hp/meta_lr``, those present) of its best trusted final model, with ``arm`` and
    ``model``: the schedules side by side."""
    finals = final_models(frame) if finals is None else finals
    parts = []
    for arm, g in _trusted(finals).groupby("arm", sort=False):
        best = g.sort_values("robust_acc", ascending=False).iloc[0]
        lin = model_lineage(frame, best)
        cols = ["round", *[c for c in SCHEDULE_HPS if c in lin]]
        parts.append(lin[cols].assign(arm=arm, model=best["model"]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["arm", "model", "round"])


def hp_importance(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Optuna's fANOVA and mean-decrease-impurity importances of the searched hyperparameters over
    **random-search trials**: trials of non-PBT tune experiments, not replays or policies, whose
    ``hp/*`` stay constant over their rows. Searched = an ``hp/*`` that differs between trials; one
    that only repeats another's values trial by trial (``hp/eps_start`` = ``hp/eps`` without a ramp)
    is left out, so the two do not split one importance. Objective: the trial's robust
    accuracy (verdict, else last validation). Columns: ``experiment, param, importance, evaluator,
    n_trials``; empty where fewer than 3 trials or nothing varies."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    tuned = frame[~frame["controller"].isin(["pbt", "replay", "policy"]) & frame["source"].notna()]
    for exp, group in tuned.groupby("experiment", sort=False):
        hps = [c for c in group if c.startswith("hp/") and c != "hp/step_size"]
        per_trial = group.groupby("trial", sort=False)
        fixed = per_trial[hps].nunique(dropna=False).le(1).all(axis=1)
        trials = fixed[fixed].index
        if len(trials) < 3:
            continue
        last = per_trial.tail(1).set_index("trial").loc[trials]
        target = (last["eval/robust_acc"].fillna(last["val/robust_acc"]) if "eval/robust_acc" in last
                  else last["val/robust_acc"]).astype(float)
        searched, seen = [], set()
        for c in hps:
            values = tuple(last[c].astype(float))
            if last[c].astype(float).nunique() > 1 and values not in seen:
                searched.append(c)
                seen.add(values)
        ok = target.map(math.isfinite)
        if not searched or ok.sum() < 3:
            continue
        dists = {c: FloatDistribution(float(last[c].min()), float(last[c].max())) for c in searched}
        study = optuna.create_study(direction="maximize")
        for tid in target[ok].index:
            study.add_trial(optuna.trial.create_trial(params={c: float(last.loc[tid, c]) for c in searched},
                                                      distributions=dists, value=float(target[tid])))
        for name, ev in (("fanova", FanovaImportanceEvaluator(seed=seed)),
                         ("mean_decrease_impurity", MeanDecreaseImpurityImportanceEvaluator(seed=seed))):
            for param, value in optuna.importance.get_param_importances(study, evaluator=ev).items():
                rows.append({"experiment": exp, "param": param, "importance": float(value), "evaluator": name,
                             "n_trials": int(ok.sum())})
    return pd.DataFrame(rows, columns=["experiment", "param", "importance", "evaluator", "n_trials"])
