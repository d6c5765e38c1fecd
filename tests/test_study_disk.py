"""A study's disk: once an experiment is finished and recorded, each trial keeps its last
checkpoint (and the recorded one, where PBT left them apart), and a resume reads nothing else.
Also: the study's ``--loggers`` reach each experiment it starts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from metaadv.study.disk import prune_checkpoints


def _trial(root: Path, name: str, rounds: int, recorded: int | None) -> dict:
    folder = root / name
    for r in range(rounds):
        (folder / f"checkpoint_{r:06d}").mkdir(parents=True)
        (folder / f"checkpoint_{r:06d}" / "checkpoint.pt").write_bytes(b"x" * 1000)
    (folder / "result.json").write_text("{}\n")
    checkpoint = None if recorded is None else str(folder / f"checkpoint_{recorded:06d}")
    return {"trial": name, "seed": 1, "config": {}, "metrics": {"val/robust_acc": 0.5}, "path": str(folder),
            "checkpoint": checkpoint, "error": None}


def _left(trial: dict) -> list[str]:
    return sorted(p.name for p in Path(trial["path"]).glob("checkpoint_*"))


def test_each_finished_trial_keeps_its_recorded_and_its_newest_checkpoint_only(tmp_path):
    plain = _trial(tmp_path, "plain", 4, recorded=3)
    exploited = _trial(tmp_path, "exploited", 5, recorded=2)  # the recorded one is not the newest: both stay
    failed = _trial(tmp_path, "failed", 3, recorded=None)
    remote = {**_trial(tmp_path, "remote", 3, recorded=2), "checkpoint": "s3://bucket/remote/checkpoint_000002"}
    removed, freed = prune_checkpoints([plain, exploited, failed, remote])
    assert _left(plain) == ["checkpoint_000003"]
    assert _left(exploited) == ["checkpoint_000002", "checkpoint_000004"]
    assert _left(failed) == ["checkpoint_000002"]
    assert len(_left(remote)) == 3  # a URI's checkpoints are not this machine's to delete
    assert (removed, freed) == (3 + 3 + 2, 8 * 1000)
    assert (Path(plain["path"]) / "result.json").is_file()
    assert prune_checkpoints([plain, exploited, failed]) == (0, 0)  # again: nothing left to delete


def _result(trial: dict) -> SimpleNamespace:
    """What Runner.run reads of a ray.tune.Result (of a trial Tune ended: ``done``)."""
    return SimpleNamespace(metrics={"trial_id": trial["trial"], **trial["metrics"], "done": True}, config={"seed": trial["seed"]},
                           checkpoint=SimpleNamespace(path=trial["checkpoint"]), path=trial["path"], error=None)


@pytest.mark.parametrize("keep", [False, True])
def test_an_experiment_is_pruned_once_recorded_and_a_resume_skips_it_and_finds_its_checkpoints(tmp_path, monkeypatch,
                                                                                              keep):
    pytest.importorskip("ray")
    from metaadv.study import units
    from metaadv.study.folder import Folder, StudyOptions
    from metaadv.study.progress import Progress
    from tune_experiments.learned_vs_searched import STUDY

    # (Elsewhere than arms/fixed/fixed: a folder there without a Tune snapshot would be moved aside.)
    trials = [_trial(tmp_path / "tune", f"metaadv_trial_{s}", 3, recorded=2) for s in (1, 2)]
    calls, lines = [], []

    def fake_run(exp, opts, callbacks):
        calls.append(opts)
        assert all(len(_left(t)) == 3 for t in trials), "pruned before the experiment was recorded"
        return [_result(t) for t in trials]

    monkeypatch.setattr(units, "run_experiment", fake_run)
    opts = StudyOptions(size="tiny", out=str(tmp_path), keep_checkpoints=keep, loggers=("tensorboard",),
                        log=lambda *a, **k: lines.append(a[0]))
    fixed = next(u for u in units.phase1_units(STUDY, STUDY.sizes["tiny"]) if u.arm.name == "fixed")
    recorded = units.Runner(STUDY, opts, Folder(tmp_path, str(tmp_path)), Progress(opts.log, 2)).run(fixed)
    assert json.loads((tmp_path / "progress.json").read_text())["experiments"]["fixed/fixed"] == recorded
    # --loggers reach the experiment; MLflow's store is the study folder's, one experiment per Tune experiment.
    assert (calls[0].loggers, calls[0].tracking_uri, calls[0].mlflow_experiment) == (
        ("tensorboard",), f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}", f"{tmp_path.name}/fixed/fixed")
    assert [len(_left(t)) for t in trials] == ([3, 3] if keep else [1, 1])
    assert any("deleted 4 older one(s)" in line for line in lines) != keep

    # --resume: the recorded experiment is skipped, and every checkpoint it recorded is still there.
    again = units.Runner(STUDY, opts, Folder(tmp_path, str(tmp_path)), Progress(opts.log, 2)).run(fixed)
    assert len(calls) == 1 and again == recorded
    assert all((Path(t["checkpoint"]) / "checkpoint.pt").is_file() for t in again)
