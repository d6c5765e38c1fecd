"""The report a newcomer opens (issue 24): the verdict and aim first, a smoke banner, arms holding the
same models named together, per-seed values below 3 seeds, one colour per arm, plots that hide no
arm and whose legends list what is drawn, percent throughout, the attack breakdown and the PBT
exploit tree. On the fixture study (tests/analysis_study.py) plus hand-built frames."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba, to_rgba_array
from matplotlib.lines import Line2D

from analysis import plots
from analysis.breakdown import attack_breakdown
from analysis.headline import headline, size_banner
from analysis.report import arm_order, verdict_sentences, write_report
from analysis.sentences import best_sentence as _best_sentence
from analysis.same_models import same_model_arms
from tests.analysis_study import build_study

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

AIM = {"min_effect": 0.05, "statement": "a learned schedule at least 5 points above the default", "planned_seeds": 10}


def _with_a_copy_of_fixed_and_an_aim(study):
    """The fixture plus arm ``fixed-copy``: the fixed arm's trials and verdicts again (the same models)."""
    shutil.copytree(study / "arms" / "fixed", study / "arms" / "fixed-copy")
    for src in (study / "eval" / "fixed").iterdir():
        dst = study / "eval" / "fixed-copy" / src.name.replace("fixed", "fixed-copy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    models = pd.read_csv(study / "models.csv", dtype=str, keep_default_na=False)
    copy = models[models["arm"] == "fixed"].copy()
    copy["model"] = copy["model"].str.replace("fixed", "fixed-copy")
    copy["eval"] = copy["eval"].str.replace("fixed", "fixed-copy")
    copy["arm"] = "fixed-copy"
    pd.concat([models, copy]).to_csv(study / "models.csv", index=False)
    spec = json.loads((study / "study.json").read_text())
    spec["arms"]["fixed-copy"] = dict(spec["arms"]["fixed"], experiments=["fixed"])
    spec["aim"] = AIM
    (study / "study.json").write_text(json.dumps(spec))
    return study


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The report written once, every figure kept as drawn (plots._save wrapped)."""
    root = tmp_path_factory.mktemp("newcomer")
    study = _with_a_copy_of_fixed_and_an_aim(build_study(root))
    figures, save = {}, plots._save
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", lambda fig, path: (figures.__setitem__(path.name, fig), save(fig, path))[1])
        out = write_report([study], root / "report")
    spec = json.loads((study / "study.json").read_text())
    return {"out": out, "report": (out / "report.md").read_text(), "figures": figures, "spec": spec}


def _rgb(artist) -> set:
    if isinstance(artist, Line2D):
        colors = [artist.get_color()]
    else:
        face = artist.get_facecolor()
        colors = face if len(face) else artist.get_edgecolor()
    return {tuple(np.round(c[:3], 3)) for c in to_rgba_array(colors)}


def test_the_first_screen_says_the_verdict_in_one_sentence_and_the_aim(written):
    report = written["report"]
    lines = report.splitlines()
    verdict = next(i for i, line in enumerate(lines) if line.startswith("**Verdict:**"))
    assert verdict < 12 and verdict < report.index("## Main table") and report.index("## Verdict") < report.index("Study **")
    sentence = lines[verdict]
    assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence
    assert "beat **fixed** (= **fixed-copy**, the same models) by 10.7 points" in sentence
    aim = next(line for line in lines[verdict:verdict + 4] if line.startswith("**Aim**"))
    assert AIM["statement"] in aim and "Met by learned - fixed" in aim


def test_a_tiny_or_smoke_study_says_its_numbers_check_the_plumbing_only(written):
    assert written["report"].index("check the plumbing only") < written["report"].index("## Verdict")
    assert size_banner([{"study": "s", "size": "smoke"}]) and "plumbing only" in size_banner([{"size": "smoke"}])[0]
    assert size_banner([{"study": "s", "size": "medium"}]) == []


def test_arms_with_the_same_models_are_flagged_and_always_named_together(written):
    same = pd.read_csv(written["out"] / "same_models.csv").set_index("arm")
    assert set(same.index) == {"fixed", "fixed-copy"} and same.loc["fixed", "same_as"] == "fixed-copy"
    report = written["report"]
    assert "**Same models:** **fixed** and **fixed-copy** (seeds 0,1,2)" in report
    # every sentence naming fixed as a winner or loser names its twin with it
    sentences = [line for line in report.splitlines() if "** beat **" in line and "**fixed**" in line]
    assert len(sentences) == 2  # the one-sentence verdict and the detailed one
    for line in sentences:  # a verdict sentence (not the table's question)
        assert "**fixed** (= **fixed-copy**, the same models)" in line


def _frame(arms_losses: dict, robust: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, finals = [], []
    for arm, losses in arms_losses.items():
        for seed, loss in losses.items():
            for r in (1, 2):
                rows.append({"arm": arm, "model": f"{arm}-{seed}", "seed": seed, "report": r - 1, "round": r,
                             "train/loss": loss / r, "val/robust_acc": 0.1 * r, "hp/eps": 0.1 * r,
                             "cost/seconds": np.random.rand()})
            finals.append({"arm": arm, "model": f"{arm}-{seed}", "seed": seed, "robust_acc": robust[arm][seed],
                           "clean_acc": 0.9})
    return pd.DataFrame(rows), pd.DataFrame(finals)


def test_the_same_model_rule_needs_every_seeds_rows_and_verdict_not_just_equal_accuracy():
    losses = {"a": {0: 1.0, 1: 2.0}, "b": {0: 1.0, 1: 2.0}, "c": {0: 1.0, 1: 2.5}, "d": {0: 1.0}}
    robust = {"a": {0: 0.4, 1: 0.5}, "b": {0: 0.4, 1: 0.5}, "c": {0: 0.4, 1: 0.5}, "d": {0: 0.4}}
    frame, finals = _frame(losses, robust)
    same = same_model_arms(frame, finals)
    # c: equal verdicts, other training; d: one seed of the two; timings differ and do not count.
    assert sorted(same["arm"]) == ["a", "b"]
    frame2, finals2 = _frame(losses, {**robust, "b": {0: 0.4, 1: 0.51}})
    assert same_model_arms(frame2, finals2).empty  # same rows, another verdict: not the same models


def test_a_verdict_never_names_one_of_a_tie_without_the_other():
    table = pd.DataFrame([{"a": "x", "b": "y", "question": "", "mean": 0.1, "lo": 0.05, "hi": 0.15, "n": 5,
                           "p_holm": 0.01, "decided": True}])
    twins = {"y": ["y2"], "y2": ["y"]}
    assert "**x** beat **y** (= **y2**, the same models)" in verdict_sentences(table, twins)[0]
    assert "(= **y2**, the same models)" in headline(table, twins, declared=True)
    arms = pd.DataFrame({"arm": ["p", "q", "r"], "n_untrusted": [0, 0, 0], "robust_mean": [0.5, 0.5, 0.3],
                         "n_models": [3, 3, 3], "cost_a": [1, 1, 1], "cost_b": [1, 1, 1]})
    assert "p and q (tied) (50.0%" in _best_sentence(arms)  # equal means at the printed precision
    assert "p (= r, the same models)" in _best_sentence(arms.assign(robust_mean=[0.5, 0.4, 0.5]), {"p": ["r"], "r": ["p"]})


def test_fewer_than_three_seeds_show_per_seed_values_not_intervals(written):
    report = written["report"]
    assert "| searched | 1 (0) | 60.0 (seed 0) | 95.0 (seed 0) |" in report  # one model: its value and seed
    assert "| searched - learned | equal cost (b) | +10.0 | per seed: +10.0 at seed 0 | 1 |" in report
    # the sensitivity line's tuned - fixed pairs 2 seeds: their differences, not a [-100, 100]-wide interval
    assert "tuned - fixed +0.0 (per seed: +1.0 at seed 0, -1.0 at seed 1) (2 seed(s))" in report
    assert "| fixed | 3 (0) | 42.0 [37.0, 47.0] |" in report  # from 3 seeds the interval


def test_each_arm_keeps_one_colour_in_every_plot(written):
    colors = plots.arm_colors(arm_order([written["spec"]], []))
    figures = written["figures"]
    assert {"robust_vs_cost.png", "schedules.png", "pareto.png", "per_seed.png", "attacks.png", "pbt_tree.png"} <= set(figures)
    seen = {}
    for name, fig in figures.items():
        for artist in fig.findobj(lambda a: str(a.get_gid()).startswith("arm:")):
            arm = artist.get_gid().removeprefix("arm:")
            assert _rgb(artist) == {tuple(np.round(to_rgba(colors[arm])[:3], 3))}, (name, arm)
            seen.setdefault(name, set()).add(arm)
    assert seen["per_seed.png"] == set(colors) and seen["schedules.png"] >= {"fixed", "learned", "searched"}
    # the exploit tree shows one arm, the 4th declared: drawn in its own colour, not the first one
    assert seen["pbt_tree.png"] == {"searched"} and colors["searched"] != colors["fixed"]
    assert len(set(colors.values())) == len(colors)


def test_no_arm_hides_under_another_in_the_schedule_plot(tmp_path):
    """Two arms with the same (flat) schedule: each in its own panel, its own colour, style and marker."""
    sched = pd.concat([pd.DataFrame({"round": [1, 2, 3], "hp/eps": [0.3, 0.3, 0.3], "hp/lr": 1e-3, "arm": arm, "model": "m"})
                       for arm in ("a", "b")])
    figures = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig))
        plots.plot_schedules(sched, tmp_path / "s.png", plots.arm_colors(["a", "b"]), plots.arm_styles(["a", "b"]))
    lines = [x for x in figures["s.png"].findobj(Line2D) if str(x.get_gid()).startswith("arm:")]
    assert len(lines) == 4  # 2 arms x 2 hyperparameters
    panels = {(line.get_gid(), line.axes) for line in lines}
    assert len({ax for _, ax in panels}) == 4  # every line alone in its panel: none drawn over another
    by_arm = {gid: next(x for x in lines if x.get_gid() == gid) for gid in ("arm:a", "arm:b")}
    a, b = by_arm["arm:a"], by_arm["arm:b"]
    assert a.get_marker() != b.get_marker() and a.get_linestyle() != b.get_linestyle()
    assert a.axes.get_shared_y_axes().joined(a.axes, b.axes)  # one y scale per hyperparameter: comparable


def _legend(finals, front, tmp_path) -> list[str]:
    figures = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig))
        plots.plot_pareto(finals, front, tmp_path / "p.png")
    legend = figures["p.png"].axes[0].get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def test_the_pareto_legend_lists_only_what_is_drawn(tmp_path):
    finals = pd.DataFrame({"arm": ["a", "a", "b", "c"], "model": ["a0", "a1", "b0", "c0"],
                           "clean_acc": [0.9, 0.8, 0.95, 0.9], "robust_acc": [0.4, 0.5, 0.7, np.nan],
                           "trusted": [True, True, False, True]})
    one = finals.iloc[[0]]
    # c has no point to draw; b only an untrusted cross; a single-model front is ringed, not a line of one point
    assert _legend(finals, one, tmp_path) == ["a", "b", "untrusted", "Pareto front (one model)"]
    assert _legend(finals[finals["arm"] == "a"], finals.iloc[[0, 1]], tmp_path) == ["a", "Pareto front"]


def test_the_report_speaks_in_percent(written):
    report, figures = written["report"], written["figures"]
    imp = pd.read_csv(written["out"] / "importance.csv")
    fanova = imp[imp["evaluator"] == "fanova"].set_index("param")["importance"]
    assert f"| search | hp/eps | {100 * fanova['hp/eps']:.1f} |" in report  # importances as % too
    headers = [line for line in report.splitlines() if line.startswith("| arm |")]
    for h in headers:  # every accuracy column of every table says %
        assert all("%" in c for c in h.split("|") if any(k in c for k in ("acc", "clean", "robust"))), h
    for name in ("per_seed.png", "pareto.png", "robust_vs_cost.png", "attacks.png"):
        ax = figures[name].axes[0]
        assert "%" in ax.get_ylabel(), name
    per_seed = figures["per_seed.png"].axes[0].collections[0].get_offsets()[:, 1]
    assert per_seed.max() > 1 and per_seed.max() <= 100


def test_per_arm_attack_breakdown_in_stage_order(written):
    table = pd.read_csv(written["out"] / "attack_breakdown.csv").set_index("arm")
    assert list(table.columns) == ["n_models", "n_untrusted", "clean", "pgd", "autoattack", "robust"]
    assert table.loc["fixed", "pgd"] == pytest.approx(0.43) and table.loc["fixed", "robust"] == pytest.approx(0.42)
    # tuned-s2's untrusted 0.99 is left out of the means, as it never leads in the main table
    assert table.loc["tuned", "n_untrusted"] == 1 and table.loc["tuned", "n_models"] == 2
    assert table.loc["tuned", "robust"] == pytest.approx(0.41) and table.loc["tuned", "pgd"] == pytest.approx(0.42)
    assert "| fixed | 3 (0) | 95.0 | 43.0 | 42.0 | 42.0 |" in written["report"]
    # every stage, in the order a reader follows, and attacks not in the list after them
    frame = pd.DataFrame([{"arm": "a", "model": f"m{i}", "final_model": True, "report": 0, "eval/per_attack/zoo": 0.6,
                           "eval/per_attack/square": 0.5, "eval/per_attack/pgd": 0.45, "eval/per_attack/fgsm": 0.7 - 0.1 * i,
                           "eval/per_attack/autoattack": 0.42, f"eval/per_attack/transfer-pgd:/s/seed{i + 1}": 0.8 - 0.1 * i}
                          for i in range(2)]).assign(**{"eval/per_attack/transfer-pgd:/s/seed9": [0.75, np.nan]})
    finals = pd.DataFrame({"arm": "a", "model": ["m0", "m1"], "trusted": True, "clean_acc": [0.9, 0.8],
                           "robust_acc": [0.4, 0.4], "metric_source": "eval"})
    t = attack_breakdown(frame, finals)
    assert list(t.columns) == ["arm", "n_models", "n_untrusted", "clean", "fgsm", "pgd", "autoattack", "square",
                               "transfer-pgd", "zoo", "robust"]
    assert t.loc[0, "fgsm"] == pytest.approx(0.65) and t.loc[0, "clean"] == pytest.approx(0.85)
    # each model's own surrogates (paths differ per model) as one stage: m0 worst of 0.8 and 0.75, m1 0.7
    assert t.loc[0, "transfer-pgd"] == pytest.approx((0.75 + 0.7) / 2)
    assert attack_breakdown(frame, finals.assign(metric_source="val")).empty  # no verdict, no breakdown


def test_the_pbt_exploit_tree_names_who_cloned_whom_at_which_cost(written):
    tree = pd.read_csv(written["out"] / "pbt_tree.csv")
    clones = tree[tree["segment"] > 0].set_index(["trial", "segment"])
    # the final model e92ca_00000 cloned e92ca_00002 (itself cloned from e92ca_00003 at 2400) at round 5, 4800 grad evals
    last = clones.loc[("e92ca_00000", 2)]
    assert (last["donor"], last["donor_segment"], last["first_round"], last["start_cost"]) == ("e92ca_00002", 1, 5, 4800)
    assert last["in_final"] and clones.loc[("e92ca_00002", 1), "in_final"] and not clones.loc[("e92ca_00001", 1), "in_final"]
    root = tree.set_index(["trial", "segment"]).loc[("e92ca_00003", 0)]
    assert root["in_final"] and root["final_until_cost"] == 2400 and root["end_cost"] == 9436  # the donor trained on
    assert len(clones) == 4 and set(tree["arm"]) == {"searched"}
    report = written["report"]
    assert "| searched | e92ca_00000 (2) | e92ca_00002 (1) | 5 | 4,800 | **final** |" in report
    assert (written["out"] / "pbt_tree.png").stat().st_size > 5000
