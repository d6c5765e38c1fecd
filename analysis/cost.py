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
  validation a decision really read (``decision_read`` rows, :func:`decision_reads`: PBT reads a
  trial's validation at its perturbation points and its population's pick at the end, a random
  search at the end only; the validation every round computes for the log is not charged), plus the
  policy controller's reward checks (``cost/reward_grad_evals``: validation its choices read, always
  counted; zero for other runs), plus, for an arm built from another (a replay of a searched
  schedule, a transferred policy: study.json ``arms.ARM.source``), its source's cost (b) per model
  for each of its models (``cost_b_source``): a replayed schedule carries its search; plus, for a
  deployed meta-trained policy, its whole meta-training once (``cost_b_meta``, every episode's work).
  ``cost_b_total`` is the sum; ``cost_b`` is per final model (``cost_b_total / n_models``),
  comparable with (a).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._lineage import lineage_rows

__all__ = ["add_round_costs", "model_cost", "arm_cost", "decision_reads"]

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


def decision_reads(costs, interval: float | None, burn_in: float = 0.0) -> list[bool]:
    """Which of one trial's rows (cumulative ``costs``, in report order) a search decision read.

    ``interval`` None (a random search): the last row only, where the search picks. Otherwise PBT's
    rule in its time attribute: a trial's validation is read when at least ``interval`` has passed
    since its last read and ``burn_in`` is over (Ray's ``perturbation_interval`` and
    ``burn_in_period``), and at the last row, where the population's best is picked."""
    costs = [float(c) for c in costs]
    reads = [False] * len(costs)
    if not costs:
        return reads
    if interval:
        last = 0.0
        for i, t in enumerate(costs):
            if t - last >= interval and t >= burn_in:
                reads[i], last = True, t
    reads[-1] = True
    return reads


def arm_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Cost (b) per arm: ``arm, n_trials, n_models, cost_b_train, cost_b_validation, cost_b_reward,
    cost_b_source, cost_b_total, cost_b`` (see the module doc). NaN where a row's inherited cost could not be found in the logs."""
    read = "decision_read" if "decision_read" in frame else "decision_validation"
    rows = []
    for arm, group in frame.groupby("arm", sort=False):
        train = group["cost/round_grad_evals"].sum(min_count=1, skipna=False)
        counted = group[group[read].fillna(False).astype(bool)]
        val = (counted["cost/round_eval_grad_evals"].sum(skipna=False)
               if "cost/round_eval_grad_evals" in counted and len(counted) else 0.0)
        reward = (group["cost/round_reward_grad_evals"].sum(skipna=False)
                  if "cost/round_reward_grad_evals" in group else 0.0)
        n_models = group.loc[group["final_model"].astype(bool), "model"].nunique()
        # A deployed policy's meta-training (every episode's work), once for the arm: its models share it.
        meta = group["cost/meta_training"].dropna() if "cost/meta_training" in group else pd.Series(dtype=float)
        meta = float(meta.iloc[0]) if len(meta) else 0.0  # other arms' rows hold NaN in the shared column
        total = float(train) + float(val) + float(reward) + meta
        source = group["cost_source"].dropna().iloc[0] if "cost_source" in group and group["cost_source"].notna().any() else None
        rows.append({"arm": arm, "n_trials": group[["experiment", "trial"]].drop_duplicates().shape[0],
                     "n_models": n_models, "cost_b_train": float(train), "cost_b_validation": float(val),
                     "cost_b_reward": float(reward), "cost_b_meta": meta, "cost_b_source": 0.0, "_source": source,
                     "cost_b_total": total, "cost_b": total / n_models if n_models else np.nan})
    out = pd.DataFrame(rows, columns=["arm", "n_trials", "n_models", "cost_b_train", "cost_b_validation", "cost_b_reward",
                                      "cost_b_meta", "cost_b_source", "_source", "cost_b_total", "cost_b"])
    own = out.set_index("arm")["cost_b"].to_dict()  # before carrying: a source's own cost (b) per model
    for i, r in out.iterrows():
        if isinstance(r["_source"], str):
            carried = own.get(r["_source"], np.nan) * r["n_models"]  # unknown if the source is not loaded
            out.loc[i, "cost_b_source"] = carried
            out.loc[i, "cost_b_total"] = r["cost_b_total"] + carried
            out.loc[i, "cost_b"] = out.loc[i, "cost_b_total"] / r["n_models"] if r["n_models"] else np.nan
    return out.drop(columns="_source")
