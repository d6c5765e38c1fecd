"""The report stage of meta_learning_table.py: tables, paired differences and verdicts in markdown.

Cells are ``mean +- seed CI [+- task CI]`` in percent: the mean over training seeds of each seed's
mean over the meta-test tasks; the first half-width is the t-interval over seeds, the second the
t-interval over tasks of the seed-averaged per-task accuracies (see :mod:`analysis.fewshot`).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import pandas as pd

from analysis.fewshot import compare, load_per_task, method_table

__all__ = ["write_report"]


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _cell(row, seeds: int) -> str:
    """``mean +- seed CI [+- task CI]``; says so when fewer than the plan's ``seeds`` went in."""
    if row is None:
        return "n/a"
    seed = "" if math.isnan(row["seed_half"]) else f" +- {_pct(row['seed_half'])}"
    few = f" ({int(row['seeds'])} of {seeds} seeds)" if row["seeds"] < seeds else ""
    return f"{_pct(row['mean'])}{seed} [+- {_pct(row['task_half'])}]{few}"


def _lookup(table: pd.DataFrame, ways: int, method: str, eps: float):
    sel = table[(table["ways"] == ways) & (table["method"] == method) & ((table["eps"] - eps).abs() < 1e-12)]
    return None if sel.empty else sel.iloc[0]


def _costs(out: Path) -> pd.DataFrame:
    rows = []
    for metrics in sorted((out / "runs").glob("*way/*/seed*/metrics.csv")):
        last = pd.read_csv(metrics).iloc[-1]
        ways, method = int(metrics.parts[-4].removesuffix("way")), metrics.parts[-3]
        rows.append({"ways": ways, "method": method, "grad_evals": last["cost/grad_evals"], "steps": last["step"],
                     "seconds": last["cost/seconds"]})
    return pd.DataFrame(rows).groupby(["ways", "method"]).mean() if rows else pd.DataFrame()


def _chance_reach(table: pd.DataFrame, ways: int, method: str, eps_list, half: str) -> str:
    """The largest eps up to which ``mean - half-width > 1/ways`` at every swept eps."""
    reach = "none"
    for eps in eps_list:
        row = _lookup(table, ways, method, eps)
        if row is None or math.isnan(row[half]) or row["mean"] - row[half] <= 1 / ways:
            break
        reach = f"{eps:g}"
    return reach


def _method_rows(plan, ways, methods, tables, costs) -> list[str]:
    robust, clean, aa, pgd_on_aa, unrolled = tables
    n = len(plan.seeds)
    head = ["method", "grad evals", "outer steps", "clean %"] + [f"robust % eps {e:g}" for e in plan.eps]
    head += [f"PGD+AA % eps {plan.aa_eps:g} ({plan.aa_tasks} tasks)",
             f"unrolled support % eps {plan.aa_eps:g} ({plan.support_tasks} tasks)",
             "above chance up to eps (task CI / seed CI)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cost = costs.loc[(ways, m)] if (ways, m) in costs.index else None
        cells = [m, "n/a" if cost is None else f"{cost['grad_evals']:,.0f}",
                 "n/a" if cost is None else f"{cost['steps']:,.0f}", _cell(_lookup(clean, ways, m, plan.eps[0]), n)]
        cells += [_cell(_lookup(robust, ways, m, e), n) for e in plan.eps]
        pgd_same = _lookup(pgd_on_aa, ways, m, plan.aa_eps)  # PGD alone on the tasks AutoAttack ran on
        cells += [f"{_cell(_lookup(aa, ways, m, plan.aa_eps), n)} (PGD alone {_pct(None if pgd_same is None else pgd_same['mean'])})",
                  _cell(_lookup(unrolled, ways, m, plan.aa_eps), n)]
        cells.append(f"{_chance_reach(robust, ways, m, plan.eps, 'task_half')} / "
                     f"{_chance_reach(robust, ways, m, plan.eps, 'seed_half')}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _comparisons(plan, frame, unrolled_frame, methods) -> pd.DataFrame:
    # every arm against MAML; AQ against ADML, and the PGD control against both (if it ran)
    extra = [("aq", "adml"), ("aq", "adml_pgd"), ("adml_pgd", "adml")]
    pairs = [(m, "maml") for m in methods if m != "maml"] + [(a, b) for a, b in extra if {a, b} <= set(methods)]
    rows = []
    for ways in plan.ways:
        for a, b in pairs:
            for eps in plan.eps:
                rows.append({"ways": ways, "attack": "PGD", **compare(frame, a, b, eps=eps, ways=ways)})
            rows.append({"ways": ways, "attack": "PGD+AA",
                         **compare(frame, a, b, eps=plan.aa_eps, metric="aa_robust_acc", ways=ways)})
            rows.append({"ways": ways, "attack": "unrolled support + PGD",
                         **compare(unrolled_frame, a, b, eps=plan.aa_eps, ways=ways)})
    return pd.DataFrame(rows)


def _interval(lo, hi) -> str:
    return "n/a" if math.isnan(lo) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _verdicts(plan, frame, robust, methods) -> list[str]:
    lines = []
    for ways in plan.ways:
        for eps in plan.eps:
            means = {m: r["mean"] for m in methods if (r := _lookup(robust, ways, m, eps)) is not None}
            if len(means) < 2:
                continue
            best, second = sorted(means, key=means.get, reverse=True)[:2]
            c = compare(frame, best, second, eps=eps, ways=ways)
            lines.append(f"- {ways}-way, eps {eps:g}: most robust on unseen classes is **{best}** ({_pct(means[best])}%), "
                         f"ahead of {second} ({_pct(means[second])}%) by {100 * c['diff']:+.1f} points; task CI "
                         f"{_interval(c['task_lo'], c['task_hi'])}, seed CI {_interval(c['seed_lo'], c['seed_hi'])}: "
                         f"{'decided' if c['decided'] else 'not decided'} (chance {100 / ways:.1f}%).")
    return lines


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_report(plan, size: str, out: Path, methods) -> None:
    frame = load_per_task(sorted((out / "tests").glob("sweep_*.csv")))
    unrolled_frame = load_per_task(sorted((out / "tests").glob("unrolled_*.csv")))
    tables = (method_table(frame), method_table(frame, metric="clean_acc"), method_table(frame, metric="aa_robust_acc"),
              method_table(frame.dropna(subset=["aa_robust_acc"])), method_table(unrolled_frame))
    costs = _costs(out)
    comparisons = _comparisons(plan, frame, unrolled_frame, methods)
    frame.to_csv(out / "per_task.csv", index=False)
    comparisons.to_csv(out / "comparisons.csv", index=False)
    lines = [f"# Meta-learning on mnist5k-rot, size {size} (commit {_commit()}, {time.strftime('%Y-%m-%d')})", "",
             f"Budget (cost/grad_evals of meta-training) per ways: {json.dumps(plan.budget)}; seeds {list(plan.seeds)}; "
             f"{plan.tasks} meta-test tasks shared by all; PGD-{plan.pgd_steps} x {plan.restarts} restarts against the "
             f"adapted model; cells: mean +- seed CI [+- task CI], %.", ""]
    for ways in plan.ways:
        lines += [f"## {ways}-way 1-shot (chance {100 / ways:.1f}%)", ""]
        lines += _method_rows(plan, ways, methods, tables, costs) + [""]
    lines += ["## Verdicts (PGD sweep, clean support)", ""] + _verdicts(plan, frame, tables[0], methods) + [""]
    lines += ["## Paired differences a - b (points)", "",
              "| ways | attack | a - b | eps | diff | task CI | seed CI (seeds paired) | decided |",
              "|---|---|---|---|---|---|---|---|"]
    for _, c in comparisons.iterrows():
        diff = "n/a" if math.isnan(c["diff"]) else f"{100 * c['diff']:+.1f}"
        lines.append(f"| {c['ways']} | {c['attack']} | {c['a']} - {c['b']} | {c['eps']:g} | {diff} | "
                     f"{_interval(c['task_lo'], c['task_hi'])} | {_interval(c['seed_lo'], c['seed_hi'])} ({int(c['seed_n'])}) | "
                     f"{'yes' if c['decided'] else 'no'} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
