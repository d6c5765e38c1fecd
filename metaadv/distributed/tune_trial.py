"""Tune trials that train with Ray Train workers: ``metaadv tune`` / ``metaadv study`` with ``--workers``.

Train V2 cannot run as a Tune trainable itself; a trial is a Tune function that drives its own
``TorchTrainer``. It runs one ``fit()`` per *segment* of rounds: the workers train the segment
(the plain round loop, data-parallel, a checkpoint every round for Ray Train's retries), and the
trial then reports the segment's rows to Tune in order, the last one with the segment's final
checkpoint. Segments end where a scheduler may act on a checkpoint: every perturbation interval
for PBT/PB2 (so an exploit clones real weights: Tune restarts the trial from the donor's
checkpoint and the next ``fit()`` starts from it), every round for ASHA, once for FIFO. Each
``fit()`` costs a worker group's start (tens of seconds on a small machine; benchmarks/README.md).

The trial itself holds a sliver of a CPU; its workers hold what ``--workers``,
``--cpus-per-worker`` and ``--gpus-per-worker`` ask for, and the runner admits only as many
trials at once as the cluster can give workers to.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Sequence

import torch

from ..checkpoint import CHECKPOINT_NAME, read_checkpoint, save_checkpoint, staging_folder
from ..errors import UserError
from ..training.parallel import SINGLE_PROCESS
from .workers import WorkerSpec, worker_device

__all__ = ["TRIAL_CPUS", "make_train_backed_trainable", "segment_rounds", "trial_limit"]

TRIAL_CPUS = 0.1  # the trial process only waits on its TorchTrainer
SEGMENTS_FOLDER = "train-segments"  # inside the experiment folder: each fit()'s Ray Train run, removed once read


def segment_rounds(exp, size: str) -> int:
    """Rounds per ``fit()``: the perturbation interval (PBT/PB2 counting rounds), 1 where a
    scheduler may act on any round (ASHA, or PBT counting gradient evaluations), else all."""
    if exp.scheduler in ("pbt", "pb2"):
        if exp.time_attr != "training_iteration":
            return 1
        return max(1, int(exp.options(size).get("perturbation_interval", 2)))
    if exp.scheduler == "asha":
        return 1
    return max(1, exp.rounds(size))


def trial_limit(spec: WorkerSpec, trial_cpus: float) -> int:
    """How many Train-backed trials the cluster can run at once (each: its workers + the trial)."""
    import ray

    have = ray.cluster_resources()
    need = {**spec.total()}
    need["CPU"] = need.get("CPU", 0.0) + trial_cpus
    fits = min(math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0)
    if fits < 1:
        wanted = ", ".join(f"{v:g} {k}" for k, v in need.items())
        raise UserError(f"a trial with --workers {spec.workers} needs {wanted}, more than the Ray cluster has "
                        f"({', '.join(f'{have.get(k, 0.0):g} {k}' for k in need)}); lower --workers or the per-worker resources")
    return fits


def make_train_backed_trainable(metrics: Sequence[str], spec: WorkerSpec, rounds_per_fit: int, segments_root: str,
                                extra_kinds=None):
    """The Tune function trainable of a Train-backed trial (see the module docstring)."""
    from ..tune.trainable import front_columns

    front = front_columns(metrics)

    def metaadv_train_trial(config: dict) -> None:
        run_train_backed_trial(config, front, spec, rounds_per_fit, segments_root, extra_kinds)

    return metaadv_train_trial


def run_train_backed_trial(config: dict, front, spec: WorkerSpec, rounds_per_fit: int, segments_root: str,
                           extra_kinds=None) -> None:
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer

    from ..tune.trainable import _front

    checkpoint = ray.tune.get_checkpoint()  # a retry, a resume, or a PBT exploit (the donor's)
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = read_checkpoint(Path(folder) / CHECKPOINT_NAME)
    trial = ray.tune.get_context().get_trial_id()
    while True:
        done_before = len(state["rows"]) if state else 0
        job = {"config": config, "state": state, "rounds": rounds_per_fit, "spec": vars(spec).copy(),
               "extra_kinds": extra_kinds}
        name = f"{trial}-{done_before:05d}-{uuid.uuid4().hex[:6]}"
        trainer = TorchTrainer(segment_worker, train_loop_config=job, scaling_config=spec.scaling_config(),
                               run_config=ray.train.RunConfig(name=name, storage_path=segments_root,
                                                              failure_config=ray.train.FailureConfig(max_failures=2),
                                                              checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)))
        result = trainer.fit()
        end = dict(result.metrics or {})
        if end.get("status") == "diverged":
            ray.tune.report(_diverged_row(end, front, state, done_before))
            _remove(segments_root, name)
            return
        if result.checkpoint is None:  # nothing left to train (the checkpoint it started from was the end)
            _remove(segments_root, name)
            return
        with result.checkpoint.as_directory() as folder:
            state = read_checkpoint(Path(folder) / CHECKPOINT_NAME)
        _remove(segments_root, name)
        rows = state["rows"][done_before:]
        for row in rows[:-1]:
            ray.tune.report(_front(row, front))
        with staging_folder() as folder:
            save_checkpoint(state, folder / CHECKPOINT_NAME)
            ray.tune.report(_front(rows[-1], front), checkpoint=ray.tune.Checkpoint.from_directory(folder))
        if end.get("run/done", True):
            return


def _remove(root: str, name: str) -> None:
    """Drop a segment's Ray Train run once its checkpoint is Tune's: nothing reads it again."""
    import pyarrow.fs

    fs, base = (pyarrow.fs.FileSystem.from_uri(root) if "://" in root else (pyarrow.fs.LocalFileSystem(), root))
    try:
        fs.delete_dir(f"{base.rstrip('/')}/{name}")
    except (OSError, FileNotFoundError):
        pass


def _diverged_row(end: dict, front, state: dict | None, done_before: int) -> dict:
    cost = {k: end.get(k, 0) for k in ("cost/grad_evals", "cost/eval_grad_evals", "cost/seconds")}
    nan = {k: math.nan for k in front if not k.startswith("hp/")}
    return {**nan, **cost, "round": end.get("round", done_before + 1), "status": "diverged", "error": end.get("error", "")}


def segment_worker(job: dict) -> None:
    """Each worker of a segment: build the trial's run, start from the segment's state, train
    ``job["rounds"]`` rounds (or to the end), report every round with rank 0's checkpoint."""
    import ray.train

    from ..tune.kinds import get_kind
    from .train import _torch_distributed, report_status

    spec = WorkerSpec(**job["spec"])
    torch.set_num_threads(spec.threads())
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = worker_device(spec)
    config = dict(job["config"])
    kind = get_kind(config.pop("kind", "train"), job["extra_kinds"])
    parallel = SINGLE_PROCESS if world == 1 else _torch_distributed(device, rank)
    run = kind.build(config, device=device, parallel=parallel)
    state = job["state"]
    retry = ray.train.get_checkpoint()  # a worker retried within this segment
    if retry is not None:
        with retry.as_directory() as folder:
            if (Path(folder) / CHECKPOINT_NAME).is_file():
                state = read_checkpoint(Path(folder) / CHECKPOINT_NAME)
    if state is not None:
        kind.restore(run, state)  # weights, optimizer, rows; the trial's (maybe mutated) config wins
    stop = len(job["state"]["rows"]) + job["rounds"] if job["state"] else job["rounds"]
    while not run.done and run.round < stop:
        try:
            row = run.step()
        except kind.diverged as exc:
            last = run.rows[-1] if run.rows else {}
            report_status({**{k: v for k, v in last.items() if k.startswith("cost/")}, "round": run.round + 1,
                           "status": "diverged", "error": str(exc)}, rank)
            return
        metrics = {**row, "run/done": run.done}
        if rank != 0:
            ray.train.report(metrics)
            continue
        with staging_folder() as folder:
            save_checkpoint(run.state_dict(), folder / CHECKPOINT_NAME)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
