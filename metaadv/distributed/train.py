"""``metaadv train`` / ``metaadv meta`` with ``--workers N``: Ray Train (V2) around the round loops.

The driver checks everything a plain run checks, plus the cluster (enough CPUs/GPUs for the
workers, ``--out`` shared by all nodes), then fits one ``TorchTrainer``. Each worker builds the
same :class:`~metaadv.training.run.TrainingRun` (or :class:`~metaadv.meta.run.MetaRun`) with a
:class:`~metaadv.distributed.ddp.TorchDistributed` and steps it round by round: the loop is
the plain one. Rank 0 writes the run folder exactly as a plain run does (``config.json``,
``metrics.csv``, ``checkpoint.pt``, so ``metaadv evaluate`` and ``--resume`` read it, with or
without ``--workers``), and reports the same ``checkpoint.pt`` through
``ray.train.report(..., checkpoint=...)``; Ray Train keeps them in ``<out>/ray-train``.

A worker that fails (a crash, a lost node) is retried by Ray Train from the newest of those
checkpoints, ``max_failures`` times (``FailureConfig``); a killed driver is continued with
``--resume``, which restarts Ray Train under the same name and storage, so it finds them too.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import CHECKPOINT_NAME, read_checkpoint, staging_folder
from ..errors import UserError
from ..training.folder import check_fresh_folder, check_out_folder, save_round, start_folder, stored_config
from ..training.parallel import SINGLE_PROCESS
from .ray_session import ensure_ray
from .workers import WorkerSpec, check_device_request, worker_device

__all__ = ["RUN_NAME", "read_stored_state", "report_status", "run_distributed", "train_worker"]

RUN_NAME = "ray-train"  # Ray Train's run folder inside the run folder: its checkpoints and state
MAX_FAILURES = 2  # worker-group restarts from the newest checkpoint before the run fails


@dataclass(frozen=True)
class _Kind:
    build: str  # "module:attribute" of the run class, called as cls(config, device=..., parallel=...)
    config: str  # "module:attribute" of the config class
    progress: str  # "module:attribute" of progress_line(row, rounds)
    diverged: str  # "module:attribute" of the exception a diverged run raises (besides UserError)


KINDS = {
    "train": _Kind("metaadv.training.run:TrainingRun", "metaadv.config:TrainConfig",
                   "metaadv.training.run:progress_line", "metaadv.training.trainer:DivergedError"),
    "meta": _Kind("metaadv.meta.run:MetaRun", "metaadv.meta.config:MetaConfig",
                  "metaadv.meta.run:progress_line", "metaadv.errors:UserError"),
}


def _load(path: str):
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# -- the driver -------------------------------------------------------------------------------


def run_distributed(kind: str, config, out_dir: str | Path, spec: WorkerSpec, *, resume: bool = False,
                    address: str | None = None, quiet: bool = False, max_failures: int = MAX_FAILURES,
                    loop: Callable[[dict], None] | None = None) -> dict:
    """Train ``config`` with ``spec.workers`` Ray Train workers into ``out_dir``; returns the final
    checkpoint's dict. Raises :class:`UserError` before anything is written for bad input.

    ``loop`` replaces :func:`train_worker` as the workers' function (tests inject failures with it).
    """
    out = Path(out_dir).expanduser().absolute()
    check_out_folder(out)
    check_device_request(config.device, spec)
    if kind == "train":
        from ..training.las import check_las_workers

        check_las_workers(config, spec.workers)
    if resume:
        # The folder's checkpoint (or, if it is gone, the newest Train checkpoint) says which run
        # this is; the workers go on from the newest Train checkpoint.
        stored_config(config, read_stored_state(out, kind))
    else:
        check_fresh_folder(out)
        if _train_checkpoints(out):
            raise UserError(f"{str(out)!r} holds Ray Train checkpoints of an earlier run ({RUN_NAME}/); "
                            "add --resume to continue it or choose another --out")
    from .storage import check_shared_storage

    started = ensure_ray(address)
    try:
        _check_resources(spec)
        check_shared_storage(str(out), flag="--out")
        if not resume:
            shutil.rmtree(out / RUN_NAME, ignore_errors=True)  # a start that died before its first checkpoint
            start_folder(out, config)
        job = {"kind": kind, "config": config.to_dict(), "out": str(out), "resume": resume,
               "spec": asdict(spec), "quiet": quiet}
        metrics = _fit(job, spec, out, max_failures, loop)
    finally:
        if started:
            import ray

            ray.shutdown()
    if metrics.get("status") == "error":
        raise UserError(metrics["error"])
    return read_stored_state(out, kind)


def _fit(job: dict, spec: WorkerSpec, out: Path, max_failures: int, loop: Callable[[dict], None] | None) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        loop or train_worker, train_loop_config=job, scaling_config=spec.scaling_config(),
        run_config=ray.train.RunConfig(name=RUN_NAME, storage_path=str(out),
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       # The run folder's checkpoint.pt is the one that matters; Train
                                       # keeps the newest two for its own restarts.
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"distributed training failed after {max_failures} restarts: {first[:300]}; "
                        f"the last finished round is in {out} (continue with --resume)") from None
    return dict(result.metrics or {})


def _train_checkpoints(out: Path) -> list[Path]:
    """Ray Train's checkpoint folders in the run folder, oldest first (their names hold the time)."""
    folder = out / RUN_NAME
    return sorted(p for p in folder.glob("checkpoint_*") if (p / CHECKPOINT_NAME).is_file()) if folder.is_dir() else []


def read_stored_state(out: Path, kind: str) -> dict:
    """The run folder's checkpoint, or if it is missing the newest Ray Train checkpoint in it."""
    if not (out / CHECKPOINT_NAME).exists() and _train_checkpoints(out):
        return read_checkpoint(_train_checkpoints(out)[-1] / CHECKPOINT_NAME, kind=kind)
    return read_checkpoint(out / CHECKPOINT_NAME, kind=kind)


def _check_resources(spec: WorkerSpec) -> None:
    """Ray Train would wait forever for workers the cluster cannot place: refuse them now."""
    import ray

    have = ray.cluster_resources()
    for name, need in spec.total().items():
        if have.get(name, 0.0) < need:
            raise UserError(f"--workers {spec.workers} with {need / spec.workers:g} {name} each needs {need:g} {name}, "
                            f"but the Ray cluster has {have.get(name, 0.0):g}; lower --workers or "
                            f"--{'gpus' if name == 'GPU' else 'cpus'}-per-worker")


# -- each worker ------------------------------------------------------------------------------


def train_worker(job: dict) -> None:
    """The function every Ray Train worker runs: the plain round loop, data-parallel."""
    import ray.train

    kind, spec = KINDS[job["kind"]], WorkerSpec(**job["spec"])
    torch.set_num_threads(spec.threads())
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = worker_device(spec)
    if rank == 0 and not job["quiet"]:
        _say(f"worker 0 of {world} trains on {device}")
    stops = (UserError, _load(kind.diverged))
    try:
        config = _load(kind.config).from_dict(job["config"])
        parallel = SINGLE_PROCESS if world == 1 else _torch_distributed(device, rank)
        run = _load(kind.build)(config, device=device, parallel=parallel)
        state, source = _state_to_resume(job)
        if state is not None:
            run.load_state_dict(state)
            if rank == 0 and not job["quiet"]:
                _say(f"continuing after round {run.round} from {source}")
        progress: Callable = _load(kind.progress)
        out = Path(job["out"])
        while not run.done:
            row = run.step()
            _report(run, row, rank, out)
            if rank == 0 and not job["quiet"]:
                _say(progress(row, config.rounds))
    except stops as exc:  # the same on every worker (diverged losses are all-reduced): end, not retry
        last_good = Path(job["out"]) / CHECKPOINT_NAME
        report_status({"status": "error", "error": str(exc)}, rank, last_good if last_good.is_file() else None)


def _say(line: str) -> None:
    """One line to the driver's terminal. Not ``print``: Ray Train patches it in workers to log each
    line as well as print it, and the driver would show both."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _torch_distributed(device: torch.device, rank: int):
    import ray.train.torch

    from .ddp import TorchDistributed, has_batchnorm

    def prepare(model: torch.nn.Module) -> torch.nn.Module:
        if has_batchnorm(model):
            if device.type == "cuda":  # global batch statistics, as one process would compute them
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif rank == 0:
                warnings.warn("BatchNorm on CPU workers normalises with each worker's own slice "
                              "(SyncBatchNorm needs GPUs); training batches differ from one process's", stacklevel=2)
        return ray.train.torch.prepare_model(model, move_to_device=device)

    return TorchDistributed(wrap_model=prepare)


def report_status(metrics: dict, rank: int, state_file: Path | None = None) -> None:
    """Report how the workers stopped, so that the driver sees it.

    Ray Train's result carries the metrics of its newest *checkpoint* only, so rank 0 attaches
    one: a copy of ``state_file`` (the last good round, which a later ``--resume`` continues from)
    or, if there is none, a folder holding no ``checkpoint.pt``.
    """
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with staging_folder() as folder:
        if state_file is not None:
            shutil.copy2(state_file, folder / CHECKPOINT_NAME)
        (folder / "status.txt").write_text(f"{metrics.get('status', '')}: {metrics.get('error', '')}\n")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _state_to_resume(job: dict) -> tuple[dict | None, str]:
    """(state, where from): whichever of Ray Train's newest checkpoint (a retry, or a resumed run)
    and, with ``--resume``, the run folder's has trained further. They are the same round unless a
    worker died between writing the one and reporting the other, or the folder was trained on
    without ``--workers`` after its Train checkpoints were made."""
    import ray.train

    found = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            if (Path(folder) / CHECKPOINT_NAME).is_file():  # not a status report of a run that stopped in round 1
                found.append((read_checkpoint(Path(folder) / CHECKPOINT_NAME, kind=job["kind"]), "its Ray Train checkpoint"))
    if job["resume"] or found:
        own = Path(job["out"]) / CHECKPOINT_NAME
        if own.is_file() or not found:
            found.append((read_stored_state(Path(job["out"]), job["kind"]), "the run folder's checkpoint"))
    if not found:
        return None, ""
    return max(found, key=lambda item: len(item[0]["rows"]))  # the first of equals: Train's


def _report(run, row: dict, rank: int, out: Path) -> None:
    """Rank 0 writes the run folder and hands Ray Train the same checkpoint; every rank reports
    (``ray.train.report`` is a barrier), only rank 0 with a checkpoint."""
    import ray.train

    if rank != 0:
        ray.train.report(row)
        return
    save_round(run, out)
    with staging_folder() as folder:
        shutil.copy2(out / CHECKPOINT_NAME, folder / CHECKPOINT_NAME)
        ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(folder))
