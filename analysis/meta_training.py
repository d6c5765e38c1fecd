"""The report's meta-training section: what a deployed (meta-trained) policy cost, and at how many
deployed models that cost breaks even with the best hand-made arm's (cost view b)."""

from __future__ import annotations

from .cost import arm_cost
from .sentences import num

__all__ = ["meta_training_lines"]


def meta_training_lines(t: dict) -> list[str]:
    """Each deployed (meta-trained) arm's meta-training cost, in total and as the number of deployed
    models at which its cost (b) per model, meta-training shared among them, falls to the best
    hand-made arm's (a fixed schedule; the highest robust mean among them)."""
    from metaadv.training.policy_train import break_even_models

    frame, arms = t["results"], t["arms"]
    if "cost/meta_training" not in frame or frame["cost/meta_training"].dropna().empty:
        return []
    costs = arm_cost(frame).set_index("arm")
    handmade = [a for a in frame.loc[frame["controller"] == "schedule", "arm"].unique() if costs.loc[a, "cost_b_meta"] == 0]
    ranked = arms[arms["arm"].isin(handmade)].sort_values("robust_mean", ascending=False)
    lines = ["## Meta-training", "", "Cost view: (b). A meta-trained policy's episodes are paid once, shared by every "
             "model it is deployed on."]
    for arm, c in costs[costs["cost_b_meta"] > 0].iterrows():
        own = (c["cost_b_total"] - c["cost_b_meta"]) / c["n_models"] if c["n_models"] else float("nan")
        line = f"- **{arm}**: meta-training {num(c['cost_b_meta'])} grad evals in all; {num(own)} per deployed model besides."
        if len(ranked):
            best = ranked.iloc[0]["arm"]
            n = break_even_models(c["cost_b_meta"], own, costs.loc[best, "cost_b"])
            line += (f" Against {best} ({num(costs.loc[best, 'cost_b'])} per model, the best hand-made arm): "
                     + (f"breaks even at {n} deployed models." if n else "never breaks even (its own per-model cost, "
                        "decisions included, is not below the hand-made arm's)."))
        lines.append(line)
    return lines + [""]
