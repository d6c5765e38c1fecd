"""PNG plots with matplotlib (Agg backend: no display needed). Each function writes one file."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["plot_robust_vs_cost", "plot_schedules", "plot_pareto", "plot_per_seed", "plot_attacks",
           "plot_exploit_tree", "arm_colors", "arm_styles"]

_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def arm_colors(arms) -> dict:
    """One colour per arm, by its position in ``arms`` (give every arm of the report, declared order
    first: a plot showing only some arms still draws each in its own colour). Ten arms or fewer get
    tab10, more get tab20, so no two arms share a colour up to twenty."""
    names = list(dict.fromkeys(arms))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {arm: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, arm in enumerate(names)}


def arm_styles(arms) -> dict:
    """One (line style, marker) per arm, by its position in ``arms``, so arms stay apart where lines overlap."""
    return {arm: (_LINESTYLES[i % len(_LINESTYLES)], _MARKERS[i % len(_MARKERS)])
            for i, arm in enumerate(dict.fromkeys(arms))}


def _tag(artist, arm: str):
    """Mark an arm's artists (``gid`` ``arm:<name>``, recursing into containers such as an errorbar's):
    what a test reads to check that each arm keeps its colour."""
    if isinstance(artist, (list, tuple)):
        for part in artist:
            _tag(part, arm)
    elif artist is not None and hasattr(artist, "set_gid"):
        artist.set_gid(f"arm:{arm}")
    return artist


def _percent(values):
    return pd.Series(values, dtype=float) * 100


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clipped_err(a) -> list[list[float]]:
    """Error bars (points) of an arm's robust-accuracy CI, drawn inside [0, 100]: a t-interval over
    few seeds can reach past what an accuracy can be (the tables keep the interval as computed)."""
    lo, hi = max(float(a["robust_lo"]), 0.0), min(float(a["robust_hi"]), 1.0)
    return [[100 * (a["robust_mean"] - lo)], [100 * (hi - a["robust_mean"])]]


def _has_ci(a) -> bool:
    """An interval is drawn from 3 models up (below, the models are drawn instead: see the tables)."""
    return not pd.isna(a["robust_lo"]) and int(a["n_models"]) >= 3


def plot_robust_vs_cost(curves: pd.DataFrame, arms: pd.DataFrame, path: Path, colors: dict | None = None) -> Path:
    """Left: validation robust accuracy (%) against cumulative cost (a) per arm, mean over the final
    models with its 95% CI band where at least 3 models reach that cost. Right: final robust
    accuracy (mean; 95% CI from 3 models) against cost (b)."""
    colors = colors or arm_colors(arms["arm"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, g in curves.groupby("arm", sort=False):
        _tag(left.plot(g["cost_a"], _percent(g["robust_mean"]), marker=".", label=arm, color=colors.get(arm)), arm)
        band = g["n"] >= 3
        if band.any():
            _tag(left.fill_between(g["cost_a"], _percent(g["robust_lo"].clip(0, 1)), _percent(g["robust_hi"].clip(0, 1)),
                                   where=band.to_numpy(), alpha=0.2, color=colors.get(arm)), arm)
    left.set(xlabel="cumulative training grad evals per model (cost a)", ylabel="val robust acc (%)",
             title="robust accuracy vs cost (a)")
    if len(curves):
        left.legend(fontsize=8)
    drawn = arms.dropna(subset=["robust_mean", "cost_b"])
    for _, a in drawn.iterrows():
        _tag(right.errorbar([a["cost_b"]], [100 * a["robust_mean"]], yerr=_clipped_err(a) if _has_ci(a) else None,
                            fmt="o", capsize=4, label=a["arm"], color=colors.get(a["arm"])), a["arm"])
    right.set(xlabel="grad evals per final model, all the arm ran (cost b)", ylabel="final robust acc (%)",
              title="final robust accuracy vs cost (b)")
    if len(drawn):
        right.legend(fontsize=8)
    return _save(fig, path)


def _dodge(position: int, count: int) -> float:
    """A small horizontal offset per arm (in category steps), so equal values do not hide one another."""
    width = min(0.3, 0.6 / max(count, 1))
    return (position - (count - 1) / 2) * width


def plot_schedules(sched: pd.DataFrame, path: Path, colors: dict | None = None, styles: dict | None = None) -> Path:
    """eps, attack steps, step size and lr (a meta run's inner/meta lr) over rounds of each arm's best
    model, as small multiples: one row of panels per arm (its colour, line style and marker), one
    column per hyperparameter with a shared y axis. An arm whose schedule equals another's has its own
    panel, so no arm hides under another (a flat schedule would, overlaid, whatever the offset)."""
    colors = colors or arm_colors(sched["arm"])
    styles = styles or arm_styles(colors)
    cols = [c for c in ("hp/eps", "hp/steps", "hp/step_size", "hp/lr", "hp/inner_lr", "hp/meta_lr")
            if c in sched and sched[c].notna().any()]
    arms = list(dict.fromkeys(sched["arm"]))
    nrows, ncols = max(1, len(arms)), max(1, len(cols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 1.4 * nrows + 0.8), squeeze=False,
                             sharex=True, sharey="col")
    for row, arm in enumerate(arms):
        g = sched[sched["arm"] == arm]
        line, marker = styles.get(arm, ("-", "."))
        for ax, col in zip(axes[row], cols):
            _tag(ax.step(g["round"], g[col], where="mid", marker=marker, linestyle=line, label=arm,
                         color=colors.get(arm), markersize=4), arm)
            if col.endswith("lr"):
                ax.set_yscale("log")
            if row == 0:
                ax.set_title(col.removeprefix("hp/"))
        axes[row][0].set_ylabel(arm, rotation=0, ha="right", va="center", color=colors.get(arm), fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("round")
    return _save(fig, path)


def plot_pareto(finals: pd.DataFrame, front: pd.DataFrame, path: Path, colors: dict | None = None) -> Path:
    """Clean vs robust accuracy (%) of every final model (untrusted as crosses); the Pareto front
    joined by a line (ringed, when it is a single model). The legend lists exactly what is drawn:
    an arm only where it has a point, the untrusted cross and the front only where there are some."""
    from matplotlib.lines import Line2D

    colors = colors or arm_colors(finals["arm"])
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    handles = []
    any_bad = False
    for arm, g in finals.dropna(subset=["clean_acc", "robust_acc"]).groupby("arm", sort=False):
        bad = g["trusted"].map(lambda v: str(v) == "False")
        if (~bad).any():
            _tag(ax.scatter(_percent(g.loc[~bad, "clean_acc"]), _percent(g.loc[~bad, "robust_acc"]), alpha=0.8,
                            color=colors.get(arm)), arm)
        if bad.any():
            any_bad = True
            _tag(ax.scatter(_percent(g.loc[bad, "clean_acc"]), _percent(g.loc[bad, "robust_acc"]), marker="x",
                            color=colors.get(arm)), arm)
        handles.append(Line2D([], [], linestyle="", marker="o" if (~bad).any() else "x", color=colors.get(arm), label=arm))
    if any_bad:
        handles.append(Line2D([], [], linestyle="", marker="x", color="0.3", label="untrusted"))
    if len(front):
        f = front.sort_values("clean_acc")
        if len(f) > 1:
            ax.plot(_percent(f["clean_acc"]), _percent(f["robust_acc"]), "k--", lw=1)
            handles.append(Line2D([], [], color="k", linestyle="--", lw=1, label="Pareto front"))
        else:
            ax.scatter(_percent(f["clean_acc"]), _percent(f["robust_acc"]), s=160, facecolors="none", edgecolors="k")
            handles.append(Line2D([], [], linestyle="", marker="o", markersize=11, markerfacecolor="none",
                                  color="k", label="Pareto front (one model)"))
    ax.set(xlabel="clean acc (%)", ylabel="robust acc (%)", title="clean vs robust (final models)")
    if handles:
        ax.legend(handles=handles, fontsize=8)
    return _save(fig, path)


def plot_per_seed(finals: pd.DataFrame, arms: pd.DataFrame, path: Path, colors: dict | None = None) -> Path:
    """Final robust accuracy (%) per seed (dots; untrusted verdicts as crosses), each arm in its
    colour, and the arm's mean (square) with its 95% CI from 3 models up."""
    colors = colors or arm_colors(arms["arm"])
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(arms) + 2), 4))
    names = list(arms["arm"])
    for i, arm in enumerate(names):
        g = finals[finals["arm"] == arm]
        bad = g["trusted"].map(lambda v: str(v) == "False")
        color = colors.get(arm)
        _tag(ax.scatter([i] * int((~bad).sum()), _percent(g.loc[~bad, "robust_acc"]), color=color, zorder=3), arm)
        _tag(ax.scatter([i] * int(bad.sum()), _percent(g.loc[bad, "robust_acc"]), color=color, marker="x", zorder=3), arm)
        a = arms.iloc[i]
        if not pd.isna(a["robust_mean"]):
            _tag(ax.errorbar([i + 0.15], [100 * a["robust_mean"]], yerr=_clipped_err(a) if _has_ci(a) else None,
                             fmt="s", color=color, capsize=4), arm)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set(ylabel="final robust acc (%)", title="per seed (x = untrusted), mean and 95% CI (from 3 models)")
    return _save(fig, path)


def plot_attacks(breakdown: pd.DataFrame, path: Path, colors: dict | None = None, styles: dict | None = None) -> Path:
    """Per arm, mean accuracy (%) at each stage: clean, each attack alone, the worst case
    (:func:`analysis.breakdown.attack_breakdown`)."""
    colors = colors or arm_colors(breakdown["arm"])
    styles = styles or arm_styles(colors)
    stages = [c for c in breakdown.columns if c not in ("arm", "n_models", "n_untrusted")]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(stages) + 2), 4))
    for i, (_, r) in enumerate(breakdown.iterrows()):
        line, marker = styles.get(r["arm"], ("-", "o"))
        x = [k + _dodge(i, len(breakdown)) / 2 for k in range(len(stages))]  # arms with equal values side by side
        _tag(ax.plot(x, _percent([r[s] for s in stages]), marker=marker, linestyle=line,
                     color=colors.get(r["arm"]), label=r["arm"]), r["arm"])
    ax.set_xticks(range(len(stages)), ["worst case" if s == "robust" else s for s in stages])
    ax.set(ylabel="accuracy (%)", title="clean -> each attack alone -> worst case (mean over models)")
    if len(breakdown):
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_exploit_tree(tree: pd.DataFrame, path: Path, colors: dict | None = None) -> Path:
    """One panel per PBT experiment: each trial a row, each of its segments a bar along cumulative
    training grad evals (from where it started to its last report); an arrow from the donor's row
    to the target's at the cost where the target was cloned, labelled with the round it resumed
    at. Segments a final model descends from are thick, in the arm's colour; a star ends each final model."""
    colors = colors or arm_colors(tree["arm"])
    groups = list(tree.groupby(["arm", "experiment"], sort=False))
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 0.5 * tree["trial"].nunique() + 1.8 * len(groups)),
                             squeeze=False)
    for ax, ((arm, exp), g) in zip(axes[:, 0], groups):
        trials = sorted(g["trial"].unique())
        y = {t: i for i, t in enumerate(trials)}
        color = colors.get(arm)
        for _, s in g.iterrows():
            final = bool(s["in_final"])
            ax.plot([s["start_cost"], s["end_cost"]], [y[s["trial"]]] * 2, lw=1.5, color="0.6")
            if final:  # thick only as far as the final model's lineage runs along it
                _tag(ax.plot([s["start_cost"], s["final_until_cost"]], [y[s["trial"]]] * 2, lw=4, color=color,
                             solid_capstyle="butt"), arm)
            if s["donor"] in y:
                ax.annotate("", xy=(s["start_cost"], y[s["trial"]]), xytext=(s["start_cost"], y[s["donor"]]),
                            arrowprops={"arrowstyle": "->", "color": color if final else "0.4", "lw": 1.2})
                ax.text(s["start_cost"], y[s["trial"]] + 0.15, f"r{int(s['first_round'])}", fontsize=7, ha="left")
        ends = g[g["final_model"].astype(bool)].sort_values("segment").groupby("trial").tail(1)
        _tag(ax.scatter(ends["end_cost"], [y[t] for t in ends["trial"]], marker="*", s=160, color=color, zorder=4), arm)
        ax.set_yticks(range(len(trials)), trials)
        ax.set(xlabel="cumulative training grad evals of the lineage", title=f"{arm}: PBT exploits in {exp} "
               "(arrow: donor -> clone, rN: round resumed at; thick: final model's lineage)")
        ax.title.set_fontsize(9)
    return _save(fig, path)
