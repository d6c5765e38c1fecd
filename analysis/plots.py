"""PNG plots with matplotlib (Agg backend: no display needed). Each function writes one file."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["plot_robust_vs_cost", "plot_schedules", "plot_pareto", "plot_per_seed", "arm_colors"]


def arm_colors(arms) -> dict:
    """One colour per arm, the same in every plot."""
    return {arm: f"C{i % 10}" for i, arm in enumerate(dict.fromkeys(arms))}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clipped_err(a) -> list[list[float]]:
    """Error bars of an arm's robust-accuracy CI, drawn inside [0, 1]: a t-interval over few seeds
    can reach past what an accuracy can be (the tables keep the interval as computed)."""
    lo, hi = max(float(a["robust_lo"]), 0.0), min(float(a["robust_hi"]), 1.0)
    return [[a["robust_mean"] - lo], [hi - a["robust_mean"]]]


def plot_robust_vs_cost(curves: pd.DataFrame, arms: pd.DataFrame, path: Path, colors: dict | None = None) -> Path:
    """Left: validation robust accuracy against cumulative cost (a) per arm, mean over the final
    models with its 95% CI band. Right: final robust accuracy (mean, 95% CI) against cost (b)."""
    colors = colors or arm_colors(arms["arm"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, g in curves.groupby("arm", sort=False):
        left.plot(g["cost_a"], g["robust_mean"], marker=".", label=arm, color=colors.get(arm))
        left.fill_between(g["cost_a"], g["robust_lo"].clip(0, 1), g["robust_hi"].clip(0, 1), alpha=0.2,
                          color=colors.get(arm))
    left.set(xlabel="cumulative training grad evals per model (cost a)", ylabel="val robust acc",
             title="robust accuracy vs cost (a)")
    left.legend(fontsize=8)
    for _, a in arms.iterrows():
        err = _clipped_err(a)
        right.errorbar([a["cost_b"]], [a["robust_mean"]], yerr=None if pd.isna(a["robust_lo"]) else err,
                       fmt="o", capsize=4, label=a["arm"], color=colors.get(a["arm"]))
    right.set(xlabel="grad evals per final model, all the arm ran (cost b)", ylabel="final robust acc",
              title="final robust accuracy vs cost (b)")
    right.legend(fontsize=8)
    return _save(fig, path)


def plot_schedules(sched: pd.DataFrame, path: Path, colors: dict | None = None) -> Path:
    """eps, attack steps, step size and lr (a meta run's inner/meta lr) over rounds, one line per arm
    (its best model)."""
    colors = colors or arm_colors(sched["arm"])
    cols = [c for c in ("hp/eps", "hp/steps", "hp/step_size", "hp/lr", "hp/inner_lr", "hp/meta_lr")
            if c in sched and sched[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(3.2 * max(1, len(cols)), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        for arm, g in sched.groupby("arm", sort=False):
            ax.step(g["round"], g[col], where="mid", marker=".", label=arm, color=colors.get(arm))
        ax.set(xlabel="round", title=col.removeprefix("hp/"))
        if col.endswith("lr"):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_pareto(finals: pd.DataFrame, front: pd.DataFrame, path: Path, colors: dict | None = None) -> Path:
    """Clean vs robust accuracy of every final model; the Pareto front joined by a line."""
    colors = colors or arm_colors(finals["arm"])
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for arm, g in finals.groupby("arm", sort=False):
        bad = g["trusted"].map(lambda v: str(v) == "False")
        ax.scatter(g.loc[~bad, "clean_acc"], g.loc[~bad, "robust_acc"], label=arm, alpha=0.8, color=colors.get(arm))
        ax.scatter(g.loc[bad, "clean_acc"], g.loc[bad, "robust_acc"], marker="x", color=colors.get(arm))
    if len(front):
        f = front.sort_values("clean_acc")
        ax.plot(f["clean_acc"], f["robust_acc"], "k--", lw=1, label="Pareto front")
    ax.set(xlabel="clean acc", ylabel="robust acc", title="clean vs robust (final models; x = untrusted)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_per_seed(finals: pd.DataFrame, arms: pd.DataFrame, path: Path) -> Path:
    """Final robust accuracy per seed (dots; untrusted verdicts as crosses) and the arm's mean with CI."""
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(arms) + 2), 4))
    names = list(arms["arm"])
    for i, arm in enumerate(names):
        g = finals[finals["arm"] == arm]
        bad = g["trusted"].map(lambda v: str(v) == "False")
        ax.scatter([i] * int((~bad).sum()), g.loc[~bad, "robust_acc"], color="C0", zorder=3)
        ax.scatter([i] * int(bad.sum()), g.loc[bad, "robust_acc"], color="C3", marker="x", zorder=3)
        a = arms.iloc[i]
        if not pd.isna(a["robust_lo"]):
            ax.errorbar([i + 0.15], [a["robust_mean"]], yerr=_clipped_err(a), fmt="s", color="k", capsize=4)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set(ylabel="final robust acc", title="per seed (x = untrusted), mean and 95% CI")
    return _save(fig, path)
