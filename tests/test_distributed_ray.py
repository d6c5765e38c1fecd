"""Ray Train end to end (CPU, gloo, 2 workers) on one small local Ray shared by this module.

What can fail here is the wiring the arithmetic tests (tests/test_distributed_math.py) do not
reach: the TorchTrainer and its workers, the checkpoint every round through ``ray.train.report``
in the format ``metaadv evaluate`` and ``--resume`` read, a crashed worker retried from the newest
checkpoint (``FailureConfig``), and a killed driver continued from its Ray Train checkpoint.

Comparisons that follow a trajectory over several steps run in float64 (see
tests/test_distributed_math.py: in float32 they would hang on one CPU's rounding); the killed
driver runs in float32 from the CLI, so its test checks what resume guarantees instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import torch  # noqa: E402

from metaadv.checkpoint import load_model, read_checkpoint, save_checkpoint  # noqa: E402
from metaadv.config import TrainConfig  # noqa: E402
from metaadv.distributed.train import RUN_NAME, run_distributed, train_worker  # noqa: E402
from metaadv.distributed.workers import WorkerSpec  # noqa: E402
from metaadv.errors import UserError  # noqa: E402
from metaadv.training.metrics import read_metrics_csv  # noqa: E402
from metaadv.training.run import TrainingRun, run_training  # noqa: E402

from .distributed_harness import float64, relative_difference, same_rows  # noqa: E402
from .conftest import local_ray  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.margins]

TINY = {"method": "pgd-at", "dataset": "digits", "steps_per_round": 5, "batch_size": 64, "val_size": 50,
        "val_pgd_steps": 2, "device": "cpu", "eps": 0.2, "eps_ramp_rounds": 0}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_address():
    if ray.is_initialized():
        pytest.skip("another Ray is initialised in this process")
    with local_ray("rd") as address:
        yield address


def _single(config: TrainConfig, folder: Path):
    return run_training(config, folder)


def _crash_once_loop(job: dict) -> None:
    """train_worker in float64, except that worker 1 dies once, right after reporting round 1."""
    import metaadv.distributed.train as dt

    marker = Path(job["out"]) / "crashed-once"
    report = dt._report

    def report_then_crash(run, row, rank, out):
        report(run, row, rank, out)
        if rank == 1 and row["round"] == 1 and not marker.exists():
            marker.write_text("x")
            os._exit(1)

    dt._report = report_then_crash
    with float64():
        train_worker(job)


def _record_restored_loop(job: dict) -> None:
    """train_worker in float64, with rank 0 saving the state its run holds right after it was restored."""
    load = TrainingRun.load_state_dict

    def load_and_record(self, state, restore_controller=True):
        load(self, state, restore_controller)
        if ray.train.get_context().get_world_rank() == 0:
            save_checkpoint(self.state_dict(), Path(job["out"]) / "restored.pt")

    TrainingRun.load_state_dict = load_and_record
    with float64():
        train_worker(job)


def _as_float32(obj):
    """``obj`` with its float64 tensors cast to float32 (exact for values that came from float32)."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype == torch.float64 else obj
    if isinstance(obj, dict):
        return {k: _as_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_float32(v) for v in obj)
    return obj


def _identical(a, b) -> bool:
    """Bit for bit: tensors equal, floats equal (NaN equal to NaN), containers recursively."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_identical, a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def test_two_ray_train_workers_give_the_single_process_run_even_after_a_worker_crash(ray_address, tmp_path):
    config = TrainConfig.from_dict({**TINY, "rounds": 2})
    with float64():
        single = _single(config, tmp_path / "single")
    state = run_distributed("train", config, tmp_path / "dist", WorkerSpec(2), quiet=True, loop=_crash_once_loop)
    assert (tmp_path / "dist" / "crashed-once").exists(), "the injected crash did not happen"
    # The single process's parameters after 10 float64 steps (the crash cost a retry, not a step).
    got = read_checkpoint(tmp_path / "dist", kind="train")["trainer"]["model"]
    assert all(v.dtype == torch.float64 for v in got.values() if v.is_floating_point())
    assert relative_difference(got, single.trainer.model.state_dict()) < 1e-8
    assert [r["round"] for r in state["rows"]] == [1, 2]
    # The folder is a plain run folder: the same rows and files, evaluate reads it, Train kept checkpoints.
    assert same_rows(read_metrics_csv(tmp_path / "dist" / "metrics.csv"), read_metrics_csv(tmp_path / "single" / "metrics.csv"))
    assert isinstance(load_model(tmp_path / "dist"), torch.nn.Module)
    assert list((tmp_path / "dist" / RUN_NAME).glob("checkpoint_*/checkpoint.pt"))


def test_a_killed_driver_resumes_from_its_ray_train_checkpoint(ray_address, tmp_path):
    values = {**TINY, "rounds": 8, "steps_per_round": 2}
    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]
    cmd = [sys.executable, "-m", "metaadv.cli", "train", "--out", str(out), "--workers", "2", "--address", ray_address,
           "--quiet", *flags]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = tmp_path / "driver.log"  # a file, not a pipe: Ray's worker lines would fill a pipe nobody reads and stall it
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        # Generous: on a loaded 2-core machine a Train run on a shared cluster took 4 min for 4 rounds.
        deadline, saved = time.monotonic() + 600, 0
        while time.monotonic() < deadline and proc.poll() is None:
            saved = len(list((out / RUN_NAME).glob("checkpoint_*/checkpoint.pt")))
            if saved >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
        assert saved >= 2, f"the run saved no two Ray Train checkpoints in 600 s: {log.read_text()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(3)  # let Ray end the dead driver's workers before the folder is looked at
    written = read_metrics_csv(out / "metrics.csv")
    assert 2 <= len(written) < 8, f"{len(written)} rounds were done when the driver was killed"
    # Only Ray Train's checkpoints remain to continue from.
    (out / "checkpoint.pt").unlink()
    # Ray Train's checkpoints left on disk (it keeps two; the newest it had recorded is the one it
    # resumes from, and a kill can fall between writing a checkpoint folder and recording it).
    kept_on_disk = [read_checkpoint(p / "checkpoint.pt", kind="train") for p in sorted((out / RUN_NAME).glob("checkpoint_*"))
                    if (p / "checkpoint.pt").is_file()]
    config = TrainConfig.from_dict({**values})
    state = run_distributed("train", config, out, WorkerSpec(2), resume=True, quiet=True, loop=_record_restored_loop)
    # What resume guarantees: the run goes on from exactly one of those checkpoints' state (weights,
    # optimizer, batch stream, controller, rows; the workers go on in float64, into which float32
    # values load exactly), keeps the rows written before the kill, and finishes the planned rounds.
    restored = _as_float32(read_checkpoint(out / "restored.pt", kind="train"))
    source = next((c for c in kept_on_disk if len(c["rows"]) == len(restored["rows"])), None)
    assert source is not None, f"resumed after round {len(restored['rows'])}, not from a checkpoint on disk"
    assert _identical(restored, source)
    # At least round 1: with the kill between writing the second checkpoint folder and Ray Train
    # recording it, the resume starts from the first (seen once under heavy load).
    kept = len(source["rows"])
    assert 1 <= kept <= len(written) and _identical(state["rows"][:kept], source["rows"])
    assert same_rows(written[:kept], source["rows"])
    assert [r["round"] for r in state["rows"]] == list(range(1, 9))
    # After the kill, the trajectory of one process continued from the same checkpoint, both in
    # float64 (in float32 the comparison would hang on the CPU's rounding: test_distributed_math.py).
    with float64():
        single = TrainingRun(config, device=torch.device("cpu"))
        single.load_state_dict(source)
        while not single.done:
            single.step()
    assert relative_difference(state["trainer"]["model"], single.trainer.model.state_dict()) < 1e-8
    assert same_rows(state["rows"], single.rows)


def test_a_cluster_too_small_for_the_workers_is_refused_before_anything_is_written(ray_address, tmp_path):
    config = TrainConfig.from_dict({**TINY, "rounds": 1})
    with pytest.raises(UserError, match="needs 3 CPU, but the Ray cluster has 2"):
        run_distributed("train", config, tmp_path / "run", WorkerSpec(3))
    assert not (tmp_path / "run").exists()


def test_pbt_with_train_backed_trials_exploits_real_weights(ray_address, tmp_path):
    import json

    from metaadv.tune.experiment import Experiment, Size
    from metaadv.tune.runner import RunOptions, run_experiment
    from metaadv.tune.space import Grid

    # Two trials far apart in lr, judged on train/loss (no ties); synchronous PBT at every round,
    # so after round 1 the worse trial must clone the better one and go on with a mutated lr.
    size = Size(2, {**TINY, "rounds": 2, "steps_per_round": 2})
    exp = Experiment(name="pbt_train", description="pbt_train", sizes={"smoke": size, "full": size}, scheduler="pbt",
                     space={"lr": Grid(1e-5, 3e-3)}, metric="train/loss", mode="min",
                     scheduler_options={"perturbation_interval": 1, "quantile_fraction": 0.5,
                                        "resample_probability": 0.0, "synch": True})
    workers = WorkerSpec(2, cpus_per_worker=0.45)  # two trials at once on 2 CPUs, each 2 workers + its sliver
    grid = run_experiment(exp, RunOptions(size="smoke", storage=str(tmp_path), verbose=0, workers=workers))
    assert not grid.errors
    root = Path(grid.experiment_path)
    lines = [json.loads(x) for x in (root / "pbt_global.txt").read_text().splitlines() if x.strip()]
    assert lines, "no exploit happened"
    new_config = lines[0][5]
    states = [read_checkpoint(r.checkpoint.path) for r in grid]
    assert all(len(s["rows"]) == 2 for s in states)
    # Both trials' histories now start with the donor's round 1 (the exploited trial's weights,
    # optimizer and rows were cloned; trained from its own start at lr 1e-5 it would differ),
    # and one of them went on at the mutated lr.
    assert states[0]["rows"][0]["train/loss"] == states[1]["rows"][0]["train/loss"]
    assert new_config["lr"] in {s["rows"][1]["hp/lr"] for s in states}
    assert not list((root / "train-segments").glob("*/checkpoint_*")), "segment runs were not cleaned up"


def test_a_diverged_distributed_run_stops_with_one_line(ray_address, tmp_path):
    # SGD at lr 1e6: the loss is NaN at step 2 (as in one process), on both workers at once (it is all-reduced).
    config = TrainConfig.from_dict({**TINY, "rounds": 2, "lr": 1e6, "optimizer": "sgd", "method": "standard"})
    with pytest.raises(UserError, match="training loss became nan at step 2"):
        run_distributed("train", config, tmp_path / "run", WorkerSpec(2), quiet=True)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # no round finished


def test_one_study_arm_runs_with_two_workers_per_trial_and_matches_the_plain_trials(ray_address, tmp_path):
    from metaadv.study.folder import Folder, StudyOptions
    from metaadv.study.progress import Progress
    from metaadv.study.units import Runner, phase1_units
    from tune_experiments.learned_vs_searched import STUDY

    quiet = lambda *a, **k: None  # noqa: E731
    import dataclasses

    unit = next(u for u in phase1_units(STUDY, STUDY.sizes["tiny"]) if u.arm.name == "fixed")
    unit = dataclasses.replace(unit, trials=1, seeds=unit.seeds[:1])  # one seed says it: each trial is a Train run
    finals = {}
    for label, workers in (("plain", None), ("workers", WorkerSpec(2, cpus_per_worker=0.45))):
        root = tmp_path / label
        root.mkdir()
        opts = StudyOptions(size="tiny", out=str(root), workers=workers, log=quiet)
        trials = Runner(STUDY, opts, Folder(root, str(root)), Progress(quiet, unit.trials)).run(unit)
        assert len(trials) == unit.trials and not any(t["error"] for t in trials)
        finals[label] = {t["seed"]: t["metrics"] for t in trials}
    assert list((tmp_path / "workers" / "arms" / "fixed" / unit.name).glob("train-segments"))  # Ray Train ran them
    # Each seed's last row: the same rounds and cost, and the same accuracies up to two of the 50
    # validation digits: these trials train in float32, where two workers and one process part in
    # the last bits, and how far that carries depends on the CPU (the data-parallel arithmetic
    # itself is compared weight for weight, in float64, in tests/test_distributed_math.py).
    for seed, plain in finals["plain"].items():
        got = finals["workers"][seed]
        assert got["round"] == plain["round"] and got["cost/grad_evals"] == plain["cost/grad_evals"]
        assert got["val/robust_acc"] == pytest.approx(plain["val/robust_acc"], abs=2 / 50 + 1e-9)
        assert got["val/clean_acc"] == pytest.approx(plain["val/clean_acc"], abs=2 / 50 + 1e-9)
