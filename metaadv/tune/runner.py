"""Run (or resume) a named experiment on a local Ray or an existing cluster."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import ray
from ray import tune

from ..distributed.ray_session import ensure_ray
from ..distributed.storage import check_shared_storage
from ..distributed.workers import WorkerSpec
from ..errors import UserError
from .callbacks import LOGGERS, KeepLineageFiles
from .experiment import SIZES, Experiment
from .loggers import logger_callbacks, mlflow_uri
from .schedulers import build_scheduler, build_searcher, param_space
from .trainable import make_trainable

__all__ = ["RunOptions", "run_experiment", "experiment_path", "logger_places", "ensure_ray"]


@dataclass(frozen=True)
class RunOptions:
    size: str = "full"
    samples: int | None = None  # overrides the size's num_samples (the PBT population)
    storage: str = "tune_results"  # a folder (made absolute) or a URI such as s3://bucket/path
    address: str | None = None  # join this cluster ("auto", "ray://...", "host:port"); None = start one
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    resume: bool = False
    name: str | None = None  # defaults to the experiment name, plus "-smoke" for the smoke size
    verbose: int = 1  # Tune's output: 0 silent, 1 a table every 30 s, 2 every result
    # One trial per seed (times ``samples``, default 1): a grid over the config's ``seed``. The
    # studies use it for single-run arms (N seeds) and for PBT populations with distinct seeds.
    seeds: tuple[int, ...] | None = None
    # Config values that depend on the seed: key -> {seed: value} (a replay's schedule, a policy file).
    per_seed: dict | None = None
    # Train-backed trials (metaadv/distributed/tune_trial.py): each trial drives its own
    # TorchTrainer with these workers; the trial itself then holds only a sliver of a CPU.
    workers: WorkerSpec | None = None
    # Ray Tune's logger callbacks, offline (metaadv/tune/loggers.py): names from --loggers, for a
    # fresh run (a resumed one keeps those it started with). The MLflow store defaults to
    # STORAGE/mlflow.db (./mlflow.db for a URI storage: the callback runs on the driver), its
    # experiment to the run's name.
    loggers: tuple[str, ...] = ()
    tracking_uri: str | None = None
    mlflow_experiment: str | None = None

    def __post_init__(self):
        if self.size not in SIZES:
            raise UserError(f"unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.samples is not None and self.samples < 1:
            raise UserError(f"--samples must be >= 1, got {self.samples}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise UserError(f"seeds must be distinct and at least one, got {self.seeds}")
        if self.per_seed and self.seeds is None:
            raise UserError("per_seed values need seeds")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.workers is not None and self.gpus_per_trial > 0:
            raise UserError("with --workers the GPUs go to the workers: give --gpus-per-worker, not --gpus-per-trial")


def storage_root(storage: str) -> str:
    # Tune changes each trial's working directory: a relative path would mean a different place.
    return storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))


def experiment_path(exp: Experiment, opts: RunOptions) -> tuple[str, str]:
    name = opts.name or (exp.name if opts.size == "full" else f"{exp.name}-{opts.size}")
    root = storage_root(opts.storage)
    return root, (f"{root.rstrip('/')}/{name}" if "://" in root else os.path.join(root, name))


def logger_places(exp: Experiment, opts: RunOptions) -> tuple[str, str, str]:
    """(TensorBoard logdir, MLflow tracking URI, MLflow experiment name) of a run's loggers."""
    root, path = experiment_path(exp, opts)
    uri = opts.tracking_uri or mlflow_uri(os.getcwd() if "://" in root else root)
    return path, uri, opts.mlflow_experiment or os.path.basename(path.rstrip("/"))


def stop_criteria(exp: Experiment, size: str) -> dict:
    """Stop on the last round, or on the per-model budget (``budget_grad_evals``), whichever comes
    first, before the scheduler sees the report (see _tuner)."""
    stop = {"round": exp.rounds(size)}
    budget = int(exp.fixed_config(size).get("budget_grad_evals", 0) or 0)
    if budget > 0:
        stop["cost/grad_evals"] = budget
    return stop


def _value_for_seed(by_seed: dict, spec):
    return by_seed[int(spec.config["seed"])]


def _tuner(exp: Experiment, opts: RunOptions, root: str, name: str, trainable, callbacks=()) -> tune.Tuner:
    size = exp.sizes[opts.size]
    single = {} if exp.multi_objective else {"metric": exp.metric, "mode": exp.mode}
    space = param_space(exp, opts.size)
    if opts.seeds is not None:
        space["seed"] = tune.grid_search(list(opts.seeds))
        for key, by_seed in (opts.per_seed or {}).items():
            space[key] = tune.sample_from(functools.partial(_value_for_seed, dict(by_seed)))
    tune_config = tune.TuneConfig(
        scheduler=build_scheduler(exp, opts.size), search_alg=build_searcher(exp, opts.size),
        num_samples=opts.samples or (1 if opts.seeds is not None else size.num_samples),
        reuse_actors=True, trial_dirname_creator=_trial_dirname, **single)
    run_config = tune.RunConfig(
        name=name, storage_path=root, verbose=opts.verbose, callbacks=[*LOGGERS(), KeepLineageFiles(), *callbacks],
        # Stopping on the last round before the scheduler sees it keeps PBT from "exploiting" a
        # finished trial (a restart that trains nothing and leaves the donor's numbers behind).
        stop=stop_criteria(exp, opts.size),
        sync_config=tune.SyncConfig(sync_period=_sync_period(root)),
        # Every checkpoint is kept. Ray deletes older ones as new ones arrive, but its stored
        # experiment snapshot lags the trials by up to a sync period: a driver killed then resumes
        # naming a deleted checkpoint, and Ray cannot continue that trial ("Could not recover from
        # checkpoint as it does not exist on storage anymore"; seen in the study's kill-and-resume
        # test). A PBT donor is also cloned from a checkpoint up to an interval old. The price is
        # disk: rounds x checkpoint size per trial (about 5 MB a round for the seed CNN with Adam).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        failure_config=tune.FailureConfig(max_failures=exp.max_failures))
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                      run_config=run_config)


def _sync_period(root: str) -> int:
    """Seconds between copies of the driver's files (experiment state, results) to storage.

    ``--resume`` reads the stored copy, so this bounds the progress a killed driver loses. Ray's
    default is 300 s; copying a few small files to a local or shared folder is cheap, to a bucket
    a little less so. ``METAADV_TUNE_SYNC_S`` overrides it.
    """
    return int(os.environ.get("METAADV_TUNE_SYNC_S", 60 if "://" in root else 5))


def _check_snapshot(path: str) -> None:
    """Refuse a damaged experiment snapshot: Ray would log the parse error and silently start the
    whole experiment again from scratch. (The copy to storage is not atomic; a driver killed while
    copying leaves a truncated file.)"""
    import pyarrow.fs

    fs, base = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)
    names = sorted(i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(base))
                   if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    try:
        with fs.open_input_stream(names[-1]) as f:
            json.loads(f.read())
    except (IndexError, ValueError):
        last = names[-1] if names else "experiment_state-*.json"
        raise UserError(f"the experiment snapshot {last} is damaged (its driver was killed while writing it); "
                        "delete it to resume from an earlier snapshot, if any, or start again under another --name") from None


def _trial_dirname(trial) -> str:
    # Short and unique: the default embeds every sampled value and can overflow path limits.
    return f"{trial.trainable_name}_{trial.trial_id}"


def _train_backed(exp: Experiment, opts: RunOptions, path: str, extra_kinds):
    """The experiment limited to the trials whose workers fit at once, and its Train-backed trainable."""
    import dataclasses

    from ..distributed.tune_trial import (SEGMENTS_FOLDER, TRIAL_CPUS, make_train_backed_trainable, segment_rounds,
                                          trial_limit)

    limit = trial_limit(opts.workers, TRIAL_CPUS)
    size = exp.sizes[opts.size]
    sizes = {**exp.sizes, opts.size: dataclasses.replace(size, max_concurrent=min(limit, size.max_concurrent or limit))}
    exp = exp.replace(sizes=sizes)
    segments = f"{path.rstrip('/')}/{SEGMENTS_FOLDER}" if "://" in path else os.path.join(path, SEGMENTS_FOLDER)
    trainable = make_train_backed_trainable(exp.metrics, opts.workers, segment_rounds(exp, opts.size), segments, extra_kinds)
    return exp, tune.with_resources(trainable, {"cpu": TRIAL_CPUS})


def run_experiment(exp: Experiment, opts: RunOptions, extra_kinds: dict | None = None,
                   callbacks=()) -> tune.ResultGrid:
    """Fit a new experiment, or with ``opts.resume`` continue the one stored under its name.

    ``extra_kinds``: run kinds defined outside metaadv (a notebook, a benchmark); they travel to
    the workers inside the pickled trainable. ``callbacks``: extra Tune callbacks (a progress
    display) for a fresh run; a resumed run keeps the ones it was stored with.
    """
    if opts.size not in exp.sizes:
        raise UserError(f"experiment {exp.name} has no {opts.size!r} size; it has {', '.join(exp.sizes)}")
    root, path = experiment_path(exp, opts)
    # --resume starts from the last experiment snapshot; Ray's default takes one every >= 10 s.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    started = ensure_ray(opts.address)
    try:
        # Before any trial starts: a multi-node cluster must share the storage (a real check, not the path's shape).
        check_shared_storage(root, flag="--storage")
        if opts.workers is None:
            trainable = tune.with_resources(make_trainable(exp.metrics, extra_kinds),
                                            {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
        else:
            exp, trainable = _train_backed(exp, opts, path, extra_kinds)
        exists = tune.Tuner.can_restore(path)
        if opts.resume:
            if not exists:
                raise UserError(f"nothing to resume at {path}; run without --resume first (or give its --name/--storage)")
            _check_snapshot(path)
            # Unfinished trials continue from their last checkpoint; finished and errored ones stay.
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False)
        else:
            if exists:
                raise UserError(f"{path} already holds this experiment; add --resume to continue it or pass another --name")
            _, uri, experiment_name = logger_places(exp, opts)
            callbacks = [*callbacks, *logger_callbacks(opts.loggers, uri, experiment_name)]
            tuner = _tuner(exp, opts, root, os.path.basename(path), trainable, callbacks)
        return tuner.fit()
    finally:
        if started:
            ray.shutdown()
