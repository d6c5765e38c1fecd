"""Schedule replay: ``--controller replay --schedule FILE`` follows its table round by round, and a
table the run cannot use is one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import math

import pytest

from metaadv.cli import main
from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training.metrics import read_metrics_csv
from metaadv.training.replay import read_schedule, write_schedule
from metaadv.training.run import TrainingRun, run_training

TINY = {"dataset": "digits", "rounds": 3, "steps_per_round": 2, "val_size": 16, "val_pgd_steps": 1, "device": "cpu"}
CLI_TINY = ["--dataset", "digits", "--epochs", "3", "--steps-per-round", "2", "--val-size", "16", "--val-pgd-steps", "1"]


def _hp(rows):
    return [{k: v for k, v in r.items() if k.startswith("hp/")} for r in rows]


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_replaying_a_fixed_schedule_runs_metrics_csv_reproduces_its_hp_columns(tmp_path, digits_splits):
    # The source ramps eps within rounds 1-2 (hp/eps_start < hp/eps) and steps lr down at round 3.
    source = TrainConfig.from_dict({**TINY, "eps": 0.3, "steps": 2, "eps_ramp_rounds": 2, "eps_ramp_by": "step",
                                    "lr_schedule": "step", "lr_milestones": [0.6], "lr": 2e-3})
    src = run_training(source, tmp_path / "src")
    assert src.rows[0]["hp/eps_start"] == 0.0 and src.rows[0]["hp/eps"] == 0.15 and src.rows[2]["hp/lr"] < 2e-3

    # Another seed and other targets everywhere: only the table decides the hyperparameters.
    replay = TrainConfig.from_dict({**TINY, "seed": 7, "eps": 0.1, "steps": 5, "lr": 1e-4, "eps_ramp_rounds": 0,
                                    "lr_schedule": "constant", "controller": "replay",
                                    "schedule": str(tmp_path / "src" / "metrics.csv")})
    run = TrainingRun(replay, splits=digits_splits)
    rows = [run.step() for _ in range(3)]
    assert _hp(rows) == _hp(read_metrics_csv(tmp_path / "src" / "metrics.csv")) == _hp(src.rows)
    assert rows[0]["val/eps"] == 0.1  # the config still gives what the table does not (the threat eps)


def test_the_table_gives_its_columns_and_the_config_the_rest(tmp_path, digits_splits):
    path = _write(tmp_path / "s.csv", ["round", "hp/eps", "hp/lr", "note"],
                  [[1, 0.05, 0.004, "x"], [2, 0.2, 0.001, "y"], [3, 0.1, 0.0005, "z"]])
    cfg = TrainConfig.from_dict({**TINY, "steps": 3, "step_ratio": 0.5, "eps_ramp_rounds": 3, "controller": "replay",
                                 "schedule": path})
    run = TrainingRun(cfg, splits=digits_splits)
    rows = [run.step() for _ in range(3)]
    assert [r["hp/eps"] for r in rows] == [0.05, 0.2, 0.1]
    assert [r["hp/lr"] for r in rows] == [0.004, 0.001, 0.0005]
    assert [r["hp/eps_start"] for r in rows] == [0.05, 0.2, 0.1]  # the table's eps replaces the config's ramp
    assert {(r["hp/steps"], r["hp/step_ratio"]) for r in rows} == {(3, 0.5)}


def test_a_table_with_eps_start_replays_the_within_round_ramp(tmp_path, digits_splits):
    path = _write(tmp_path / "s.csv", ["round", "hp/eps_start", "hp/eps"], [[1, 0.0, 0.1], [2, 0.1, 0.2], [3, 0.2, 0.2]])
    run = TrainingRun(TrainConfig.from_dict({**TINY, "controller": "replay", "schedule": path}), splits=digits_splits)
    rows = [run.step() for _ in range(3)]
    assert [(r["hp/eps_start"], r["hp/eps"]) for r in rows] == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.2)]
    assert run.controller.propose(2).eps_start is None  # equal ends: constant eps, as the row shows it


def test_write_schedule_round_trips_and_keeps_only_round_and_hp_columns(tmp_path):
    rows = [{"round": 1, "val/robust_acc": 0.5, "hp/eps": 0.1, "hp/steps": 3, "hp/step_size": 0.025},
            {"round": 2, "val/robust_acc": 0.6, "hp/eps": 1 / 3, "hp/steps": 1, "hp/step_size": 0.1}]
    write_schedule(rows, tmp_path / "s.csv")
    assert open(tmp_path / "s.csv").readline().strip() == "round,hp/eps,hp/steps,hp/step_size"
    back = read_schedule(tmp_path / "s.csv")
    assert back == [{"round": 1, "hp/eps": 0.1, "hp/steps": 3}, {"round": 2, "hp/eps": 1 / 3, "hp/steps": 1}]
    assert isinstance(back[0]["hp/steps"], int)
    with pytest.raises(UserError, match="rounds must be 1, 2, 3"):
        write_schedule([{"round": 2, "hp/eps": 0.1}], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def _refused(argv, tmp_path, capsys, needle):
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), *CLI_TINY, "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("metaadv: error:"), err
    assert needle in err, err
    assert not out.exists()


GOOD = [[1, 0.1, 2], [2, 0.2, 2], [3, 0.3, 2]]


@pytest.mark.parametrize("header, rows, needle", [
    (["round", "hp/eps", "hp/steps"], GOOD[:2], "has 2 rounds but the run trains 3"),
    (["rnd", "hp/eps", "hp/steps"], GOOD, "no 'round' column"),
    (["round", "hp/eps", "hp/steps"], [GOOD[0], [3, 0.3, 2], [2, 0.2, 2]], "rounds must be 1, 2, 3"),
    (["round", "hp/eps", "hp/steps"], [GOOD[0], GOOD[0], GOOD[1]], "rounds must be 1, 2, 3"),
    (["round", "hp/eps", "hp/steps"], [GOOD[0], [2, 0.2, 0], GOOD[2]], "round 2: steps must be an integer >= 1"),
    (["round", "hp/eps", "hp/steps"], [GOOD[0], GOOD[1], [3, 1.5, 2]], "round 3: eps must be in [0, 1]"),
    (["round", "hp/eps", "hp/lr"], [[1, 0.1, "nan"], [2, 0.1, 1e-3], [3, 0.1, 1e-3]], "hp/lr must be a finite number"),
    (["round", "hp/eps", "hp/steps"], [GOOD[0], [2, "", 2], GOOD[2]], "hp/eps must be a finite number"),
    (["round", "hp/epss"], [[1, 0.1], [2, 0.1], [3, 0.1]], "unknown hyperparameter column(s) hp/epss"),
    (["round", "loss"], [[1, 0.1], [2, 0.1], [3, 0.1]], "no hp/* columns"),
])
def test_a_table_the_run_cannot_use_is_refused_before_anything_is_written(tmp_path, capsys, header, rows, needle):
    path = _write(tmp_path / "s.csv", header, rows)
    _refused(["--controller", "replay", "--schedule", path], tmp_path, capsys, needle)


def test_replay_needs_a_schedule_file_and_a_schedule_needs_replay(tmp_path, capsys):
    _refused(["--controller", "replay", "--schedule", str(tmp_path / "nope.csv")], tmp_path, capsys, "not found")
    _refused(["--controller", "replay"], tmp_path, capsys, "needs --schedule FILE")
    path = _write(tmp_path / "s.csv", ["round", "hp/eps"], [[1, 0.1], [2, 0.1], [3, 0.1]])
    _refused(["--schedule", path], tmp_path, capsys, "needs --controller replay")


def test_cli_replay_follows_the_table_and_resume_refuses_a_changed_table(tmp_path, capsys):
    path = _write(tmp_path / "s.csv", ["round", "hp/eps", "hp/steps"], GOOD)
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), *CLI_TINY, "--epochs", "2", "--quiet", "--controller", "replay", "--schedule", path]
    assert main(argv) == 0  # 2 rounds of the table's 3: a longer table is fine
    rows = read_metrics_csv(out / "metrics.csv")
    assert [(r["hp/eps"], r["hp/steps"]) for r in rows] == [(0.1, 2), (0.2, 2)]
    _write(path, ["round", "hp/eps", "hp/steps"], [[1, 0.1, 2], [2, 0.25, 2], [3, 0.3, 2]])
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert "changed since this run started" in capsys.readouterr().err
    assert len(read_metrics_csv(out / "metrics.csv")) == 2 and math.isclose(rows[1]["hp/eps"], 0.2)


def test_a_tune_trial_config_names_the_schedule_by_absolute_path_and_follows_it(tmp_path, monkeypatch):
    from metaadv.tune.experiment import Experiment, Size
    from metaadv.tune.kinds import build_train_run
    from metaadv.tune.space import Grid

    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "s.csv", ["round", "hp/eps", "hp/steps"], GOOD)
    size = Size(2, {**TINY, "controller": "replay", "schedule": "s.csv"})
    exp = Experiment(name="r", description="r", space={"seed": Grid(1, 2)}, sizes={"smoke": size, "full": size},
                     threat_eps=0.2)
    config = exp.fixed_config("smoke")
    assert config["schedule"] == str(tmp_path / "s.csv")
    monkeypatch.chdir("/")  # Tune runs a trial in its own folder
    run = build_train_run({k: v for k, v in config.items() if k != "kind"})
    row = run.step()
    assert (row["hp/eps"], row["hp/steps"], row["val/eps"]) == (0.1, 2, 0.2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="has 3 rounds but the run trains 4"):
        Experiment(name="r", description="r", space={"seed": Grid(1, 2)},
                   sizes={"smoke": size, "full": Size(2, {**size.config, "rounds": 4})})
