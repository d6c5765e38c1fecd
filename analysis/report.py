"""The report ``metaadv analyze`` writes: report.md, the tables as CSV, PNG plots.

:func:`write_report` writes everything into a fresh temporary folder next to ``out`` and moves it
into place only when complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from metaadv.errors import UserError

from . import plots
from .load import discover, load_judged, load_results
from .status import STATUS_COLUMNS, is_partial, status_lines, study_status
from .fewshot_report import fewshot_lines, fewshot_tables
from .summaries import arm_summary, contrasts, final_models, hp_importance, pareto_front, robust_vs_cost, schedules

__all__ = ["analyze", "write_report", "verdict_sentences", "study_specs", "partial_studies"]


def study_specs(paths) -> list[dict]:
    """The study.json of every study folder at or under ``paths``."""
    return [json.loads((folder / "study.json").read_text()) for p in paths for kind, folder in discover(Path(p))
            if kind == "study"]


def study_folders(paths) -> list[Path]:
    """Every study folder at or under ``paths``."""
    return [folder for p in paths for kind, folder in discover(Path(p)) if kind == "study"]


def partial_studies(paths) -> list[Path]:
    """The study folders at or under ``paths`` that have not finished (:func:`analysis.status.is_partial`)."""
    return [folder for folder in study_folders(paths) if is_partial(folder)]


def analyze(*paths) -> dict[str, pd.DataFrame]:
    """Every table of the report, as frames: ``results`` (the tidy rows), ``models``, ``arms``,
    ``contrasts``, ``contrasts_trusted`` (the same without untrusted models: the sensitivity line),
    ``robust_vs_cost``, ``schedules``, ``pareto``, ``importance``, ``judged``, and
    ``status`` (per study arm, what is done and what is left: :func:`analysis.status.study_status`);
    with a meta study (study.json ``kind: meta``) also ``fewshot_sweep``, ``fewshot_contrasts`` and
    ``fewshot_cost`` (:func:`analysis.fewshot_report.fewshot_tables`).
    A study still running gives what it has so far (no rows, or no final model yet: empty tables)."""
    frame = load_results(*paths)
    specs = study_specs(paths)
    declared = [c for spec in specs for c in spec.get("contrasts", [])]
    aim = next((spec["aim"] for spec in specs if spec.get("aim")), None)  # one aim per report: the first study's
    finals = final_models(frame)
    arms = arm_summary(frame, finals)
    statuses = [study_status(folder) for folder in study_folders(paths)]
    meta = [f for f in study_folders(paths) if json.loads((f / "study.json").read_text()).get("kind") == "meta"]
    fewshot = fewshot_tables(meta, frame) if meta else {}  # the few-shot section's tables (analysis.fewshot_report)
    return {"results": frame, "models": finals, "arms": arms, **fewshot,
            "contrasts": contrasts(finals, declared or None, aim=aim),
            "contrasts_trusted": contrasts(finals, declared or None, trusted_only=True, aim=aim),
            "robust_vs_cost": robust_vs_cost(frame, finals),
            "schedules": schedules(frame, finals), "pareto": pareto_front(finals), "importance": hp_importance(frame),
            "judged": load_judged(*paths),
            "status": pd.concat(statuses, ignore_index=True) if statuses else pd.DataFrame(columns=STATUS_COLUMNS)}


def _sensitivity(table: pd.DataFrame) -> str:
    """One line: each contrast's mean and CI without the untrusted models."""
    if table.empty:
        return "no contrast."
    parts = []
    for _, r in table.iterrows():
        mean, ci = _mean_and_ci(r)
        parts.append(f"{r['a']} - {r['b']} {mean} {ci} ({int(r['n'])} seeds{', decided' if r['decided'] else ''})")
    return "; ".join(parts) + "."


def _mean_and_ci(r) -> tuple[str, str]:
    """A contrast row's mean and 95% CI in points, as the report prints them."""
    mean = "n/a" if pd.isna(r["mean"]) else f"{round(100 * r['mean'], 1) + 0.0:+.1f}"
    return mean, "n/a" if pd.isna(r["lo"]) else f"[{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci(mean, lo, hi) -> str:
    """An accuracy's mean and t-interval, the interval cut to [0, 100] (a t-interval over few seeds
    can pass the range an accuracy lives in; the CSV keeps the raw bounds)."""
    return _pct(mean) + ("" if pd.isna(lo) else f" [{_pct(max(lo, 0.0))}, {_pct(min(hi, 1.0))}]")


def _num(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:,.0f}"


def verdict_sentences(table: pd.DataFrame) -> list[str]:
    """Plain sentences: each contrast that is decided (its 95% CI excludes zero and its t-test
    p-value, Holm-adjusted across the contrasts, is below 0.05: who won, by how many points of
    trusted robust accuracy), or that none is."""
    wins = table[table["decided"].astype(bool)] if len(table) else table
    if wins.empty:
        tested = table[table["n"] >= 2] if len(table) else table
        return ["No contrast is decided (95% CI excluding zero and Holm-adjusted p < 0.05)"
                + (f" ({len(tested)} tested with >= 2 shared seeds)" if len(table) else " (no contrast could be formed)")
                + ": no arm is shown to beat another at this number of seeds."]
    out = []
    for _, c in wins.iterrows():
        winner, loser = (c["a"], c["b"]) if c["mean"] > 0 else (c["b"], c["a"])
        out.append(f"**{winner}** beat **{loser}** by {abs(100 * c['mean']):.1f} points of robust accuracy "
                   f"(95% CI {100 * min(abs(c['lo']), abs(c['hi'])):.1f} to {100 * max(abs(c['lo']), abs(c['hi'])):.1f}, "
                   f"Holm p {c['p_holm']:.3g}, {int(c['n'])} paired seeds" + (f"; {c['question']}" if c["question"] else "") + ").")
    return out


def aim_sentence(table: pd.DataFrame, aim: dict | None) -> str:
    """The declared aim and whether any contrast met it (decided, mean at least ``min_effect``), with
    the minimum detectable effect at the seeds run and at the seeds planned: a contrast that misses
    the aim where the MDE is above it was not measured finely enough to show it."""
    if not aim:
        return "No aim was declared in study.json."
    effect = 100 * float(aim["min_effect"])
    judged = table[table["aim_effect"].notna()] if len(table) else table
    met = judged[judged["meets_aim"].astype(bool)] if len(judged) else judged
    head = f"**Aim** (declared before the run): {aim.get('statement') or f'a difference of at least {effect:.1f} points'}."
    if met.empty:
        verdict = f" Not met: no declared contrast is decided with a mean of at least {effect:.1f} points."
    else:
        verdict = " Met by " + ", ".join(f"{r['a']} - {r['b']} ({100 * r['mean']:+.1f}, 95% CI from {100 * r['lo']:.1f})"
                                         for _, r in met.iterrows()) + "."
    mdes = [f"{r['a']} - {r['b']} {100 * r['mde']:.1f}" + (f" ({100 * r['mde_planned']:.1f} at {int(aim['planned_seeds'])})"
                                                        if pd.notna(r["mde_planned"]) else "")
            for _, r in judged.iterrows() if pd.notna(r["mde"])]
    if mdes:
        verdict += (" Minimum detectable effect (points, 80% power, Bonferroni over the contrasts) at the seeds run"
                    + (" and, in brackets, at the planned seeds" if aim.get("planned_seeds") else "") + ": " + "; ".join(mdes) + ".")
    return head + verdict


def _best_sentence(arms: pd.DataFrame) -> str:
    """The highest mean among arms with no untrusted model (an arm with one never leads)."""
    ranked = arms[arms["n_untrusted"] == 0].dropna(subset=["robust_mean"]).sort_values("robust_mean", ascending=False)
    if ranked.empty:
        return "No arm leads: every arm has an untrusted model or no model." if len(arms) else ""
    top = ranked.iloc[0]
    return (f"Highest mean robust accuracy among arms with no untrusted model: {top['arm']} ({_pct(top['robust_mean'])}% "
            f"over {top['n_models']} model(s)), at cost (a) {_num(top['cost_a'])} and cost (b) {_num(top['cost_b'])} "
            "grad evals per model" + ("; a higher mean alone is not a win." if len(ranked) > 1 else "."))


def _judged_lines(judged: pd.DataFrame) -> list[str]:
    """Each arm's best model judged again (a study size with ``judge`` options)."""
    if judged.empty:
        return []
    lines = ["## Each arm's best model, judged again", "",
             "The model each arm would ship (highest trusted robust accuracy above) evaluated once more with a "
             "stronger attack on the same test examples; the difference is what the stronger attack found. Both numbers "
             "carry the optimism of picking the best of the arm's models on these examples: read the arm's mean above "
             "for what the arm gives.", "",
             "| arm | model | robust % (first) | AutoAttack (first) | robust % (again) | AutoAttack (again) | clean % | trusted |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in judged.iterrows():
        lines.append(f"| {r['arm']} | {r['model']} | {_pct(r.get('eval/robust_acc'))} | {r.get('eval/aa_version')} | "
                     f"{_pct(r['judge/robust_acc'])} | {r['judge/aa_version']} | {_pct(r['judge/clean_acc'])} | "
                     f"{r['judge/trusted']} |")
    return lines + [""]


def _progress_lines(paths) -> list[str]:
    """A study not finished: what is done and what is left, per arm (the same lines as
    ``metaadv study --status``)."""
    partial = partial_studies(paths)
    if not partial:
        return []
    lines = ["## Partial report: a study has not finished", "",
             "Every table below covers only what is done: models not trained or not evaluated yet are missing "
             "(a model without its verdict is read by its last validation), and a contrast has only the seeds both "
             "arms have so far. Run `metaadv analyze` again when the study is done.", ""]
    for folder in partial:
        lines += ["```", *status_lines(folder), "```", ""]
    return lines


def _markdown(t: dict, specs: list[dict], paths) -> str:
    arms, models = t["arms"], t["models"]
    lines = ["# metaadv analysis", "", "Inputs: " + ", ".join(f"`{p}`" for p in paths), ""] + _progress_lines(paths)
    if models.empty:
        return "\n".join(lines + ["No final model yet (a study lists its models in models.csv after training): no main "
                                   "table, contrasts or plots.", "", "Tables: " + ", ".join(f"`{n}.csv`" for n in t), ""])
    source = "/".join(sorted(set(models["metric_source"])))
    what = {"eval": "the `metaadv evaluate` verdict (per-example worst case over PGD restarts and AutoAttack)",
            "val": "the last training-time validation (`val/robust_acc`): **not** an evaluate verdict",
            "eval/val": "the evaluate verdict where a model has one, else the last training-time validation"}[source]
    if "eval" in source and any(spec.get("kind") == "meta" for spec in specs):
        what += ("; for a meta study, the `metaadv meta-evaluate` verdict instead: PGD with restarts against the adapted "
                 "model at the study's threat eps of the sweep, over the meta-test tasks (see the few-shot section)")
    for spec in specs:
        ev = spec.get("evaluation", {})
        lines += [f"Study **{spec.get('study')}** (size {spec.get('size')}, commit {spec.get('commit')}): budget "
                  f"{spec.get('budget_grad_evals')} grad evals per model, eps {spec.get('eps')}, validation eps "
                  f"{spec.get('val_eps')}, evaluation {json.dumps(ev)}.", ""]
    lines += ["## Main table", "", f"Accuracy (%) of the final models, mean and 95% t-CI over seeds (cut to [0, 100]); robust accuracy is {what}. "
              "Untrusted verdicts (`eval/trusted` false) are never dropped: each counts at its worst case (its "
              "measured robust accuracy if a gradient-free Square attack was part of it, else 0), is flagged, and "
              "never leads; a sensitivity line below the contrasts leaves them out.", "",
              "Cost views: **cost (a)** = training grad evals of one final model (its whole lineage; the per-model "
              "budget). **cost (b)** = everything the arm ran (every trial's own training rows, PBT's inherited rows "
              "counted once, plus the validation a decision read: PBT's at its perturbation points and final pick, a search's at "
              "its pick; plus, for a replay or transfer, its source's cost (b) per model) per final model; **(b) total** is the arm's sum.", "",
              "| arm | models (untrusted) | robust % | clean % | cost (a) | cost (b) per model | cost (b) total |",
              "|---|---|---|---|---|---|---|"]
    for _, a in arms.iterrows():
        lines.append(f"| {a['arm']} | {a['n_models']} ({a['n_untrusted']}) | {_ci(a['robust_mean'], a['robust_lo'], a['robust_hi'])} "
                     f"| {_ci(a['clean_mean'], a['clean_lo'], a['clean_hi'])} | {_num(a['cost_a'])} | {_num(a['cost_b'])} "
                     f"| {_num(a['cost_b_total'])} |")
    c = t["contrasts"]
    lines += ["", "## Contrasts", "", ("Declared in study.json" if specs else "Every pair of arms (none declared)")
              + ": paired differences a - b of robust accuracy (points; untrusted models at their worst case) over "
              "the seeds both arms have; "
              "accuracy at each arm's own budget, so read them with the cost columns above. p: the paired "
              "t-test, and beside it the exact sign-flip test; each Holm-adjusted across these contrasts "
              "(decided: CI excludes zero and Holm p < 0.05).", "",
              "| a - b | question | mean | 95% CI | seeds | p (Holm) | sign-flip p (Holm) |",
              "|---|---|---|---|---|---|---|"]
    for _, r in c.iterrows():
        mean, ci = _mean_and_ci(r)
        p, flip = (("n/a" if pd.isna(r[k]) else f"{r[k]:.3g} ({r[k + '_holm']:.3g})") for k in ("p", "p_flip"))
        lines.append(f"| {r['a']} - {r['b']} | {r['question']} | {mean} | {ci} | {int(r['n'])} | {p} | {flip} |")
    aim = next((spec["aim"] for spec in specs if spec.get("aim")), None)
    lines += ["", "**Verdict.** " + " ".join(verdict_sentences(c)) + " " + _best_sentence(arms), "", aim_sentence(c, aim), ""]
    bad = models[models["trusted"].map(lambda v: str(v) == "False")]
    if len(bad):
        lines += ["Untrusted verdicts (flagged; never a win): " + ", ".join(
            f"{r['arm']}/{r['model']} (measured {_pct(r['robust_acc'])}%, counted {_pct(r['robust_counted'])}%"
            + ("" if r["square"] else ", no Square attack") + ")" for _, r in bad.iterrows()) + ".", "",
                  "Sensitivity, without the untrusted models: " + _sensitivity(t["contrasts_trusted"]), ""]
    lines += _judged_lines(t["judged"])
    if "fewshot_sweep" in t:
        lines += fewshot_lines(t, specs)
    lines += ["## Plots", "", "![robust accuracy vs cost](robust_vs_cost.png)", "",
              "Cost views: left, validation robust accuracy along the final models' lineages against cost (a), mean and "
              "95% CI band (table `robust_vs_cost.csv`); right, final robust accuracy against cost (b) per model.", "", "![schedules](schedules.png)", "",
              "The schedule (eps, attack steps, step size, lr per round) of each arm's best trusted model.", "",
              "![Pareto front](pareto.png) ![per seed](per_seed.png)", "", "## Pareto front (clean vs robust)", "",
              "Cost view: none (final models at their own budgets).", "",
              "| arm | model | seed | clean % | robust % |", "|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['model']} | {r['seed']} | {_pct(r['clean_acc'])} | {_pct(r['robust_acc'])} |"
              for _, r in t["pareto"].iterrows()]
    imp = t["importance"]
    lines += ["", "## Hyperparameter importance (random-search trials only)", ""]
    if imp.empty:
        lines.append("No random-search experiment with at least 3 fixed-hyperparameter trials in the inputs.")
    else:
        lines += ["| experiment | parameter | fANOVA | mean decrease impurity | trials |", "|---|---|---|---|---|"]
        wide = imp.pivot_table(index=["experiment", "param", "n_trials"], columns="evaluator", values="importance").reset_index()
        for _, r in wide.sort_values(["experiment", "fanova"], ascending=[True, False]).iterrows():
            lines.append(f"| {r['experiment']} | {r['param']} | {r.get('fanova', float('nan')):.2f} | "
                         f"{r.get('mean_decrease_impurity', float('nan')):.2f} | {r['n_trials']} |")
    lines += ["", "Tables: " + ", ".join(f"`{n}.csv`" for n in t), ""]
    return "\n".join(lines)


def write_report(paths, out: str | Path) -> Path:
    """Analyse ``paths`` and write report.md, ``<table>.csv`` and the PNGs into ``out``.

    ``out`` must not exist, be empty, or hold an earlier report (report.md), which is replaced."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").is_file())):
        raise UserError(f"{str(out)!r} exists and is not an earlier report; choose another --out")
    tables = analyze(*paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        for name, table in tables.items():
            table.to_csv(tmp / f"{name}.csv", index=False)
        if len(tables["models"]):  # a study in progress may have no final model to plot yet
            colors = plots.arm_colors(tables["arms"]["arm"])
            plots.plot_robust_vs_cost(tables["robust_vs_cost"], tables["arms"], tmp / "robust_vs_cost.png", colors)
            plots.plot_schedules(tables["schedules"], tmp / "schedules.png", colors)
            plots.plot_pareto(tables["models"], tables["pareto"], tmp / "pareto.png", colors)
            plots.plot_per_seed(tables["models"], tables["arms"], tmp / "per_seed.png")
        (tmp / "report.md").write_text(_markdown(tables, study_specs(paths), paths))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
