"""Cost at equal footing: per-round work, per-model cost (a) and per-arm cost (b).

Units are gradient evaluations (forward+backward passes summed over examples, the row's
``cost/grad_evals``; ``cost/eval_grad_evals`` for the per-round validation attack).

- **Per-round work** (:func:`add_round_costs`): ``cost/round_grad_evals`` and
  ``cost/round_eval_grad_evals`` = a row's cumulative value minus the one before it *in the same
  trial's lineage*. After a PBT exploit a trial's cumulative counters continue from the donor's
  checkpoint: the first row of a segment subtracts the inherited value
  (``cost/inherited_grad_evals``, ``cost/inherited_eval_grad_evals``: the lineage row before the
  segment's first round), so work the donor did is never counted again. A diverged trial's last
  row (``status == "diverged"``) logs no counters: its partial round counts 0.
- **Cost (a)**, :func:`model_cost`: the per-model training budget, ``cost/grad_evals`` of the final
  model's last row (its whole lineage; what every single run and replay stops at).
- **Cost (b)**, :func:`arm_cost`: everything an arm ran to produce its final models: the per-round
  training work of every row of every trial it ran (PBT populations, searches, reruns), plus the
  per-round validation work of the arms whose validation informs a decision
  (``decision_validation``), plus the policy controller's reward checks
  (``cost/reward_grad_evals``: validation its choices read, always counted; zero for other runs).
  ``cost_b_total`` is the sum; ``cost_b`` is per final model (``cost_b_total / n_models``),
  comparable with (a).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._lineage import lineage_rows

__all__ = ["add_round_costs", "model_cost", "arm_cost"]

COUNTERS = (("cost/grad_evals", "cost/round_grad_evals", "cost/inherited_grad_evals"),
            ("cost/eval_grad_evals", "cost/round_eval_grad_evals", "cost/inherited_eval_grad_evals"),
            ("cost/reward_grad_evals", "cost/round_reward_grad_evals", "cost/inherited_reward_grad_evals"))


def _segment_keys(frame: pd.DataFrame) -> list[str]:
    return ["experiment", "trial"] + (["pbt/segment"] if "pbt/segment" in frame else [])


def add_round_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the per-round and inherited cost columns (see the module doc) to one loaded source."""
    frame = frame.copy()
    counters = [c for c in COUNTERS if c[0] in frame]
    for _, _, inherited in counters:
        frame[inherited] = 0.0
    if "pbt/segment" in frame:
        for (exp, trial, seg), rows in frame.groupby(["experiment", "trial", "pbt/segment"], sort=False):
            first, donor = int(rows["round"].min()), rows["pbt/donor"].iloc[0]
            if seg == 0 or first <= 1:
                continue
            values = {c[2]: np.nan for c in counters}
            if isinstance(donor, str):
                lineage = lineage_rows(frame, exp, donor, int(rows["pbt/donor_segment"].iloc[0]))
                before = lineage[lineage["round"] == first - 1]
                if len(before):
                    values = {c[2]: float(before[c[0]].iloc[0]) for c in counters}
            for col, value in values.items():
                frame.loc[rows.index, col] = value
    keys = _segment_keys(frame)
    for cumulative, per_round, inherited in counters:
        previous = frame.groupby(keys, sort=False)[cumulative].shift(1)
        frame[per_round] = frame[cumulative] - previous.fillna(frame[inherited])
        if "status" in frame:
            # A diverged trial's last row logs no counters: that partial round's work is unknown, not counted.
            frame.loc[frame["status"] == "diverged", per_round] = 0.0
    return frame


def model_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Cost (a) per final model: ``arm, model, seed, cost_a`` (training grad evals of the final
    model's whole lineage) and ``cost_a_validation`` (its lineage's validation grad evals)."""
    final = frame[frame["final_model"].astype(bool)]
    last = final.sort_values("report", kind="stable").groupby(["arm", "model"], sort=False).tail(1)
    out = last[["arm", "model", "seed"]].copy()
    out["cost_a"] = last["cost/grad_evals"].to_numpy(dtype=float)
    out["cost_a_validation"] = (last["cost/eval_grad_evals"].to_numpy(dtype=float)
                                if "cost/eval_grad_evals" in last else np.nan)
    return out.reset_index(drop=True)


def arm_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Cost (b) per arm: ``arm, n_trials, n_models, cost_b_train, cost_b_validation, cost_b_reward,
    cost_b_total, cost_b`` (see the module doc). NaN where a row's inherited cost could not be found in the logs."""
    rows = []
    for arm, group in frame.groupby("arm", sort=False):
        train = group["cost/round_grad_evals"].sum(min_count=1, skipna=False)
        counted = group[group["decision_validation"].astype(bool)]
        val = (counted["cost/round_eval_grad_evals"].sum(skipna=False)
               if "cost/round_eval_grad_evals" in counted and len(counted) else 0.0)
        reward = (group["cost/round_reward_grad_evals"].sum(skipna=False)
                  if "cost/round_reward_grad_evals" in group else 0.0)
        n_models = group.loc[group["final_model"].astype(bool), "model"].nunique()
        total = float(train) + float(val) + float(reward)
        rows.append({"arm": arm, "n_trials": group[["experiment", "trial"]].drop_duplicates().shape[0],
                     "n_models": n_models, "cost_b_train": float(train), "cost_b_validation": float(val),
                     "cost_b_reward": float(reward),
                     "cost_b_total": total, "cost_b": total / n_models if n_models else np.nan})
    return pd.DataFrame(rows)
