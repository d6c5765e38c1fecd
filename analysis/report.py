"""The report ``metaadv analyze`` writes: report.md, the tables as CSV, PNG plots.

:func:`write_report` writes everything into a fresh temporary folder next to ``out`` and moves it
into place only when complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
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
from .headline import FEW_SEEDS, aim_sentence, headline, same_models_line, size_banner
from .meta_training import meta_training_lines
from .same_models import same_model_arms, twins_of
from .sentences import arm_cell, best_sentence, mean_and_ci, num, pct, sensitivity, verdict_sentences
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
        lines.append(f"| {r['arm']} | {r['model']} | {pct(r.get('eval/robust_acc'))} | {r.get('eval/aa_version')} | "
                     f"{pct(r['judge/robust_acc'])} | {r['judge/aa_version']} | {pct(r['judge/clean_acc'])} | "
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
        lines.append(f"| {a['arm']} | {a['n_models']} ({a['n_untrusted']}) | {arm_cell(a, models, 'robust')} "
                     f"| {arm_cell(a, models, 'clean')} | {num(a['cost_a'])} | {num(a['cost_b'])} "
                     f"| {num(a['cost_b_total'])} |")
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
        mean, ci = mean_and_ci(r, models)
        p, flip = (("n/a" if pd.isna(r[k]) else f"{r[k]:.3g} ({r[k + '_holm']:.3g})") for k in ("p", "p_flip"))
        lines.append(f"| {r['a']} - {r['b']} | {r['question']} | {mean} | {ci} | {int(r['n'])} | {p} | {flip} |")
    lines += ["", "**Verdict, in detail.** " + " ".join(verdict_sentences(c, twins)) + " " + best_sentence(arms, twins), ""]
    bad = models[models["trusted"].map(lambda v: str(v) == "False")]
    if len(bad):
        lines += ["Untrusted verdicts (flagged; never a win): " + ", ".join(
            f"{r['arm']}/{r['model']} (measured {pct(r['robust_acc'])}%, counted {pct(r['robust_counted'])}%"
            + ("" if r["square"] else ", no Square attack") + ")" for _, r in bad.iterrows()) + ".", "",
                  "Sensitivity, without the untrusted models: "
                  + sensitivity(t["contrasts_trusted"], models[~models.index.isin(bad.index)]), ""]
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
        lines.append(f"| {r['arm']} | {r['n_models']} ({r['n_untrusted']}) | " + " | ".join(pct(r[s]) for s in stages) + " |")
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
                     f"{num(r['start_cost'])} | {'**final**' if r['in_final'] else ''} |")
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
    lines += [f"| {r['arm']} | {r['model']} | {r['seed']} | {pct(r['clean_acc'])} | {pct(r['robust_acc'])} |"
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
            lines.append(f"| {r['experiment']} | {r['param']} | {pct(r.get('fanova', float('nan')))} | "
                         f"{pct(r.get('mean_decrease_impurity', float('nan')))} | {r['n_trials']} |")
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
