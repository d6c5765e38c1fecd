"""analysis on studies a user meets while they run: partial reports, study status, two copies of one
study, empty CSVs."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from analysis import load_results
from analysis.load import load_judged
from analysis.report import analyze
from analysis.status import read_csv, study_status
from metaadv.cli import main
from metaadv.errors import UserError
from tests.analysis_study import build_study

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
    from metaadv.tune.study.units import derived_trials, phase1_units
    from tune_experiments.registry import load_study as declared

    study = declared("learned_vs_searched")
    for size in study.sizes:
        spec = study.declaration(size)
        planned = sum(_planned(spec, arm, exp) for arm in spec["arms"].values() for exp in arm["experiments"])
        s = study.sizes[size]
        assert planned == sum(u.trials for u in phase1_units(study, s)) + derived_trials(study, s), size


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
