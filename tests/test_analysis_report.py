"""analysis: statistics, study loading, summaries and `metaadv analyze` end to end on a hand-built study."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load_results
from analysis.load import read_eval
from analysis.report import analyze, verdict_sentences
from analysis.stats import mean_ci, paired_diff
from analysis.summaries import final_models, hp_importance, pareto_front
from metaadv.cli import main
from tests.analysis_study import JUDGED, build_study

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def test_mean_ci_is_the_t_interval_computed_by_hand():
    ci = mean_ci([1.0, 2.0, 6.0])
    sd = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert ci["mean"] == 3.0 and ci["n"] == 3
    assert ci["lo"] == pytest.approx(3 - half) and ci["hi"] == pytest.approx(3 + half)
    assert math.isnan(mean_ci([0.5])["lo"]) and mean_ci([0.5, float("nan")])["n"] == 1
    assert mean_ci([])["n"] == 0


def test_a_contrast_needs_three_varying_pairs_to_be_decided():
    """Two seeds that differ by exactly the same amount give a zero-width interval: not a win."""
    two_equal = pd.DataFrame({"arm": ["a", "b"] * 2, "seed": [1, 1, 2, 2], "robust_acc": [0.30, 0.26, 0.40, 0.36]})
    d = paired_diff(two_equal, "a", "b")
    assert d["n"] == 2 and d["sd"] == pytest.approx(0, abs=1e-12) and not d["excludes_zero"]
    three_equal = pd.DataFrame({"arm": ["a", "b"] * 3, "seed": [1, 1, 2, 2, 3, 3],
                                "robust_acc": [0.30, 0.26, 0.40, 0.36, 0.50, 0.46]})
    assert not paired_diff(three_equal, "a", "b")["excludes_zero"]
    three = three_equal.assign(robust_acc=[0.30, 0.26, 0.40, 0.35, 0.50, 0.47])
    assert paired_diff(three, "a", "b")["excludes_zero"]


def test_paired_diff_uses_only_shared_seeds():
    frame = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 2, "seed": [0, 1, 2, 0, 1], "robust_acc": [0.5, 0.6, 0.9, 0.4, 0.45]})
    d = paired_diff(frame, "a", "b")
    assert d["n"] == 2 and d["mean"] == pytest.approx((0.1 + 0.15) / 2) and d["seeds"] == "0,1"
    half = 12.706204736174707 * np.std([0.1, 0.15], ddof=1) / math.sqrt(2)
    assert d["lo"] == pytest.approx(d["mean"] - half) and not d["excludes_zero"]  # 2 pairs: a wide interval
    assert paired_diff(frame, "a", "missing")["n"] == 0


def test_read_eval_takes_the_reports_verdict_and_never_counts_a_skipped_check_as_failed(tmp_path):
    base = {"clean_acc": 0.9, "robust_acc": 0.5, "per_attack": {"pgd": 0.55}, "attacks": {"autoattack": {"version": "standard"}}}
    cases = {"new_ok": {"trusted": True, "checks": {"a": {"status": "passed"}, "b": {"status": "skipped"}}},
             "new_bad": {"trusted": False, "untrusted_reasons": ["x failed", "AutoAttack missing"],
                         "checks": {"a": {"status": "failed"}}},
             "old_bad": {"checks": {"a": {"passed": False}, "b": {"passed": True}}},
             "skipped_only": {"checks": {"a": {"status": "skipped"}}}}
    got = {}
    for name, extra in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({**base, **extra}))
        got[name] = read_eval(tmp_path / f"{name}.json")
    assert got["new_ok"]["eval/trusted"] is True and got["new_ok"]["eval/checks_failed"] == 0
    assert got["new_bad"]["eval/trusted"] is False and got["new_bad"]["eval/untrusted_reasons"] == "x failed; AutoAttack missing"
    assert got["old_bad"]["eval/trusted"] is False and got["old_bad"]["eval/checks_failed"] == 1
    assert math.isnan(got["skipped_only"]["eval/trusted"]) and got["new_ok"]["eval/per_attack/pgd"] == 0.55
    assert got["new_ok"]["eval/aa_version"] == "standard"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def tables(study):
    return analyze(study)


def test_a_study_folder_loads_with_arms_models_seeds_and_verdicts(study, tables):
    frame = tables["results"]
    assert set(frame["arm"]) == {"fixed", "learned", "tuned", "searched"} and set(frame["study"]) == {"learned_vs_searched"}
    learned = frame[frame["model"] == "learned-s1"]
    assert learned["eval/robust_acc"].tolist() == [0.53] * 3 and learned["seed"].tolist() == [1] * 3
    assert learned["controller"].unique().tolist() == ["policy"] and learned["eval/aa_version"].iloc[0] == "fast"
    assert frame.loc[frame["model"] == "tuned-s2", "eval/trusted"].iloc[0] is False
    assert frame.loc[frame["model"] == "tuned-s0", "eval/trusted"].iloc[0] is True  # derived: every check passed
    # PBT population members that are not the final model carry no verdict and are not final models.
    searched = frame[frame["arm"] == "searched"]
    assert searched.loc[searched["final_model"].astype(bool), "trial"].unique().tolist() == ["e92ca_00000"]
    assert frame[frame["experiment"] == "search"]["final_model"].astype(bool).sum() == 0


def test_arm_table_counts_cost_two_ways_and_untrusted_verdicts_at_their_worst_case(tables):
    arms = tables["arms"].set_index("arm")
    assert arms.loc["fixed", "robust_mean"] == pytest.approx(0.42)
    # tuned-s2 is untrusted at a measured 0.99 with no Square attack in its verdict: it counts at 0,
    # never dropped (dropped, the arm's mean was 0.41) and never at its inflated 0.99.
    assert arms.loc["tuned", "robust_mean"] == pytest.approx((0.41 + 0.41 + 0.0) / 3) and arms.loc["tuned", "n_untrusted"] == 1
    bad = tables["models"].set_index("model").loc["tuned-s2"]
    assert bad["robust_acc"] == pytest.approx(0.99) and bad["robust_counted"] == 0.0 and not bad["square"]
    assert arms.loc["fixed", "cost_a"] == 3000 and arms.loc["fixed", "cost_b"] == 3000  # no decision validation
    assert arms.loc["learned", "cost_b"] == pytest.approx((9000 + 900) / 3)  # read every round: every round counts
    # The search and the reruns trained; the search read its trials' last validation (100 each) to pick,
    # the reruns' is logging (the old count charged every round of the search: 5 x 300).
    assert arms.loc["tuned", "cost_b_total"] == pytest.approx(8 * 3000 + 5 * 100)
    # PBT read each trial's validation at its perturbation points (every 3000 grad evals in the trial's own
    # time, exploits included) and at its end: 3 reads of 200 per trial, by hand from the fixture's rows
    # (the old count charged all 40 rows: 8000).
    assert arms.loc["searched", "cost_a"] == 9436 and arms.loc["searched", "cost_b"] == pytest.approx(41139 + 4 * 3 * 200)


def test_declared_contrasts_and_the_plain_verdict(tables):
    c = tables["contrasts"].set_index(["a", "b"])
    lf = c.loc[("learned", "fixed")]
    assert lf["mean"] == pytest.approx((0.10 + 0.11 + 0.11) / 3) and lf["n"] == 3 and lf["excludes_zero"]
    tf = c.loc[("tuned", "fixed")]
    assert tf["n"] == 3 and tf["mean"] == pytest.approx((0.01 - 0.01 - 0.44) / 3)  # seed 2 counts, at its worst case
    sensitivity = tables["contrasts_trusted"].set_index(["a", "b"]).loc[("tuned", "fixed")]
    assert sensitivity["n"] == 2  # the sensitivity line leaves the untrusted model out
    assert c.loc[("searched", "learned"), "n"] == 1 and not c.loc[("searched", "learned"), "excludes_zero"]
    sentences = verdict_sentences(tables["contrasts"])
    assert len(sentences) == 1 and "**learned** beat **fixed** by 10.7 points" in sentences[0]
    none = verdict_sentences(tables["contrasts"].assign(decided=False))
    assert none[0].startswith("No contrast is decided")


def test_pareto_front_and_robust_vs_cost_follow_the_lineage(tables):
    front = tables["pareto"]
    # every model has clean 0.95 except the untrusted one (excluded): the front is the single most robust.
    assert front["model"].tolist() == ["searched-s0"]
    curve = tables["robust_vs_cost"]
    searched = curve[curve["arm"] == "searched"]
    lineage = tables["results"].query("arm == 'searched' and final_model")  # the one model, by lineage
    assert searched["cost_a"].iloc[-1] == 9436 and (searched["n"] == 1).all() and len(searched) == 25
    # The grid's ends are the lineage's first and last rounds; interpolation stays between its values.
    fixed = curve[curve["arm"] == "fixed"]  # 3 models, rounds at 1000, 2000, 3000 grad evals: 0.4r/3 ...
    assert fixed["cost_a"].iloc[0] == 1000 and fixed["cost_a"].iloc[-1] == 3000 and (fixed["n"] == 3).all()
    assert fixed["robust_mean"].iloc[-1] == pytest.approx(0.42) and fixed["robust_mean"].iloc[0] == pytest.approx(0.14)
    mid = fixed.iloc[12]  # cost 2000: round 2 of every model, 2/3 of its final robust accuracy
    assert mid["cost_a"] == 2000 and mid["robust_mean"] == pytest.approx(0.28)
    assert searched["robust_mean"].between(lineage["val/robust_acc"].min(), lineage["val/robust_acc"].max()).all()
    sched = tables["schedules"]
    assert sched[sched["arm"] == "searched"]["hp/eps"].tolist() == [0.2, 0.2, 0.3, 0.3, 0.2, 0.2, 0.2, 0.2]
    assert sched[sched["arm"] == "learned"]["hp/eps"].tolist() == [0.3, 0.15, 0.075]


def test_importance_reads_random_search_trials_only(tables):
    imp = tables["importance"]
    assert set(imp["experiment"]) == {"search"}  # PBT (hp change) and single-config reruns are left out
    mdi = imp[imp["evaluator"] == "mean_decrease_impurity"].set_index("param")["importance"]
    assert set(mdi.index) == {"hp/eps", "hp/lr"} and mdi.idxmax() == "hp/eps"  # robust = 0.2 + eps here
    assert set(imp["evaluator"]) == {"fanova", "mean_decrease_impurity"} and (imp["n_trials"] == 5).all()


def test_importance_leaves_out_replays_and_a_column_that_repeats_another():
    rows = []
    for exp, controller in (("search", "schedule"), ("replays", "replay")):
        for i, eps in enumerate([0.1, 0.2, 0.3, 0.15]):
            for r in (1, 2):
                rows.append({"experiment": exp, "trial": f"t{i}", "controller": controller, "source": "x", "round": r,
                             "hp/eps": eps, "hp/eps_start": eps, "hp/lr": 1e-3 * (1 + i % 2),
                             "val/robust_acc": 0.2 + eps})
    imp = hp_importance(pd.DataFrame(rows))
    assert set(imp["experiment"]) == {"search"}  # a replay's hp follow its table, even when constant
    assert set(imp["param"]) == {"hp/eps", "hp/lr"}  # eps_start repeats eps trial by trial


def test_analyze_writes_the_report_tables_and_plots(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["analyze", str(study), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "arms.csv", "contrasts.csv", "models.csv", "robust_vs_cost.csv", "schedules.csv",
            "pareto.csv", "importance.csv", "results.csv"} <= names
    for png in ("robust_vs_cost.png", "schedules.png", "pareto.png", "per_seed.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 5000
    report = (out / "report.md").read_text()
    assert "| learned | 3 (0) | 52.7 [" in report and "cost (a)" in report and "cost (b)" in report
    assert "**learned** beat **fixed**" in report
    assert "tuned/tuned-s2 (measured 99.0%, counted 0.0%, no Square attack)" in report
    assert "Sensitivity, without the untrusted models: " in report and "tuned - fixed" in report
    assert pd.read_csv(out / "arms.csv").set_index("arm").loc["fixed", "cost_b"] == 3000
    assert "## Each arm's best model, judged again" in report
    assert "| learned | learned-s2 | 55.0 | fast | 51.0 | standard | 95.0 | True |" in report
    assert main(["analyze", str(study), "--out", str(out)]) == 0  # an earlier report is replaced


def test_without_out_the_report_goes_into_the_folder_and_the_command_says_where(study, tmp_path, capsys):
    import shutil

    folder = tmp_path / "study"
    shutil.copytree(study, folder)
    assert main(["analyze", str(folder)]) == 0
    assert (folder / "report" / "report.md").is_file()
    assert f"report: {folder / 'report' / 'report.md'}" in capsys.readouterr().out
    first = (folder / "report" / "arms.csv").read_text()
    assert main(["analyze", str(folder)]) == 0  # again: the report is replaced, never read as results
    assert (folder / "report" / "arms.csv").read_text() == first


def test_the_judge_phase_pairs_each_judged_model_with_its_first_verdict(study, tables):
    judged = tables["judged"]
    assert len(judged) == 1
    row = judged.iloc[0]
    assert (row["arm"], row["model"], row["seed"]) == (JUDGED["arm"], JUDGED["model"], 2)
    assert row["eval/robust_acc"] == JUDGED["first"] and row["judge/robust_acc"] == JUDGED["again"]
    assert (row["eval/aa_version"], row["judge/aa_version"]) == ("fast", "standard")


def test_best_per_arm_skips_untrusted_and_missing_verdicts_and_ties_go_to_the_first():
    from metaadv.study.judge import best_per_arm

    models = [{"arm": a, "model": m} for a, m in [("x", "s1"), ("x", "s2"), ("x", "s3"), ("y", "s1"), ("z", "s1")]]
    verdicts = {("x", "s1"): {"robust_acc": 0.5, "trusted": True}, ("x", "s2"): {"robust_acc": 0.9, "trusted": False},
                ("x", "s3"): {"robust_acc": 0.5, "trusted": None}, ("y", "s1"): {"robust_acc": 0.1, "trusted": False}}
    assert best_per_arm(models, verdicts) == [models[0]]  # y: only untrusted; z: no verdict
    verdicts[("x", "s3")]["robust_acc"] = 0.6  # trust unknown counts, as in the arm's mean
    assert best_per_arm(models, verdicts) == [models[2]]


def test_missing_arguments_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metaadv: error: analyze:")


@pytest.mark.parametrize("case", ["missing", "empty", "occupied"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, study, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {"missing": [str(tmp_path / "nope")], "empty": [str(empty)], "occupied": [str(study)]}[case]
    if case == "occupied":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    assert main(["analyze", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metaadv: error:")
    assert (not out.exists()) if case != "occupied" else [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]


def test_run_folders_load_with_their_own_arm_and_costs(tmp_path):
    for seed in (0, 1):
        run = tmp_path / "runs" / f"s{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"method": "pgd-at", "controller": "policy", "seed": seed}))
        pd.DataFrame({"round": [1, 2], "val/robust_acc": [0.2, 0.3 + seed / 10], "val/clean_acc": [0.8, 0.9],
                      "hp/eps": [0.1, 0.3], "cost/grad_evals": [500, 1200], "cost/eval_grad_evals": [50, 100]}
                     ).to_csv(run / "metrics.csv", index=False)
    frame = load_results(tmp_path / "runs")
    assert set(frame["arm"]) == {"pgd-at/policy"} and frame["cost/round_grad_evals"].tolist() == [500, 700] * 2
    finals = final_models(frame)
    assert finals["metric_source"].tolist() == ["val", "val"] and finals["robust_acc"].tolist() == [0.3, 0.4]
    assert len(pareto_front(finals)) == 1 and hp_importance(frame).empty


# -- the shared statistics (analysis/stats.py) -------------------------------------------------


def test_holm_adjustment_against_a_hand_computation():
    from analysis.stats import holm

    # sorted: 0.01 (x3), 0.02 (x2) -> max(0.03, 0.04) = 0.04, 0.04 (x1) -> 0.04; NaN is not counted.
    assert holm([0.04, 0.01, math.nan, 0.02]) == pytest.approx([0.04, 0.03, math.nan, 0.04], nan_ok=True)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, and monotone
    assert holm([]) == []


def test_sign_flip_test_is_exact_and_never_zero_for_equal_differences():
    from analysis.stats import sign_flip_p

    # 5 equal positive differences: only the all-positive and all-negative patterns are as extreme.
    assert sign_flip_p([0.02] * 5) == pytest.approx(2 / 32)
    # [1, 2, 3]: |sum| >= 6 only for +++ and ---; |sum| >= 4 for 4 of 8 patterns (sums 6, 2, 0, 4, ...).
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert sign_flip_p([1.0, -1.0]) == 1.0 and math.isnan(sign_flip_p([]))


def test_paired_diff_refuses_two_models_of_one_seed_and_uses_scipys_interval():
    from scipy import stats as sps

    from analysis.stats import paired_diff

    frame = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "seed": [1, 2, 3] * 2,
                          "robust_acc": [0.5, 0.6, 0.9, 0.4, 0.4, 0.5]})
    d = paired_diff(frame, "a", "b")
    ci = sps.ttest_1samp([0.1, 0.2, 0.4], 0.0).confidence_interval(0.95)
    assert (d["lo"], d["hi"]) == pytest.approx((ci.low, ci.high)) and d["p_flip"] == pytest.approx(2 / 8)
    assert d["p"] == pytest.approx(sps.ttest_1samp([0.1, 0.2, 0.4], 0.0).pvalue)
    twice = pd.concat([frame, frame.iloc[[0]].assign(robust_acc=0.1)])
    with pytest.raises(ValueError, match="arm 'a' has 2 rows for seed 1"):
        paired_diff(twice, "a", "b")


def test_a_contrast_is_decided_only_after_holm():
    from analysis.report import verdict_sentences
    from analysis.summaries import contrasts

    # x - y over 4 seeds: +0.10, +0.13, +0.10, +0.13 (t p = 0.00092, the smallest of the three;
    # x - z: p = 0.86, y - z: p = 0.026).
    z = {1: 0.35, 2: 0.28, 3: 0.25, 4: 0.36}
    rows = []
    for seed in (1, 2, 3, 4):
        rows += [{"arm": "x", "seed": seed, "robust_acc": 0.3 + 0.03 * (seed % 2 == 0), "trusted": True},
                 {"arm": "y", "seed": seed, "robust_acc": 0.2, "trusted": True},
                 {"arm": "z", "seed": seed, "robust_acc": z[seed], "trusted": True}]
    finals = pd.DataFrame(rows).assign(clean_acc=0.9)
    finals["robust_counted"] = finals["robust_acc"]
    declared = [["x", "y", "q1"], ["x", "z", "q2"], ["y", "z", "q3"]]
    table = contrasts(finals, declared)
    p = table.loc[0, "p"]
    assert p == pytest.approx(0.000923, rel=1e-3)
    assert table.loc[0, "p_holm"] == pytest.approx(3 * p)  # the smallest of 3 p-values, times 3
    assert table.loc[2, "p_holm"] == pytest.approx(max(3 * p, 2 * table.loc[2, "p"]))  # the second, times 2
    assert table.loc[0, "p_flip"] == pytest.approx(2 / 16) and table.loc[0, "p_flip_holm"] >= 2 / 16
    assert bool(table.loc[0, "decided"]) and "**x** beat **y**" in verdict_sentences(table)[0]
    # The same contrast among many: Holm lifts it over 0.05 and nothing is decided any more.
    many = contrasts(finals, declared * 20)
    assert many.loc[0, "p_holm"] > 0.05 and not many["decided"].any()
    assert verdict_sentences(many)[0].startswith("No contrast is decided")


def test_an_untrusted_model_with_a_square_attack_counts_at_its_measured_worst_case(tmp_path):
    from analysis.summaries import final_models

    frame = pd.DataFrame([
        {"arm": "a", "model": f"a-s{i}", "experiment": "a", "trial": f"t{i}", "seed": i, "method": "pgd-at",
         "controller": "schedule", "final_model": True, "report": 1, "round": 1, "cost/grad_evals": 100,
         "val/robust_acc": 0.5, "val/clean_acc": 0.9, "eval/robust_acc": r, "eval/clean_acc": 0.9,
         "eval/trusted": t, "eval/aa_version": "fast", "eval/per_attack/square": sq}
        for i, (r, t, sq) in enumerate([(0.30, False, 0.31), (0.40, False, float("nan")), (0.50, True, float("nan"))])])
    finals = final_models(frame).set_index("model")
    assert finals.loc["a-s0", "robust_counted"] == pytest.approx(0.30)  # Square ran: its measured worst case
    assert finals.loc["a-s1", "robust_counted"] == 0.0  # no gradient-free attack: the worst case is 0
    assert finals.loc["a-s2", "robust_counted"] == pytest.approx(0.50)  # trusted: as measured


def test_differences_equal_up_to_rounding_are_constant_not_decisive():
    from analysis.stats import paired_stats

    diffs = [0.30 - 0.25, 0.10 - 0.05]  # 0.05 both, but for the last bit
    assert diffs[0] != diffs[1]
    s = paired_stats(diffs)
    assert s["sd"] == 0.0 and s["p"] == 1.0 and s["lo"] == s["hi"] == s["mean"]


def test_minimum_detectable_effect_has_the_power_it_claims():
    """Simulated paired studies whose true difference is the MDE reject at about 80%; at half of it far less."""
    import numpy as np
    from scipy import stats as sps

    from analysis.stats import min_detectable_effect, seeds_needed

    sd, n, m = 0.05, 10, 4
    mde = min_detectable_effect(sd, n, m=m)
    assert mde == pytest.approx((sps.t.ppf(1 - 0.05 / 8, 9) + sps.t.ppf(0.8, 9)) * sd / np.sqrt(n))
    rng = np.random.default_rng(0)

    def power(effect):
        d = rng.normal(effect, sd, size=(4000, n))
        return float(np.mean(sps.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05 / m))

    assert 0.74 <= power(mde) <= 0.9
    assert power(mde / 2) < 0.4
    assert seeds_needed(sd, mde, m=m) == n  # the inverse: n seeds are the fewest that reach this MDE
    assert min_detectable_effect(sd, 1) != min_detectable_effect(sd, 1)  # NaN below two pairs


def test_the_declared_aim_is_met_only_by_a_decided_contrast_at_least_that_large():
    from analysis.report import aim_sentence
    from analysis.summaries import contrasts

    rows = []
    for seed in range(1, 7):  # x - y: +4 to +6 points on every seed; w - y: +1 to +2 points
        rows += [{"arm": "x", "seed": seed, "robust_acc": 0.34 + 0.02 * (seed % 2) + 0.001 * seed},
                 {"arm": "w", "seed": seed, "robust_acc": 0.31 + 0.01 * (seed % 2)},
                 {"arm": "y", "seed": seed, "robust_acc": 0.30}]
    finals = pd.DataFrame(rows).assign(clean_acc=0.9, trusted=True)
    finals["robust_counted"] = finals["robust_acc"]
    declared = [["x", "y", "q1"], ["w", "y", "q2"]]
    aim = {"min_effect": 0.03, "statement": "a learned arm 3 points above y", "planned_seeds": 10}
    table = contrasts(finals, declared, aim=aim).set_index("a")
    assert table.loc["x", "decided"] and table.loc["x", "meets_aim"]
    assert table.loc["w", "decided"] and not table.loc["w", "meets_aim"]  # decided, but below the aim
    assert table.loc["x", "mde_planned"] < table.loc["x", "mde"]  # more seeds, a finer study
    sentence = aim_sentence(table.reset_index(), aim)
    assert "Met by x - y" in sentence and "w - y" not in sentence.split("Minimum")[0]
    # An aim restricted to one contrast judges only that one.
    only = contrasts(finals, declared, aim={**aim, "contrasts": ["w - y"]}).set_index("a")
    assert not only.loc["x", "meets_aim"] and only["aim_effect"].notna().sum() == 1
    assert "Not met" in aim_sentence(only.reset_index(), {**aim, "contrasts": ["w - y"]})


def test_decision_reads_follow_pbts_interval_and_a_search_reads_only_its_end():
    from analysis.cost import decision_reads

    # Ray's rule: read once at least the interval has passed since the last read (burn-in over), and at the end.
    assert decision_reads([900, 1800, 2700, 3600, 3300, 4200, 7036, 9436], 3000) == \
        [False, False, False, True, False, False, True, True]
    assert decision_reads([1000, 2000, 3000], 1000, burn_in=2500) == [False, False, True]
    assert decision_reads([1, 2, 3], None) == [False, False, True]
    assert decision_reads([], 10) == []


def test_a_replay_carries_its_sources_cost_b_per_model():
    from analysis.cost import arm_cost

    def rows(arm, trials, per_round, final, source=None):
        out = []
        for t in range(trials):
            for r in (1, 2):
                out.append({"arm": arm, "experiment": arm, "trial": f"{arm}{t}", "model": f"{arm}{t}", "round": r,
                            "cost/round_grad_evals": per_round, "cost/round_eval_grad_evals": 10.0,
                            "decision_validation": arm == "searched", "decision_read": arm == "searched" and r == 2,
                            "final_model": t < final, "cost_source": source})
        return out

    # A population of 4 (1 final model) and its lineage replayed once; a fixed arm beside them.
    frame = pd.DataFrame(rows("searched", 4, 100.0, 1) + rows("replay-searched", 1, 100.0, 1, "searched")
                         + rows("fixed", 2, 100.0, 2))
    cost = arm_cost(frame).set_index("arm")
    assert cost.loc["searched", "cost_b"] == 4 * 200 + 4 * 10  # training of 4 trials + their last reads
    assert cost.loc["replay-searched", "cost_b_source"] == 840 and cost.loc["replay-searched", "cost_b"] == 200 + 840
    assert cost.loc["fixed", "cost_b"] == 200 and cost.loc["fixed", "cost_b_source"] == 0


def test_analyze_reads_a_study_folder_written_before_the_aim_pairs_and_new_cost_rules(tmp_path):
    """tests/fixtures/study_61b0fad: a tiny study as 61b0fad wrote it (its README says how)."""
    from analysis.report import analyze, write_report

    old = Path(__file__).parent / "fixtures" / "study_61b0fad"
    tables = analyze(old)
    models = tables["models"].set_index(["arm", "model"])
    assert len(models) == 14 and models.loc[("searched", "pbt-0"), "pair"] == 1  # its population, though no column said so
    assert models.loc[("fixed", "seed2"), "pair"] == 2
    arms = tables["arms"].set_index("arm")
    costs = __import__("analysis.cost", fromlist=["arm_cost"]).arm_cost(tables["results"]).set_index("arm")
    # The replay carries its search's cost (b) per model; a search pays only the validation its decisions read.
    assert costs.loc["replay-searched", "cost_b_source"] == pytest.approx(costs.loc["searched", "cost_b"])
    assert arms.loc["replay-searched", "cost_b"] > costs.loc["searched", "cost_b"]
    assert costs.loc["searched", "cost_b_validation"] < tables["results"].query("arm == 'searched'")[
        "cost/round_eval_grad_evals"].sum()
    assert "meets_aim" in tables["contrasts"] and not tables["contrasts"]["meets_aim"].any()  # no aim declared then
    out = write_report([old], tmp_path / "report")
    text = (out / "report.md").read_text()
    assert "No aim was declared" in text and all(a in text for a in ("tuned", "transfer-learned", "replay-searched"))


def test_a_deployed_policys_meta_training_counts_once_in_its_arms_cost_b_only():
    from analysis.cost import arm_cost

    rows = []
    for arm, meta in (("policy", 5000.0), ("fixed", None)):
        for seed in (1, 2):
            rows.append({"arm": arm, "experiment": arm, "trial": f"{arm}{seed}", "model": f"seed{seed}", "round": 1,
                         "cost/round_grad_evals": 100.0, "decision_validation": False, "decision_read": False,
                         "final_model": True, **({"cost/meta_training": meta} if meta else {})})
    cost = arm_cost(pd.DataFrame(rows)).set_index("arm")  # fixed's rows hold NaN in the shared column
    assert cost.loc["policy", "cost_b_meta"] == 5000 and cost.loc["policy", "cost_b"] == (200 + 5000) / 2
    assert cost.loc["fixed", "cost_b_meta"] == 0 and cost.loc["fixed", "cost_b"] == 100


def test_the_report_says_when_a_meta_trained_policy_breaks_even_with_the_best_hand_made_arm():
    from analysis.report import meta_training_lines

    rows = []
    for arm, controller, per_round, meta in (("policy", "policy", 100.0, 1000.0), ("pgd4", "schedule", 150.0, None),
                                             ("pgd10", "schedule", 300.0, None)):
        for seed in (1, 2):
            rows.append({"arm": arm, "controller": controller, "experiment": arm, "trial": f"{arm}{seed}",
                         "model": f"seed{seed}", "round": 1, "cost/round_grad_evals": per_round,
                         "decision_validation": False, "decision_read": False, "final_model": True,
                         **({"cost/meta_training": meta} if meta else {})})
    arms = pd.DataFrame({"arm": ["policy", "pgd4", "pgd10"], "robust_mean": [0.5, 0.45, 0.40]})
    lines = meta_training_lines({"results": pd.DataFrame(rows), "arms": arms})
    # (1000 + N * 100) / N <= 150 (pgd4, the best hand-made arm) from N = 20.
    assert "meta-training 1,000 grad evals" in lines[3] and "Against pgd4" in lines[3] and "breaks even at 20" in lines[3]
    arms["robust_mean"] = [0.5, 0.40, 0.45]  # now pgd10 is the best hand-made arm: (1000 + 100 N) / N <= 300 from N = 5
    assert "breaks even at 5" in meta_training_lines({"results": pd.DataFrame(rows), "arms": arms})[3]
