"""analysis on studies a user meets while they run: partial reports, study status, two copies of one
study, empty CSVs, and the per-model / per-round frames of ``analysis.load_study``."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import StudyFrames, load_results, load_study
from analysis.load import load_judged
from analysis.report import analyze
from analysis.status import read_csv, study_status
from metaadv.cli import main
from metaadv.errors import UserError
from tests.analysis_study import ROBUST, build_study

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# The hand-built study as the engine would declare it: 3 seeds, a search of 5, one population of 4
# (arms/searched/pbt_tiny): 3 + 3 + (5 + 3) + 4 = 18 trials, 3 + 3 + 3 + 1 = 10 models.
SIZE = {"seeds": 3, "search_samples": 5, "populations": 1, "population": 4}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    study = build_study(tmp_path_factory.mktemp("done"))
    spec = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**spec, "size_settings": SIZE, "status": "done"}))
    return study


def _running(done, tmp_path, keep=("study.json", "arms", "models.csv", "eval", "judge")):
    """A copy of the finished study with only ``keep``, and study.json saying it is running."""
    folder = tmp_path / "running"
    folder.mkdir()
    for name in keep:
        (shutil.copytree if (done / name).is_dir() else shutil.copy)(done / name, folder / name)
    spec = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**spec, "status": "running"}))
    return folder


def _analyze(capsys, *args):
    code = main(["analyze", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_study_with_only_study_json_gets_a_partial_report_not_a_traceback(done, tmp_path, capsys):
    folder = _running(done, tmp_path, keep=("study.json",))
    code, out, err = _analyze(capsys, folder, "--out", tmp_path / "report")
    assert code == 0 and err == ""
    assert out.splitlines()[0].startswith(f"partial report: study learned_vs_searched (tiny) in {folder}: still running")
    assert "0/18 trials trained, 0/10 models evaluated" in out
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Partial report" in report and "No final model yet" in report
    assert f"metaadv study learned_vs_searched --size tiny --out {folder} --resume" in report
    status = pd.read_csv(tmp_path / "report" / "status.csv").set_index("arm")
    assert status.loc["tuned", "trials_planned"] == 8 and status["trials_done"].sum() == 0
    assert len(pd.read_csv(tmp_path / "report" / "results.csv")) == 0  # a header: readable, no rows


def test_training_done_without_models_csv_reports_what_is_left(done, tmp_path, capsys):
    folder = _running(done, tmp_path, keep=("study.json", "arms"))
    code, out, err = _analyze(capsys, folder, "--out", tmp_path / "report")
    assert code == 0 and err == ""
    assert "18/18 trials trained, 0/10 models evaluated" in out
    tables = analyze(folder)
    assert tables["models"].empty and list(tables["arms"].columns)[:2] == ["arm", "n_models"]
    assert len(tables["results"]) > 0 and not tables["results"]["final_model"].astype(bool).any()
    assert tables["contrasts"]["n"].tolist() == [0, 0, 0]
    assert not list((tmp_path / "report").glob("*.png"))  # nothing to plot yet


def test_a_partly_evaluated_study_reports_per_arm_what_is_done(done, tmp_path, capsys):
    folder = _running(done, tmp_path)
    shutil.rmtree(folder / "eval" / "learned")
    code, out, _ = _analyze(capsys, folder, "--out", tmp_path / "report")
    assert code == 0 and "18/18 trials trained, 7/10 models evaluated" in out
    status = study_status(folder).set_index("arm")
    assert status.loc["learned", ["models", "models_evaluated", "models_planned"]].tolist() == [3, 0, 3]
    assert status.loc["fixed", ["models", "models_evaluated"]].tolist() == [3, 3]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Partial report" in report and "## Main table" in report  # the numbers so far, said to be partial
    models = pd.read_csv(tmp_path / "report" / "models.csv").set_index("model")
    assert models.loc["learned-s0", "metric_source"] == "val" and models.loc["fixed-s0", "metric_source"] == "eval"


def test_progress_json_tells_finished_experiments_from_ones_still_training(done, tmp_path):
    folder = _running(done, tmp_path, keep=("study.json", "arms"))
    (folder / "progress.json").write_text(json.dumps({"experiments": {"fixed/fixed": [{"trial": t} for t in "abc"]}}))
    status = study_status(folder).set_index("arm")
    assert status.loc["fixed", ["trials_done", "trials_started"]].tolist() == [3, 0]
    assert status.loc["learned", ["trials_done", "trials_started", "trials_planned"]].tolist() == [0, 3, 3]


def test_a_finished_study_reports_no_partial_section(done, tmp_path, capsys):
    code, out, _ = _analyze(capsys, done, "--out", tmp_path / "report")
    assert code == 0 and "partial report" not in out
    assert "Partial report" not in (tmp_path / "report" / "report.md").read_text()


def test_study_status_prints_the_same_lines_and_refuses_a_folder_without_a_study(done, tmp_path, capsys):
    folder = _running(done, tmp_path, keep=("study.json", "arms"))
    assert main(["study", "--status", "--out", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "18/18 trials trained, 0/10 models evaluated" in lines[0]
    assert any(line.split()[:3] == ["tuned", "tuned", "8/8"] for line in lines)
    assert lines[-1].strip().startswith("if it was stopped: metaadv study learned_vs_searched") and "--resume" in lines[-1]
    assert main(["study", "--status", "--out", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metaadv: error: no study in")


def test_the_planned_counts_are_the_engines(tmp_path):
    """analysis.status reads planned trials from study.json; the engine's own count must agree."""
    from analysis.status import _planned
    from metaadv.study.units import derived_trials, phase1_units
    from tune_experiments.registry import load_study as declared

    study = declared("learned_vs_searched")
    for size in study.sizes:
        spec = study.declaration(size)
        s = study.sizes[size]
        engine = sum(u.trials for u in phase1_units(study, s)) + derived_trials(study, s)
        assert sum(arm["planned_trials"] for arm in spec["arms"].values()) == engine, size
        # A folder written before study.json held the counts: the reading from its size settings.
        old = sum(_planned(spec, arm, exp) for arm in spec["arms"].values() for exp in arm["experiments"])
        # (It counts the arm's seeds where the engine runs one model per population: replays of the searched
        # arm and arms paired with its populations, which folders of that time did not have.)
        assert old == engine + sum(s.seeds - s.populations for a in study.arms
                                   if (a.kind == "replay" and study.arm(a.source).kind == "searched")
                                   or a.unit == "population"), size


def test_two_folders_holding_one_study_are_refused_in_one_line(done, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    code, out, err = _analyze(capsys, done, copy, "--out", tmp_path / "report")
    assert code == 2 and not (tmp_path / "report").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "both hold study 'learned_vs_searched'" in lines[0]
    with pytest.raises(UserError, match="both hold study"):
        load_results(done, tmp_path)  # found under a parent folder too
    assert _analyze(capsys, done, done.parent, "--out", tmp_path / "again")[0] == 0  # the same folder twice: read once


def test_empty_and_lone_newline_csvs_read_as_no_rows(done, tmp_path):
    folder = _running(done, tmp_path)
    progress = next((folder / "arms" / "fixed" / "fixed").glob("*/progress.csv"))
    progress.write_text("\n")  # a trial that has not reported yet
    frame = load_results(folder)
    assert frame[frame["arm"] == "fixed"]["trial"].nunique() == 2
    (folder / "models.csv").write_text("\n")
    assert not load_results(folder)["final_model"].astype(bool).any() and load_judged(folder).empty
    assert read_csv(progress).empty and study_status(folder)["models"].sum() == 0


def test_the_reports_judged_csv_is_a_header_when_no_model_was_judged(done, tmp_path, capsys):
    folder = _running(done, tmp_path, keep=("study.json", "arms", "models.csv", "eval"))
    assert _analyze(capsys, folder, "--out", tmp_path / "report")[0] == 0
    judged = pd.read_csv(tmp_path / "report" / "judged.csv")  # a lone newline made pandas raise EmptyDataError
    assert judged.empty and {"arm", "model", "judge/robust_acc"} <= set(judged.columns)


def _uneven_study(root):
    """Arm ``a``: model a-s0 reports 1 round, verdict 0.2; a-s1 reports 4 rounds, verdict 0.6."""
    study = root / "uneven"
    models = []
    for seed, (rounds, robust) in enumerate([(1, 0.2), (4, 0.6)]):
        trial = study / "arms" / "a" / "a" / f"metaadv_trial_t{seed}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text(json.dumps({"kind": "train", "method": "pgd-at", "seed": seed}))
        pd.DataFrame({"round": range(1, rounds + 1), "val/robust_acc": 0.1, "hp/eps": 0.3, "trial_id": f"t{seed}",
                      "cost/grad_evals": [100 * r for r in range(1, rounds + 1)]}).to_csv(trial / "progress.csv", index=False)
        path = study / "eval" / "a" / f"a-s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"robust_acc": robust, "clean_acc": 0.9, "n": 10, "eps": 0.3, "trusted": True,
                                    "per_attack": {"pgd": robust}}))
        models.append({"arm": "a", "model": f"a-s{seed}", "seed": seed, "experiment": "a", "trial": f"t{seed}",
                       "checkpoint": "x", "eval": f"eval/a/a-s{seed}.json", "judge": ""})
    pd.DataFrame(models).to_csv(study / "models.csv", index=False)
    (study / "study.json").write_text(json.dumps({"study": "uneven", "status": "done",
                                                  "arms": {"a": {"kind": "single", "experiments": ["a"]}}}))
    return study


def test_load_study_gives_one_row_per_model_so_an_arm_mean_is_not_row_weighted(tmp_path):
    frames = load_study(_uneven_study(tmp_path))
    assert isinstance(frames, StudyFrames)
    models, rounds = frames.models, frames.rounds
    assert models["model"].tolist() == ["a-s0", "a-s1"] and models["rounds"].tolist() == [1, 4]
    assert models.groupby("arm")["eval/robust_acc"].mean()["a"] == pytest.approx(0.4)  # (0.2 + 0.6) / 2
    # The tidy frame repeats the verdict on every round row: the same groupby weights a-s1 four times.
    tidy = load_results(tmp_path / "uneven")
    assert tidy.groupby("arm")["eval/robust_acc"].mean()["a"] == pytest.approx((0.2 + 4 * 0.6) / 5)
    assert not [c for c in rounds if c.startswith("eval/")] and len(rounds) == 5
    assert models["cost_a"].tolist() == [100, 400]


def test_load_study_columns_are_numbers_not_objects(done):
    frames = load_study(done)
    models, rounds = frames.models, frames.rounds
    assert len(models) == 10 and models.set_index("model").loc["learned-s1", "eval/robust_acc"] == 0.53
    for col in ("eval/robust_acc", "eval/clean_acc", "eval/n", "eval/eps", "eval/per_attack/pgd", "judge/robust_acc",
                "cost_a", "seed"):
        assert pd.api.types.is_numeric_dtype(models[col]), col
    assert pd.api.types.is_bool_dtype(models["eval/trusted"]) and not models.set_index("model").loc["tuned-s2", "eval/trusted"]
    assert models.set_index("model").loc["learned-s2", "judge/robust_acc"] == 0.51
    means = models.groupby("arm")["eval/robust_acc"].mean()
    assert means["fixed"] == pytest.approx(np.mean(ROBUST["fixed"])) and means["learned"] == pytest.approx(np.mean(ROBUST["learned"]))
    numeric = [c for c in rounds if c.split("/")[0] in ("val", "train", "hp", "cost") or c in ("round", "seed")]
    assert numeric and all(pd.api.types.is_numeric_dtype(rounds[c]) for c in numeric)
    # the tidy frame's verdicts are numbers too (they were object columns, filled model by model)
    assert pd.api.types.is_float_dtype(load_results(done)["eval/robust_acc"])


def test_load_study_on_a_study_in_progress_and_on_a_folder_that_is_none(done, tmp_path):
    folder = _running(done, tmp_path, keep=("study.json",))
    frames = load_study(folder)
    assert frames.models.empty and frames.rounds.empty
    assert {"arm", "model", "seed", "cost_a"} <= set(frames.models) and {"arm", "round"} <= set(frames.rounds)
    m = frames.models  # the README's example runs before any verdict exists
    assert m[m["eval/trusted"].fillna(True).astype(bool)].groupby("arm")["eval/robust_acc"].mean().empty
    with pytest.raises(UserError, match="not a study folder"):
        load_study(tmp_path / "nothing")
