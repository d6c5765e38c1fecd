"""The few-shot section of ``metaadv analyze`` for a meta study (study.json ``"kind": "meta"``).

From the per-task CSVs beside the verdicts (:func:`analysis.fewshot.study_per_task`): per arm, the
eps sweep, AutoAttack and the support-attack pass as ``mean +- seed CI [+- task CI]`` (the mean
over training seeds of each seed's mean over the shared meta-test tasks; the t interval over seeds;
the t interval over tasks of the seed-averaged per-task accuracies; below 3 seeds each seed's value
instead of the seed interval), and for every declared
contrast the task-level and seed-level paired differences (:func:`analysis.fewshot.compare`) at
every eps. Formerly ``benchmarks/meta_learning_report.py``.

**Declared and exploratory.** The declared family is each declared contrast at each eps of the
judge's ``contrast_eps`` (the headline eps alone when absent), read by the strongest measure run
there (PGD + AutoAttack [+ Square] where AutoAttack ran at that eps, else PGD); the seed-level
t-test p-values of that family, and only of it, are Holm-adjusted together
(:func:`analysis.stats.holm`), and a declared row is *decided* when its Holm-adjusted seed p is
below :data:`analysis.stats.ALPHA` and both its task and seed intervals exclude zero on that side
(from at least :data:`analysis.stats.MIN_PAIRS` varying seeds). Every other row (other eps, the
other measures, the support attack) is exploratory: shown, never decided.

**Verdict rows** (``fewshot_verdicts``), per ways and eps: the arm with the highest mean among
those above chance (``mean - task half-width > 1/ways``, :func:`most_robust_above_chance`), and
its lead over the next arm; where no arm is above chance, none is named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .fewshot import compare, method_table, study_per_task
from .stats import ALPHA, MIN_PAIRS, holm

__all__ = ["contrast_eps", "fewshot_tables", "fewshot_lines", "most_robust_above_chance", "SWEEP_COLUMNS", "CONTRAST_COLUMNS",
           "VERDICT_COLUMNS"]

SWEEP_COLUMNS = ["study", "measure", "dataset", "ways", "shots", "arm", "eps", "mean", "seed_half", "seeds",
                 "task_half", "tasks", "seed_values"]
CONTRAST_COLUMNS = ["study", "a", "b", "question", "measure", "eps", "metric", "diff", "task_lo", "task_hi", "task_n",
                    "seed_mean", "seed_lo", "seed_hi", "seed_n", "seed_p", "family", "seed_p_holm", "decided", "seed_diffs"]
VERDICT_COLUMNS = ["study", "ways", "eps", "measure", "chance", "named", "mean", "runner_up", "runner_up_mean", "diff",
                   "task_lo", "task_hi", "seed_lo", "seed_hi", "top_mean_arm", "top_mean"]
FEW_SEEDS = 3  # below it a seed interval spans most of the range: the cells print each seed's value
# measure -> (which pass, metric, rows): the sweep's PGD, clean, PGD + AutoAttack, PGD alone on the
# tasks AutoAttack ran on, and PGD after the support attack
_MEASURES = {"robust": ("sweep", "robust_acc", False), "clean": ("sweep", "clean_acc", False),
             "pgd+aa": ("sweep", "aa_robust_acc", False), "pgd_on_aa_tasks": ("sweep", "robust_acc", True),
             "support": ("support", "robust_acc", False)}


def _sweep_table(name: str, frames: dict) -> pd.DataFrame:
    parts = []
    for measure, (which, metric, aa_only) in _MEASURES.items():
        frame = frames[which].dropna(subset=["aa_robust_acc"]) if aa_only else frames[which]
        if frame.dropna(subset=[metric]).empty:
            continue
        parts.append(method_table(frame, metric=metric).rename(columns={"method": "arm"}).assign(study=name, measure=measure))
    return pd.concat(parts, ignore_index=True)[SWEEP_COLUMNS] if parts else pd.DataFrame(columns=SWEEP_COLUMNS)


def _close(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) < 1e-12


def contrast_eps(ev: dict) -> list[float]:
    """The eps of the declared family: the judge's ``contrast_eps``, else its headline eps."""
    eps = ev.get("contrast_eps")
    if eps is None:
        eps = [ev["eps"]] if ev.get("eps") is not None else []
    return sorted({float(e) for e in eps})


def _declared_measure(ev: dict, eps: float, has_aa: bool) -> str:
    """The strongest measure run at ``eps``: PGD + AutoAttack (+ Square) where AutoAttack ran there."""
    aa = ev.get("autoattack_eps")
    return "pgd+aa" if has_aa and aa is not None and _close(aa, eps) else "robust"


def _decide(row: dict) -> bool:
    """A declared row: Holm-adjusted seed p below ALPHA, and both intervals past zero on one side."""
    return (bool(row["decided"]) and row["seed_n"] >= MIN_PAIRS and math.isfinite(row["seed_p_holm"])
            and row["seed_p_holm"] < ALPHA)


def _contrast_table(name: str, spec: dict, frames: dict) -> pd.DataFrame:
    ev = spec.get("evaluation", {})
    sweep = sorted(set(frames["sweep"]["eps"].astype(float))) if len(frames["sweep"]) else []
    has_aa = bool(len(frames["sweep"])) and frames["sweep"]["aa_robust_acc"].notna().any()
    declared_eps = contrast_eps(ev)
    rows = []
    for a, b, *question in spec.get("contrasts", []):
        q = question[0] if question else ""
        for eps in sweep:
            rows.append({"measure": "robust", "question": q, **compare(frames["sweep"], a, b, eps=eps)})
        if ev.get("autoattack_eps") is not None and has_aa:
            rows.append({"measure": "pgd+aa", "question": q,
                         **compare(frames["sweep"], a, b, eps=float(ev["autoattack_eps"]), metric="aa_robust_acc")})
        if len(frames["support"]):
            rows.append({"measure": "support", "question": q,
                         **compare(frames["support"], a, b, eps=float(frames["support"]["eps"].iloc[0]))})
    for r in rows:
        declared = r["measure"] != "support" and any(
            _close(r["eps"], e) and r["measure"] == _declared_measure(ev, e, has_aa) for e in declared_eps)
        r["family"] = "declared" if declared else "exploratory"
    family = [r for r in rows if r["family"] == "declared"]
    for row, adjusted in zip(family, holm([r["seed_p"] for r in family])):
        row["seed_p_holm"] = adjusted
    for r in rows:
        r.setdefault("seed_p_holm", math.nan)
        r["decided"] = r["family"] == "declared" and _decide(r)
    return pd.DataFrame([{**r, "study": name} for r in rows], columns=CONTRAST_COLUMNS)


def most_robust_above_chance(cells: dict, chance: float) -> str | None:
    """The arm with the highest mean among those above chance, ``mean - half > chance`` (``cells``:
    arm -> (mean, half-width); a NaN half-width counts as 0); None where no arm is above chance."""
    above = {arm: mean for arm, (mean, half) in cells.items()
             if math.isfinite(mean) and mean - (half if math.isfinite(half) else 0.0) > chance}
    return max(above, key=above.get) if above else None


def _verdict_table(name: str, spec: dict, frames: dict, sweep_table: pd.DataFrame) -> pd.DataFrame:
    """Per ways and swept eps, by the strongest measure there: the arm named (or none) and its lead."""
    ev, rows = spec.get("evaluation", {}), []
    frame = frames["sweep"]
    has_aa = bool(len(frame)) and frame["aa_robust_acc"].notna().any()
    for ways in sorted(set(sweep_table["ways"])) if len(sweep_table) else []:
        chance = 1.0 / int(ways)
        for eps in sorted(set(sweep_table.loc[sweep_table["measure"] == "robust", "eps"].astype(float))):
            measure = _declared_measure(ev, eps, has_aa)
            sel = sweep_table[(sweep_table["ways"] == ways) & (sweep_table["measure"] == measure)
                              & ((sweep_table["eps"] - eps).abs() < 1e-12)]
            cells = {r["arm"]: (float(r["mean"]), float(r["task_half"])) for _, r in sel.iterrows()}
            if not cells:
                continue
            top = max(cells, key=lambda arm: cells[arm][0])
            row = {"study": name, "ways": int(ways), "eps": eps, "measure": measure, "chance": chance,
                   "named": most_robust_above_chance(cells, chance), "top_mean_arm": top, "top_mean": cells[top][0]}
            if row["named"] is not None:
                row["mean"] = cells[row["named"]][0]
                others = {a: m for a, (m, _) in cells.items() if a != row["named"]}
                if others:
                    runner = max(others, key=others.get)
                    metric = "aa_robust_acc" if measure == "pgd+aa" else "robust_acc"
                    c = compare(frame, row["named"], runner, eps=eps, metric=metric, ways=int(ways))
                    row.update({"runner_up": runner, "runner_up_mean": others[runner], "diff": c["diff"],
                                "task_lo": c["task_lo"], "task_hi": c["task_hi"], "seed_lo": c["seed_lo"],
                                "seed_hi": c["seed_hi"]})
            rows.append(row)
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def fewshot_tables(folders, results: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """``fewshot_sweep`` (per study, measure, arm and eps), ``fewshot_contrasts`` (per declared
    contrast, measure and eps), ``fewshot_verdicts`` (per study, ways and eps) and ``fewshot_cost`` (per arm: the final models' mean outer steps and
    ``cost/grad_evals``, from ``results``) of the meta studies in ``folders``."""
    sweeps, contrasts, verdicts = [], [], []
    for folder in folders:
        spec = json.loads((Path(folder) / "study.json").read_text())
        sweep, support = study_per_task(folder)
        frames = {"sweep": sweep, "support": support}
        sweeps.append(_sweep_table(spec["study"], frames))
        contrasts.append(_contrast_table(spec["study"], spec, frames))
        verdicts.append(_verdict_table(spec["study"], spec, frames, sweeps[-1]))
    cost = pd.DataFrame(columns=["study", "arm", "outer_steps", "grad_evals"])
    if results is not None and len(results) and "step" in results:
        final = results[results["final_model"].astype(bool) & (results["kind"] == "meta")]
        if len(final):
            last = final.sort_values("report", kind="stable").groupby(["study", "arm", "model"]).tail(1)
            cost = last.groupby(["study", "arm"], as_index=False).agg(outer_steps=("step", "mean"),
                                                                      grad_evals=("cost/grad_evals", "mean"))
    cat = lambda parts, cols: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)  # noqa: E731
    return {"fewshot_sweep": cat(sweeps, SWEEP_COLUMNS), "fewshot_contrasts": cat(contrasts, CONTRAST_COLUMNS),
            "fewshot_verdicts": cat(verdicts, VERDICT_COLUMNS), "fewshot_cost": cost}


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _seed_list(text, signed: bool = False) -> str:
    """``"0:0.41;1:0.43"`` as ``41.0, 43.0 (seeds 0, 1)`` (points with a sign where ``signed``)."""
    pairs = [p.split(":", 1) for p in str(text).split(";") if ":" in p]
    values = ", ".join((f"{100 * float(v):+.1f}" if signed else _pct(float(v))) for _, v in pairs)
    return f"{values} (seed{'s' if len(pairs) > 1 else ''} {', '.join(s for s, _ in pairs)})" if pairs else "n/a"


def _cell(row, seeds: int) -> str:
    """``mean +- seed CI [+- task CI]`` in %, below FEW_SEEDS seeds ``each seed's value [+- task CI]``;
    says so when fewer than the size's ``seeds`` went in."""
    if row is None:
        return "n/a"
    if row["seeds"] < FEW_SEEDS and isinstance(row.get("seed_values"), str) and row["seed_values"]:
        few = f" ({int(row['seeds'])} of {seeds} seeds)" if row["seeds"] < seeds else ""
        return f"{_seed_list(row['seed_values'])} [+- {_pct(row['task_half'])}]{few}"
    seed = "" if math.isnan(row["seed_half"]) else f" +- {_pct(row['seed_half'])}"
    few = f" ({int(row['seeds'])} of {seeds} seeds)" if row["seeds"] < seeds else ""
    return f"{_pct(row['mean'])}{seed} [+- {_pct(row['task_half'])}]{few}"


def _lookup(table: pd.DataFrame, measure: str, arm: str, eps: float | None):
    if eps is None:
        return None
    sel = table[(table["measure"] == measure) & (table["arm"] == arm) & ((table["eps"] - eps).abs() < 1e-12)]
    return None if sel.empty else sel.iloc[0]


def _chance_reach(table: pd.DataFrame, arm: str, ways: int, eps_list, half: str) -> str:
    """The largest eps up to which ``mean - half-width > 1/ways`` at every swept eps."""
    reach = "none"
    for eps in eps_list:
        row = _lookup(table, "robust", arm, eps)
        if row is None or math.isnan(row[half]) or row["mean"] - row[half] <= 1 / ways:
            break
        reach = f"{eps:g}"
    return reach


def _interval(lo, hi) -> str:
    return "n/a" if pd.isna(lo) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _verdict_lines(verdicts: pd.DataFrame) -> list[str]:
    lines = []
    for _, v in verdicts.iterrows():
        head = f"- {int(v['ways'])}-way, eps {v['eps']:g} ({v['measure']}, chance {100 * v['chance']:.1f}%): "
        if pd.isna(v["named"]):
            lines.append(head + f"no arm is above chance with its task interval: none named (the top mean, "
                                f"{v['top_mean_arm']} {_pct(v['top_mean'])}%, is not robustness).")
        elif pd.isna(v["runner_up"]):
            lines.append(head + f"most robust above chance is **{v['named']}** ({_pct(v['mean'])}%).")
        else:
            lines.append(head + f"most robust above chance is **{v['named']}** ({_pct(v['mean'])}%), ahead of "
                                f"{v['runner_up']} ({_pct(v['runner_up_mean'])}%) by {100 * v['diff']:+.1f} points; task CI "
                                f"{_interval(v['task_lo'], v['task_hi'])}, seed CI {_interval(v['seed_lo'], v['seed_hi'])}.")
    return lines


def _study_lines(spec: dict, sweep: pd.DataFrame, contrasts: pd.DataFrame, cost: pd.DataFrame,
                 verdicts: pd.DataFrame | None = None) -> list[str]:
    ev, size_seeds = spec.get("evaluation", {}), spec.get("size_settings", {}).get("seeds", 0)
    eps_list = sorted(set(sweep.loc[sweep["measure"] == "robust", "eps"].astype(float)))
    headline, aa_eps = float(ev.get("eps", spec.get("val_eps"))), ev.get("autoattack_eps")
    support = sweep[sweep["measure"] == "support"]
    support_eps = float(support["eps"].iloc[0]) if len(support) else None
    lines = [f"### {spec['study']}: the meta-test sweep per arm", "",
             f"Every model meta-tested on the same {ev.get('tasks')} seeded tasks of unseen classes, PGD-{ev.get('pgd_steps')} "
             f"x {ev.get('pgd_restarts')} restart(s) against the adapted model, clean support; the main table's robust "
             f"accuracy is the sweep's at eps {headline:g}. Cells: mean over training seeds +- 95% t-interval over seeds "
             "[+- 95% t-interval over tasks], %; below 3 seeds each seed's value instead of the seed interval (and in the "
             "contrasts, each seed's difference); a cell with fewer than its arm's planned seeds says so.", ""]
    declared = list(spec.get("arms") or {})  # the study's order; arms it does not declare after them
    for ways in sorted(set(sweep["ways"])):
        present = set(sweep.loc[sweep["ways"] == ways, "arm"])
        arms = [a for a in declared if a in present] + sorted(present - set(declared))
        head = ["arm", "outer steps", "grad evals", "clean %", *(f"robust % eps {e:g}" for e in eps_list)]
        if aa_eps is not None:
            square = f"+Square ({ev['square_queries']:,} queries)" if ev.get("square_queries") else ""
            head.append(f"PGD+AA{square} % eps {aa_eps:g} ({ev.get('aa_tasks')} tasks)")
        if support_eps is not None:
            head.append(f"{ev.get('support_attack')} support % eps {support_eps:g} ({ev.get('support_tasks')} tasks)")
        head.append("above chance up to eps (task CI / seed CI)")
        lines += [f"#### {ways}-way {int(sweep['shots'].iloc[0])}-shot (chance {100 / ways:.1f}%)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm in arms:
            # The arm's own planned models (a size may run contrast rows on more seeds), else the size's.
            seeds = int((spec.get("arms") or {}).get(arm, {}).get("planned_models", size_seeds))
            c = cost[cost["arm"] == arm]
            cells = [arm, "n/a" if c.empty else f"{c['outer_steps'].iloc[0]:,.0f}",
                     "n/a" if c.empty else f"{c['grad_evals'].iloc[0]:,.0f}",
                     _cell(_lookup(sweep, "clean", arm, eps_list[0] if eps_list else None), seeds)]
            cells += [_cell(_lookup(sweep, "robust", arm, e), seeds) for e in eps_list]
            if aa_eps is not None:
                alone = _lookup(sweep, "pgd_on_aa_tasks", arm, float(aa_eps))
                cells.append(f"{_cell(_lookup(sweep, 'pgd+aa', arm, float(aa_eps)), seeds)} "
                             f"(PGD alone {_pct(None if alone is None else alone['mean'])})")
            if support_eps is not None:
                cells.append(_cell(_lookup(sweep, "support", arm, support_eps), seeds))
            cells.append(f"{_chance_reach(sweep, arm, ways, eps_list, 'task_half')} / "
                         f"{_chance_reach(sweep, arm, ways, eps_list, 'seed_half')}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if verdicts is not None and len(verdicts):
        lines += [f"### {spec['study']}: verdict rows", "",
                  "Per ways and eps, by the strongest measure run there: the most robust arm among those above chance "
                  "(mean minus its task half-width above 1/ways); none where no arm is. The intervals are descriptive; "
                  "what is decided is in the declared contrasts below.", "", *_verdict_lines(verdicts), ""]
    family = ", ".join(f"{e:g}" for e in contrast_eps(spec.get("evaluation", {}))) or "none"
    lines += [f"### {spec['study']}: declared contrasts, task by task and seed by seed", "",
              "a - b in points: `diff` and the task CI pair the seed-averaged accuracies task by task (how sure we are "
              "about these trained models); the seed CI pairs each seed's task mean (whether the method, not the "
              f"particular models, differs). The declared family: each contrast at eps {family} by the strongest "
              "measure run there (PGD + AutoAttack where it ran); its seed t-test p-values, and only those, are "
              f"Holm-adjusted together. Decided (declared rows only): Holm-adjusted seed p below {ALPHA:g} and both "
              "intervals exclude zero on the same side; every other row is exploratory, never decided.", "",
              "| a - b | measure | eps | diff | task CI | seed CI (seeds) | seed p (Holm) | decided |",
              "|---|---|---|---|---|---|---|---|"]
    for _, r in contrasts.iterrows():
        diff = "n/a" if pd.isna(r["diff"]) else f"{100 * r['diff']:+.1f}"
        holm_p = "exploratory" if r["family"] != "declared" else ("n/a" if pd.isna(r["seed_p_holm"]) else f"{r['seed_p_holm']:.3g}")
        p = "n/a" if pd.isna(r["seed_p"]) else f"{r['seed_p']:.3g} ({holm_p})"
        decided = "yes" if r["decided"] else ("no" if r["family"] == "declared" else "exploratory")
        seed_ci = ("per seed: " + _seed_list(r["seed_diffs"], signed=True)
                   if 0 < r["seed_n"] < FEW_SEEDS and isinstance(r.get("seed_diffs"), str) and r["seed_diffs"]
                   else _interval(r["seed_lo"], r["seed_hi"]))
        lines.append(f"| {r['a']} - {r['b']} | {r['measure']} | {r['eps']:g} | {diff} | "
                     f"{_interval(r['task_lo'], r['task_hi'])} | {seed_ci} "
                     f"({int(r['seed_n'])}) | {p} | {decided} |")
    return lines + [""]


def fewshot_lines(tables: dict, specs: list[dict]) -> list[str]:
    """The report's few-shot section (empty when no meta study has per-task results)."""
    sweep, contrasts, cost = tables["fewshot_sweep"], tables["fewshot_contrasts"], tables["fewshot_cost"]
    verdicts = tables.get("fewshot_verdicts", pd.DataFrame(columns=VERDICT_COLUMNS))
    lines = []
    for spec in specs:
        if spec.get("kind") != "meta":
            continue
        name = spec.get("study")
        mine = sweep[sweep["study"] == name]
        if mine.empty:
            continue
        lines += _study_lines(spec, mine, contrasts[contrasts["study"] == name], cost[cost["study"] == name],
                              verdicts[verdicts["study"] == name])
    return (["## Few-shot meta-test (meta studies)", "", "Tables: `fewshot_sweep.csv`, `fewshot_contrasts.csv`, "
             "`fewshot_verdicts.csv`, `fewshot_cost.csv`.", ""] + lines) if lines else []
