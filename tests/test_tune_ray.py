"""Ray Tune end to end, on one small local Ray shared by this module (2 CPUs, tiny digits trials).

Each test can fail for the reason in its name: PBT exploits that do not continue from the donor or
lose the mutated hyperparameters, ASHA that stops nothing, a NaN trial that takes the experiment
down or is retried, a killed worker or driver whose trials restart from scratch or get lost.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from metaadv.checkpoint import read_checkpoint  # noqa: E402
from metaadv.tune.callbacks import LOGGERS  # noqa: E402
from metaadv.tune.experiment import Experiment, Size  # noqa: E402
from metaadv.tune.runner import RunOptions, run_experiment  # noqa: E402
from metaadv.tune.space import Grid, LogRange  # noqa: E402
from metaadv.tune.trainable import make_trainable  # noqa: E402
from tests.conftest import local_ray  # noqa: E402

pytestmark = pytest.mark.slow

# A round of this takes well under a second on one core.
TINY = {"method": "pgd-at", "dataset": "digits", "steps_per_round": 3, "val_size": 100, "val_pgd_steps": 2,
        "device": "cpu", "eps_ramp_rounds": 0}
HPS = ("eps", "steps", "step_ratio", "lr", "weight_decay")


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray for the whole session; its address lets subprocess drivers join it."""
    with local_ray("rt") as address:
        yield address


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "result.json").read_text().splitlines() if line.strip()]


def _tiny(name: str, rounds: int, samples: int, **changes) -> Experiment:
    size = Size(samples, {**TINY, "rounds": rounds}, max_concurrent=changes.pop("max_concurrent", None))
    values = dict(name=name, description=name, sizes={"smoke": size, "full": size}, threat_eps=0.2,
                  space={"eps": Grid(0.1, 0.2, 0.3), "steps": Grid(1, 2, 3), "step_ratio": Grid(0.25, 0.5),
                         "lr": LogRange(1e-4, 2e-2), "weight_decay": LogRange(1e-6, 1e-3)})
    return Experiment(**{**values, **changes})


def test_pbt_exploit_continues_from_the_donor_checkpoint_with_the_mutated_hyperparameters(ray_address, tmp_path):
    # 8 rounds: asynchronous PBT exploits only when a trial in the bottom half reports at a
    # perturbation round; in 6 rounds that once never happened.
    exp = _tiny("pbt_tiny", rounds=8, samples=4, scheduler="pbt",
                scheduler_options={"perturbation_interval": 2, "quantile_fraction": 0.5, "resample_probability": 0.0})
    grid = run_experiment(exp, RunOptions(size="smoke", storage=str(tmp_path), verbose=0))
    root = Path(grid.experiment_path)
    assert not grid.errors and (root / "pbt_global.txt").read_text().strip(), "no exploit happened"
    by_id = {Path(r.path).name.removeprefix("metaadv_trial_"): r for r in grid}
    prefix = next(iter(by_id)).rsplit("_", 1)[0]
    checked = 0
    for policy in root.glob("pbt_policy_*.txt"):
        result = by_id[policy.stem.removeprefix("pbt_policy_")]
        # A trial's own policy file ends with its latest exploit.
        _, donor_tag, _, donor_iter, donor_config, new_config = json.loads(policy.read_text().splitlines()[-1])
        assert any(new_config[k] != donor_config[k] for k in HPS), "the exploit mutated nothing"
        lineage = read_checkpoint(Path(result.checkpoint.path) / "checkpoint.pt")["rows"]
        assert [r["round"] for r in lineage] == list(range(1, len(lineage) + 1))
        # The rows trained after the exploit carry the mutated hyperparameters; the rows before it came
        # with the donor's checkpoint, which may be a round off the iteration PBT logs for the exploit
        # (Ray registers a checkpoint after the result that reports it). Those rows are logged history
        # of the population: the donor's, or of the trials its own checkpoint came from.
        assert f"{prefix}_{int(donor_tag.split('_')[0]):05d}" in by_id
        mutated = lambda row: all(math.isclose(row[f"hp/{k}"], new_config[k]) for k in HPS)
        inherited = len(lineage)
        while inherited > 0 and mutated(lineage[inherited - 1]):
            inherited -= 1
        assert abs(inherited - donor_iter) <= 1 and inherited >= 1, (inherited, donor_iter)
        key = lambda row: (row["round"], row["cost/grad_evals"], row["train/loss"])
        logged = {key(r) for trial in grid for r in _rows(Path(trial.path))}
        assert all(key(row) in logged for row in lineage[:inherited])
        after = lineage[inherited:]
        reported = _rows(Path(result.path))
        assert len(reported) == len((Path(result.path) / "progress.csv").read_text().splitlines()) - 1
        for row, logged in zip(after, reported[-len(after):] if after else []):
            for k in HPS:
                assert math.isclose(row[f"hp/{k}"], new_config[k]) and math.isclose(logged[f"hp/{k}"], new_config[k])
            assert logged["round"] == row["round"] and logged["val/eps"] == 0.2
        checked += bool(after)
    assert checked >= 1, "no exploited trial trained on after its exploit"


def test_one_dim_pbt_logs_exploits_that_change_one_hyperparameter(ray_address, tmp_path):
    # Ray's explore step moves all five keys at once; with one_dim each exploit's new config is the
    # donor's with exactly one key changed, as PBT's own log records it.
    exp = _tiny("pbt_one_dim", rounds=8, samples=4, scheduler="pbt",
                scheduler_options={"perturbation_interval": 2, "quantile_fraction": 0.5, "resample_probability": 0.25,
                                   "one_dim": True})
    grid = run_experiment(exp, RunOptions(size="smoke", storage=str(tmp_path), verbose=0))
    lines = [json.loads(line) for line in (Path(grid.experiment_path) / "pbt_global.txt").read_text().splitlines() if line]
    assert not grid.errors and lines, "no exploit happened"
    for _, _, _, _, donor_config, new_config in lines:
        assert len([k for k in HPS if new_config[k] != donor_config[k]]) == 1, (donor_config, new_config)
        assert {k: v for k, v in new_config.items() if k not in HPS} == {k: v for k, v in donor_config.items() if k not in HPS}


def test_asha_with_optuna_stops_weak_trials_early(ray_address, tmp_path):
    exp = _tiny("asha_tiny", rounds=4, samples=6, max_concurrent=2, scheduler="asha", searcher="optuna",
                scheduler_options={"grace_period": 1, "reduction_factor": 2},
                space={"lr": LogRange(1e-5, 3e-2), "eps": Grid(0.1, 0.2, 0.3)})
    grid = run_experiment(exp, RunOptions(size="smoke", storage=str(tmp_path), verbose=0))
    rounds = sorted(r.metrics["round"] for r in grid)
    assert len(grid) == 6 and not grid.errors
    assert rounds[0] < 4 and rounds[-1] == 4, rounds
    assert list(Path(grid.experiment_path).glob("searcher-state-*")), "Optuna was not the searcher"


class _KillWorkerOnce(tune.Callback):
    """Kills the process of the trial with ``lr`` once its round-2 checkpoint is registered."""

    def __init__(self, lr: float):
        self.lr, self.pid = lr, None

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.pid is None and trial.config["lr"] == self.lr and trial.last_result.get("round") == 2:
            self.pid = trial.last_result["pid"]
            os.kill(self.pid, signal.SIGKILL)


def test_a_nan_trial_ends_alone_and_a_killed_trial_retries_from_its_checkpoint(ray_address, tmp_path):
    diverging, victim, rounds = 1e4, 0.05, 4  # SGD at lr 1e4: finite round 1, NaN loss in round 2
    killer = _KillWorkerOnce(victim)
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(), {"cpu": 1}),
        param_space={**TINY, "rounds": rounds, "optimizer": "sgd", "eps": 0.1,
                     "lr": tune.grid_search([diverging, victim, 0.02])},
        tune_config=tune.TuneConfig(metric="val/robust_acc", mode="max", reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="nan", verbose=0, callbacks=[*LOGGERS(), killer],
                                  failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()
    by_lr = {r.config["lr"]: r for r in grid}
    assert not grid.errors and killer.pid is not None
    nan = by_lr[diverging].metrics
    assert nan["status"] == "diverged" and "loss became nan" in nan["error"] and math.isnan(nan["val/robust_acc"])
    assert [r["round"] for r in _rows(Path(by_lr[diverging].path))] == [1, 2]  # reported once, not retried
    assert by_lr[0.02].metrics["round"] == rounds and "status" not in by_lr[0.02].metrics
    rows = _rows(Path(by_lr[victim].path))
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))  # round 3 onwards from the round-2 checkpoint
    assert rows[1]["pid"] == killer.pid and rows[2]["pid"] != killer.pid
    assert grid.get_best_result().config["lr"] != diverging


EXPERIMENT_FILE = """
from metaadv.tune import Experiment, Grid, LogRange, Size
SIZE = Size(4, {tiny!r}, max_concurrent=2)
EXPERIMENT = Experiment(name="resume_tiny", description="resume test", sizes={{"smoke": SIZE, "full": SIZE}},
                        space={{"lr": LogRange(1e-4, 1e-2), "steps": Grid(1, 2)}}, scheduler="fifo")
"""


def _driver(args: list[str], address: str, log: Path) -> subprocess.Popen:
    # Snapshot every step and copy it to storage every second: the kill below lands between rounds.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TUNE_GLOBAL_CHECKPOINT_S": "0", "METAADV_TUNE_SYNC_S": "1"}
    cmd = [sys.executable, "-m", "metaadv.cli", "tune", *args, "--address", address, "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_resume_after_the_driver_is_killed_loses_and_repeats_no_trial(ray_address, tmp_path):
    rounds = 6
    spec = tmp_path / "resume_tiny.py"
    spec.write_text(EXPERIMENT_FILE.format(tiny={**TINY, "rounds": rounds}))
    args = [str(spec), "--smoke", "--storage", str(tmp_path / "results"), "--name", "run"]
    root, log1, log2 = tmp_path / "results" / "run", tmp_path / "first.log", tmp_path / "second.log"
    first = _driver(args, ray_address, log1)
    try:
        deadline = time.time() + 240
        # Kill the driver (only the driver: the cluster is this module's) once some trial is 2 rounds in.
        while not list(root.glob("*/checkpoint_000001")) and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            # Not in the middle of copying the snapshot: a damaged one is refused on resume (a
            # separate behaviour); this test is about what a resume from a whole one repeats.
            _kill_between_copies(first, root, lineage=False)
        first.wait()
    assert list(root.glob("*/checkpoint_000001")) and first.returncode == -signal.SIGKILL, log1.read_text()[-3000:]
    second = _driver([*args, "--resume"], ray_address, log2)
    _wait_or_kill(second, 300)
    out = log2.read_text()
    assert second.returncode == 0 and "4 trials: 4 ok" in out, out[-3000:]
    trials = [_rows(d) for d in sorted(root.iterdir()) if (d / "result.json").exists()]
    assert len(trials) == 4
    for rows in trials:
        assert [r["round"] for r in rows] == list(range(1, rounds + 1))  # none repeated, none missing
    # Rows a killed copy lost come back from the checkpoint, without Tune's pid.
    continued = [rows for rows in trials if len({r["pid"] for r in rows if "pid" in r}) > 1
                 or any(r.get("restored_from_checkpoint") for r in rows)]
    assert continued, "no trial was interrupted and continued"

    # The same experiment is not started twice under one name, and --resume needs something to resume.
    from metaadv.errors import UserError
    from tune_experiments.registry import load_experiment

    exp = load_experiment(str(spec))
    with pytest.raises(UserError, match="already holds this experiment"):
        run_experiment(exp, RunOptions(size="smoke", storage=str(tmp_path / "results"), name="run"))
    with pytest.raises(UserError, match="nothing to resume"):
        run_experiment(exp, RunOptions(size="smoke", storage=str(tmp_path / "results"), name="other", resume=True))


PBT_EXPERIMENT_FILE = """
from metaadv.tune import Experiment, Grid, LogRange, Size
SIZE = Size(4, {tiny!r})  # the whole population at once: PBT time-slices it on the 2 CPUs
# PBT counts time in training gradient evaluations: a round costs 300 * (steps + 1) here, so it
# perturbs at nearly every report (exploits before and after the kill are all but certain). Every
# mutation is x0.8 or x1.2 (no resampling), which always leaves this narrow lr range: clipped back.
EXPERIMENT = Experiment(name="pbt_resume_tiny", description="PBT resume test", sizes={{"smoke": SIZE, "full": SIZE}},
                        space={{"lr": LogRange(1e-3, 1.2e-3), "steps": Grid(1, 2)}}, scheduler="pbt",
                        time_attr="cost/grad_evals", seed=3,
                        scheduler_options={{"perturbation_interval": 600, "quantile_fraction": 0.5,
                                            "resample_probability": 0.0}})
"""


def _lines(path: Path) -> list[str]:
    text = path.read_text() if path.is_file() else ""
    return text[: text.rfind("\n") + 1].splitlines()  # complete lines only (a copy may be cut mid-line)


def _policy_files(root: Path) -> dict[str, list[str]]:
    return {p.name: _lines(p) for p in root.glob("pbt_policy_*.txt")}


def _replayed_policy_files(root: Path) -> dict[str, list[str]]:
    """The policy files Ray's rule makes of the global file: on each exploit the target's file becomes
    a copy of the donor's, if the donor has one, and gets the exploit's line appended."""
    prefix = next(root.glob("metaadv_trial_*")).name.removeprefix("metaadv_trial_").rsplit("_", 1)[0]
    name = lambda tag: f"pbt_policy_{prefix}_{int(tag.split('_')[0]):05d}.txt"
    files: dict[str, list[str]] = {}
    for line in _lines(root / "pbt_global.txt"):
        target, donor = (name(t) for t in json.loads(line)[:2])
        if donor in files:
            files[target] = list(files[donor])
        files.setdefault(target, []).append(line)
    return files


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for a driver to finish; one still running after ``timeout`` seconds is killed (its
    process group), so a hung resume fails the test instead of hanging the suite."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _kill_between_copies(proc: subprocess.Popen, root: Path, lineage: bool = True) -> None:
    """SIGKILL the driver while what it copied to storage is whole: freeze it, look, and let it run on
    for a moment if a copy was under way (Ray's copy is not atomic: a damaged snapshot is refused on
    resume, tested elsewhere, and a global lineage line may land before its policy-file line)."""
    for _ in range(400):
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            json.loads(sorted(root.glob("experiment_state-*.json"))[-1].read_text())
            if not lineage or _policy_files(root) == _replayed_policy_files(root):
                break
        except (IndexError, ValueError, StopIteration):
            pass
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)


def _own_ray_driver(args: list[str], log: Path, ray_tmp: str) -> subprocess.Popen:
    """A driver that starts its own Ray (as `metaadv tune` does without --address): killing its
    process group ends that Ray too, so the resumed driver starts a fresh Ray session, with none of
    the first session's local files (the lineage files among them)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TUNE_GLOBAL_CHECKPOINT_S": "0", "METAADV_TUNE_SYNC_S": "1",
           "RAY_TMPDIR": ray_tmp}
    cmd = [sys.executable, "-m", "metaadv.cli", "tune", *args, "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_pbt_lineage_files_survive_a_killed_driver_and_resume(tmp_path):
    spec = tmp_path / "pbt_resume_tiny.py"
    spec.write_text(PBT_EXPERIMENT_FILE.format(tiny={**TINY, "rounds": 8}))
    args = [str(spec), "--smoke", "--storage", str(tmp_path / "results"), "--name", "run"]
    root, log1, log2 = tmp_path / "results" / "run", tmp_path / "first.log", tmp_path / "second.log"
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # Unix socket paths must stay short
    first = _own_ray_driver(args, log1, ray_tmp)
    try:
        deadline = time.time() + 300
        # Kill the driver once an exploit has reached storage.
        while not _lines(root / "pbt_global.txt") and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            _kill_between_copies(first, root)
        first.wait()
    before = _lines(root / "pbt_global.txt")
    assert before and first.returncode == -signal.SIGKILL, log1.read_text()[-3000:]
    second = _own_ray_driver([*args, "--resume"], log2, ray_tmp)
    try:
        _wait_or_kill(second, 400)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out = log2.read_text()
    assert second.returncode == 0 and "4 trials: 4 ok" in out, out[-3000:]

    after = _lines(root / "pbt_global.txt")
    assert after[: len(before)] == before, "the lineage logged before the kill was lost"
    assert len(after) > len(before), "no exploit after the resume (nothing appended)"
    exploits = [json.loads(line) for line in after]
    for target, donor, _, _, _, new_config in exploits:
        assert "@perturbed" not in target + donor  # tags stay the first tag across the restore
        assert 1e-3 <= new_config["lr"] <= 1.2e-3 and new_config["steps"] in (1, 2)  # clipped into the space
    # Each policy file holds its trial's chain: what Ray's copy-the-donor's-file rule makes of the
    # whole global file. A donor's file that the restore left behind breaks it.
    assert _policy_files(root) and _policy_files(root) == _replayed_policy_files(root)
