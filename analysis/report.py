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
from .breakdown import attack_breakdown
from .exploits import pbt_tree
from .headline import FEW_SEEDS, aim_sentence, headline, named, per_seed, same_models_line, size_banner
from .meta_training import meta_training_lines
from .same_models import same_model_arms, twins_of
from .spending import budget_spending, spending_lines
from .summaries import arm_summary, contrasts, final_models, hp_importance, pareto_front, robust_vs_cost, schedules

__all__ = ["analyze", "write_report", "verdict_sentences", "study_specs", "partial_studies", "arm_order"]


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


def arm_order(specs: list[dict], arms) -> list[str]:
    """Every arm of the report, the studies' declared order first, then the others as they appear:
    what fixes each arm's colour and style in every plot."""
    return list(dict.fromkeys([a for spec in specs for a in (spec.get("arms") or {})] + list(arms)))


def analyze(*paths) -> dict[str, pd.DataFrame]:
    """Every table of the report, as frames: ``results`` (the tidy rows), ``models``, ``arms``,
    ``contrasts``, ``contrasts_trusted`` (the same without untrusted models: the sensitivity line),
    ``robust_vs_cost``, ``schedules``, ``pareto``, ``importance``, ``judged``,
    ``status`` (per study arm, what is done and what is left: :func:`analysis.status.study_status`),
    ``same_models`` (arms whose final models are the same models: :func:`analysis.same_models.same_model_arms`),
    ``attack_breakdown`` (per arm, clean and each attack's accuracy: :func:`analysis.breakdown.attack_breakdown`)
    ``pbt_tree`` (every PBT trial's segments and exploits: :func:`analysis.exploits.pbt_tree`) and
    ``spending`` (per arm, epochs bought, attack and LAS's KL: :func:`analysis.spending.budget_spending`);
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
            "judged": load_judged(*paths), "same_models": same_model_arms(frame, finals),
            "attack_breakdown": attack_breakdown(frame, finals), "pbt_tree": pbt_tree(frame, finals),
            "spending": budget_spending(frame, finals),
            "status": pd.concat(statuses, ignore_index=True) if statuses else pd.DataFrame(columns=STATUS_COLUMNS)}


def _sensitivity(table: pd.DataFrame, models: pd.DataFrame | None = None) -> str:
    """One line: each contrast's mean and CI without the untrusted models."""
    if table.empty:
        return "no contrast."
    parts = []
    for _, r in table.iterrows():
        mean, ci = _mean_and_ci(r, models)
        ci = f"({ci})" if ci.startswith("per seed") else ci
        parts.append(f"{r['a']} - {r['b']} {mean} {ci} ({int(r['n'])} seed(s){', decided' if r['decided'] else ''})")
    return "; ".join(parts) + "."


def _mean_and_ci(r, models: pd.DataFrame | None = None) -> tuple[str, str]:
    """A contrast row's mean and 95% CI in points, as the report prints them; below FEW_SEEDS pairs
    (and ``models`` given: the counted values the contrast paired) the per-seed differences instead."""
    mean = "n/a" if pd.isna(r["mean"]) else f"{round(100 * r['mean'], 1) + 0.0:+.1f}"
    if models is not None and 0 < int(r["n"]) < FEW_SEEDS:
        return mean, "per seed: " + _seed_diffs(models, r)
    return mean, "n/a" if pd.isna(r["lo"]) else f"[{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"


def _seed_diffs(models: pd.DataFrame, r) -> str:
    """``+1.0 at seed 0, +2.0 at seed 1``: a contrast's paired differences in points, over the units it
    paired (``pair``: the seed, or a searched model's population, named as such)."""
    on = "pair" if "pair" in models else "seed"
    parts = []
    for unit in str(r["seeds"]).split(","):
        both = [models[(models["arm"] == arm) & (models[on].map(lambda v: _same_unit(v, unit)))] for arm in (r["a"], r["b"])]
        if all(len(m) == 1 for m in both):
            a, b = both[0].iloc[0], both[1].iloc[0]
            seed = _same_unit(a["seed"], unit) and _same_unit(b["seed"], unit)
            label = f"seed {_unit(unit)}" if seed else f"pair {_unit(unit)}"
            parts.append(f"{100 * (a['robust_counted'] - b['robust_counted']):+.1f} at {label}")
    return ", ".join(parts) or "n/a"


def _unit(value) -> str:
    """A pairing unit as written: ``2.0`` -> ``2``."""
    try:
        f = float(value)
        return str(int(f)) if f.is_integer() else str(value)
    except (TypeError, ValueError):
        return str(value)


def _same_unit(value, unit: str) -> bool:
    return _unit(value) == _unit(unit)


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci(mean, lo, hi) -> str:
    """An accuracy's mean and t-interval, the interval cut to [0, 100] (a t-interval over few seeds
    can pass the range an accuracy lives in; the CSV keeps the raw bounds)."""
    return _pct(mean) + ("" if pd.isna(lo) else f" [{_pct(max(lo, 0.0))}, {_pct(min(hi, 1.0))}]")


def _arm_cell(a, models: pd.DataFrame, which: str) -> str:
    """An arm's robust or clean accuracy cell: mean and CI from FEW_SEEDS models, else each model's value."""
    if int(a["n_models"]) < FEW_SEEDS:
        return per_seed(models, a["arm"], "robust_counted" if which == "robust" else "clean_acc")
    return _ci(a[f"{which}_mean"], a[f"{which}_lo"], a[f"{which}_hi"])


def _num(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:,.0f}"


def verdict_sentences(table: pd.DataFrame, twins: dict[str, list[str]] | None = None) -> list[str]:
    """Plain sentences: each contrast that is decided (its 95% CI excludes zero and its t-test
    p-value, Holm-adjusted across the contrasts, is below 0.05: who won, by how many points of
    trusted robust accuracy), or that none is. An arm with ``twins`` (arms holding the same models:
    :func:`analysis.same_models.twins_of`) is named with them."""
    twins = twins or {}
    wins = table[table["decided"].astype(bool)] if len(table) else table
    if wins.empty:
        tested = table[table["n"] >= 2] if len(table) else table
        return ["No contrast is decided (95% CI excluding zero and Holm-adjusted p < 0.05)"
                + (f" ({len(tested)} tested with >= 2 shared seeds)" if len(table) else " (no contrast could be formed)")
                + ": no arm is shown to beat another at this number of seeds."]
    out = []
    for _, c in wins.iterrows():
        winner, loser = (c["a"], c["b"]) if c["mean"] > 0 else (c["b"], c["a"])
        out.append(f"{named(winner, twins)} beat {named(loser, twins)} by {abs(100 * c['mean']):.1f} points of robust accuracy "
                   f"(95% CI {100 * min(abs(c['lo']), abs(c['hi'])):.1f} to {100 * max(abs(c['lo']), abs(c['hi'])):.1f}, "
                   f"Holm p {c['p_holm']:.3g}, {int(c['n'])} paired seeds" + (f"; {c['question']}" if c["question"] else "") + ").")
    return out


def _best_sentence(arms: pd.DataFrame, twins: dict[str, list[str]] | None = None) -> str:
    """The highest mean among arms with no untrusted model (an arm with one never leads); arms tied
    with it at the printed precision, and arms holding the same models, are named with it."""
    twins = twins or {}
    ranked = arms[arms["n_untrusted"] == 0].dropna(subset=["robust_mean"]).sort_values("robust_mean", ascending=False)
    if ranked.empty:
        return "No arm leads: every arm has an untrusted model or no model." if len(arms) else ""
    top = ranked.iloc[0]
    tied = [a for a in ranked["arm"] if _pct(ranked.set_index("arm").loc[a, "robust_mean"]) == _pct(top["robust_mean"])]
    tied = [a for a in tied if not any(a in twins.get(b, []) for b in tied[:tied.index(a)])]  # a twin is named with its arm
    who = " and ".join(named(a, twins, bold=False) for a in tied) + (" (tied)" if len(tied) > 1 else "")
    return (f"Highest mean robust accuracy among arms with no untrusted model: {who} ({_pct(top['robust_mean'])}% "
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


def _verdict_lines(t: dict, specs: list[dict], twins: dict) -> list[str]:
    """The first screen: the verdict in one sentence, the aim it was judged against, same-model arms."""
    c = t["contrasts"]
    declared = any(spec.get("contrasts") for spec in specs)
    aim = next((spec["aim"] for spec in specs if spec.get("aim")), None)
    return (["## Verdict", "", headline(c, twins, declared), "", aim_sentence(c, aim), ""]
            + same_models_line(t["same_models"])
            + ["The details (every contrast, its interval and p-values) follow the main table below.", ""])


def _main_table(t: dict, specs: list[dict]) -> list[str]:
    arms, models = t["arms"], t["models"]
    source = "/".join(sorted(set(models["metric_source"])))
    what = {"eval": "the `metaadv evaluate` verdict (per-example worst case over PGD restarts and AutoAttack)",
            "val": "the last training-time validation (`val/robust_acc`): **not** an evaluate verdict",
            "eval/val": "the evaluate verdict where a model has one, else the last training-time validation"}[source]
    if "eval" in source and any(spec.get("kind") == "meta" for spec in specs):
        what += ("; for a meta study, the `metaadv meta-evaluate` verdict instead: PGD with restarts against the adapted "
                 "model at the study's threat eps of the sweep, over the meta-test tasks (see the few-shot section)")
    lines = []
    for spec in specs:
        ev = spec.get("evaluation", {})
        lines += [f"Study **{spec.get('study')}** (size {spec.get('size')}, commit {spec.get('commit')}): budget "
                  f"{spec.get('budget_grad_evals')} grad evals per model, eps {spec.get('eps')}, validation eps "
                  f"{spec.get('val_eps')} (eps in pixel units of the [0, 1] input range), evaluation {json.dumps(ev)}.", ""]
    lines += ["## Main table", "", f"Accuracy (%) of the final models, mean and 95% t-CI over seeds (cut to [0, 100]); "
              f"an arm with fewer than {FEW_SEEDS} models shows each model's value and its seed instead (an interval "
              f"from fewer seeds spans most of the range). Robust accuracy is {what}. "
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
        lines.append(f"| {a['arm']} | {a['n_models']} ({a['n_untrusted']}) | {_arm_cell(a, models, 'robust')} "
                     f"| {_arm_cell(a, models, 'clean')} | {_num(a['cost_a'])} | {_num(a['cost_b'])} "
                     f"| {_num(a['cost_b_total'])} |")
    return lines


def _contrast_lines(t: dict, specs: list[dict], twins: dict) -> list[str]:
    c, models, arms = t["contrasts"], t["models"], t["arms"]
    declared = any(spec.get("contrasts") for spec in specs)
    lines = ["", "## Contrasts", "", ("Declared in study.json" if declared else "Every pair of arms (none declared)")
             + ": paired differences a - b of robust accuracy (points; untrusted models at their worst case) over "
             "the seeds both arms have; "
             "accuracy at each arm's own budget, so read them with the cost columns above. p: the paired "
             "t-test, and beside it the exact sign-flip test; each Holm-adjusted across these contrasts "
             f"(decided: CI excludes zero and Holm p < 0.05). Below {FEW_SEEDS} shared seeds the 95% CI column shows "
             "each seed's difference instead.", "",
             "| a - b | question | mean | 95% CI | seeds | p (Holm) | sign-flip p (Holm) |",
             "|---|---|---|---|---|---|---|"]
    for _, r in c.iterrows():
        mean, ci = _mean_and_ci(r, models)
        p, flip = (("n/a" if pd.isna(r[k]) else f"{r[k]:.3g} ({r[k + '_holm']:.3g})") for k in ("p", "p_flip"))
        lines.append(f"| {r['a']} - {r['b']} | {r['question']} | {mean} | {ci} | {int(r['n'])} | {p} | {flip} |")
    lines += ["", "**Verdict, in detail.** " + " ".join(verdict_sentences(c, twins)) + " " + _best_sentence(arms, twins), ""]
    bad = models[models["trusted"].map(lambda v: str(v) == "False")]
    if len(bad):
        lines += ["Untrusted verdicts (flagged; never a win): " + ", ".join(
            f"{r['arm']}/{r['model']} (measured {_pct(r['robust_acc'])}%, counted {_pct(r['robust_counted'])}%"
            + ("" if r["square"] else ", no Square attack") + ")" for _, r in bad.iterrows()) + ".", "",
                  "Sensitivity, without the untrusted models: "
                  + _sensitivity(t["contrasts_trusted"], models[~models.index.isin(bad.index)]), ""]
    return lines


def _breakdown_lines(table: pd.DataFrame) -> list[str]:
    """Per arm, clean -> FGSM -> PGD -> AutoAttack -> worst case (analysis.breakdown)."""
    if table.empty:
        return []
    stages = [c for c in table.columns if c not in ("arm", "n_models", "n_untrusted")]
    head = ["arm", "models (untrusted, left out)", *(("worst case" if s == "robust" else s) + " %" for s in stages)]
    lines = ["## Where the accuracy goes: clean -> each attack -> worst case", "",
             "Per arm, the mean over its evaluated models of the clean accuracy, each attack's accuracy alone "
             "(`eval/per_attack/*`) and the verdict's per-example worst case over all of them (at most every attack's "
             "column). Untrusted models are left out here (their measured values are listed above). A weak attack "
             "below a strong one is a sign of gradient masking. Table "
             "`attack_breakdown.csv`; plot `attacks.png`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append(f"| {r['arm']} | {r['n_models']} ({r['n_untrusted']}) | " + " | ".join(_pct(r[s]) for s in stages) + " |")
    return lines + ["", "![clean -> attacks -> worst case](attacks.png)", ""]


def _tree_lines(tree: pd.DataFrame) -> list[str]:
    """Each PBT exploit: which trial cloned which, at which round and cost (analysis.exploits)."""
    clones = tree[tree["segment"] > 0] if len(tree) else tree
    if clones.empty:
        return []
    lines = ["## PBT exploits", "", "Every exploit of each PBT population: the trial that was replaced continued from "
             "the donor's checkpoint (the donor in its segment then), resuming at the round shown, with the "
             "training grad evals of the donor's lineage at that point. **final**: a final model descends from it. "
             "Table `pbt_tree.csv` (every segment, with where it started and ended); plot `pbt_tree.png`.", "",
             "| arm | trial (segment) | cloned from (its segment) | resumed at round | cost at the clone | final |",
             "|---|---|---|---|---|---|"]
    for _, r in clones.iterrows():
        donor = "unknown (not in the logs)" if not isinstance(r["donor"], str) else \
            f"{r['donor']} ({'?' if pd.isna(r['donor_segment']) else int(r['donor_segment'])})"
        lines.append(f"| {r['arm']} | {r['trial']} ({r['segment']}) | {donor} | {r['first_round']} | "
                     f"{_num(r['start_cost'])} | {'**final**' if r['in_final'] else ''} |")
    return lines + ["", "![PBT exploit tree](pbt_tree.png)", ""]


def _markdown(t: dict, specs: list[dict], paths) -> str:
    models = t["models"]
    twins = twins_of(t["same_models"]) if "same_models" in t else {}
    partial = _progress_lines(paths)
    lines = ["# metaadv analysis", "", "Inputs: " + ", ".join(f"`{p}`" for p in paths), ""] + size_banner(specs)
    if partial:
        lines += ["> **Partial report:** a study has not finished; every number below covers what is done so far "
                  "(see \"Partial report\" below).", ""]
    if models.empty:
        return "\n".join(lines + partial + ["No final model yet (a study lists its models in models.csv after training): "
                                            "no main table, contrasts or plots.", "",
                                            "Tables: " + ", ".join(f"`{n}.csv`" for n in t), ""])
    lines += _verdict_lines(t, specs, twins) + partial + _main_table(t, specs) + _contrast_lines(t, specs, twins)
    lines += _judged_lines(t["judged"]) + _breakdown_lines(t["attack_breakdown"]) + spending_lines(t.get("spending", pd.DataFrame()))
    lines += meta_training_lines(t)
    if "fewshot_sweep" in t:
        lines += fewshot_lines(t, specs)
    lines += ["## Plots", "", "Every plot draws each arm in one colour (and line style), the same in all of them; "
              "accuracies in %.", "", "![robust accuracy vs cost](robust_vs_cost.png)", "",
              "Cost views: left, validation robust accuracy along the final models' lineages against cost (a), mean and "
              f"95% CI band where {FEW_SEEDS} or more models reach that cost (table `robust_vs_cost.csv`); right, final "
              "robust accuracy against cost (b) per model.", "", "![schedules](schedules.png)", "",
              "The schedule (eps, attack steps, step size, lr per round) of each arm's best trusted model: one row "
              "of panels per arm, so that equal schedules stay visible; one y scale per column.", "",
              "![Pareto front](pareto.png) ![per seed](per_seed.png)", ""]
    lines += _tree_lines(t.get("pbt_tree", pd.DataFrame()))
    lines += ["## Pareto front (clean vs robust)", "",
              "Cost view: none (final models at their own budgets).", "",
              "| arm | model | seed | clean % | robust % |", "|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['model']} | {r['seed']} | {_pct(r['clean_acc'])} | {_pct(r['robust_acc'])} |"
              for _, r in t["pareto"].iterrows()]
    imp = t["importance"]
    lines += ["", "## Hyperparameter importance (random-search trials only)", ""]
    if imp.empty:
        lines.append("No random-search experiment with at least 3 fixed-hyperparameter trials in the inputs.")
    else:
        lines += ["Each evaluator's share (%) of the explained variation of robust accuracy among the searched "
                  "hyperparameters.", "",
                  "| experiment | parameter | fANOVA % | mean decrease impurity % | trials |", "|---|---|---|---|---|"]
        wide = imp.pivot_table(index=["experiment", "param", "n_trials"], columns="evaluator", values="importance").reset_index()
        for _, r in wide.sort_values(["experiment", "fanova"], ascending=[True, False]).iterrows():
            lines.append(f"| {r['experiment']} | {r['param']} | {_pct(r.get('fanova', float('nan')))} | "
                         f"{_pct(r.get('mean_decrease_impurity', float('nan')))} | {r['n_trials']} |")
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
        specs = study_specs(paths)
        if len(tables["models"]):  # a study in progress may have no final model to plot yet
            order = arm_order(specs, tables["results"]["arm"])
            colors, styles = plots.arm_colors(order), plots.arm_styles(order)
            plots.plot_robust_vs_cost(tables["robust_vs_cost"], tables["arms"], tmp / "robust_vs_cost.png", colors)
            plots.plot_schedules(tables["schedules"], tmp / "schedules.png", colors, styles)
            plots.plot_pareto(tables["models"], tables["pareto"], tmp / "pareto.png", colors)
            plots.plot_per_seed(tables["models"], tables["arms"], tmp / "per_seed.png", colors)
            if len(tables["attack_breakdown"]):
                plots.plot_attacks(tables["attack_breakdown"], tmp / "attacks.png", colors, styles)
            if (tables["pbt_tree"]["segment"] > 0).any():
                plots.plot_exploit_tree(tables["pbt_tree"], tmp / "pbt_tree.png", colors)
        (tmp / "report.md").write_text(_markdown(tables, specs, paths))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
