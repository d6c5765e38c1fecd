"""One Tune experiment of an arm (a :class:`Unit`), how it runs (:class:`Runner`), and the
phase-1 units: single-run arms, the random search, the PBT populations."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import CHECKPOINT_NAME
from ..errors import UserError
from ..tune.experiment import Experiment, Size
from ..tune.loggers import mlflow_uri
from ..tune.runner import RunOptions, run_experiment
from ..tune.study_support import TrialFinished, can_restore, fetch_checkpoint
from .spec import Arm, Study, arm_seeds, population_seeds, search_seeds
from .disk import prune_checkpoints
from .folder import Folder, StudyOptions
from .progress import Progress
from .ranking import best_config, best_trial, score

__all__ = ["Unit", "Runner", "best_config", "best_trial", "score", "local_checkpoint", "phase1_units", "derived_trials", "KEPT_METRICS"]

KEPT_METRICS = ("round", "status", "val/robust_acc", "val/clean_acc", "cost/grad_evals", "cost/eval_grad_evals",
                "cost/reward_grad_evals", "cost/seconds")


@dataclass
class Unit:
    """One Tune experiment of an arm: the trials it runs and how."""

    arm: Arm
    name: str
    trials: int
    space: dict = field(default_factory=dict)
    scheduler: str = "fifo"
    base: dict = field(default_factory=dict)  # over the arm's config
    seeds: tuple[int, ...] = ()
    per_seed: dict = field(default_factory=dict)  # config key -> {seed: value}
    experiment_seed: int = 0
    searcher: str = "random"  # "grid": every combination of the space's grids (metaadv.tune)

    @property
    def label(self) -> str:
        return f"{self.arm.name}/{self.name}"


class Runner:
    def __init__(self, study: Study, opts: StudyOptions, folder: Folder, progress: Progress):
        self.study, self.opts, self.folder, self.progress = study, opts, folder, progress
        self.size = study.sizes[opts.size]
        self.cpus = opts.cpus_per_trial or self.size.cpus_per_trial
        from .reuse import Donors, check_donors

        self.donors = Donors(check_donors(getattr(opts, "reuse", ())))

    def experiment(self, unit: Unit) -> Experiment:
        s, size = self.study, self.opts.size
        base = {**s.arm_config(unit.arm, size), **unit.base}
        options, time_attr = {}, "training_iteration"
        if unit.scheduler == "pbt":
            options, time_attr = {**s.pbt, **self.size.pbt}, s.pbt_time_attr
        return Experiment(name=unit.name, description=unit.arm.description, space=unit.space,
                          sizes={size: Size(unit.trials // max(1, len(unit.seeds)), {"val_eps": s.val_eps(size)})},
                          base=base, scheduler=unit.scheduler, searcher=unit.searcher, metric=s.metric, mode="max",
                          scheduler_options=options, threat_eps=s.val_eps(size), seed=unit.experiment_seed,
                          time_attr=time_attr, kind=s.kind)

    def run(self, unit: Unit) -> list[dict]:
        done = self.folder.finished(unit.arm.name, unit.name)
        if done is not None:
            self.progress.skip(unit.trials)
            self.opts.log(f"[{self.progress.phase}] {unit.label}: finished before, skipped", flush=True)
            self.prune(unit, done)  # a study begun with every checkpoint kept, or killed while pruning
            return done
        reused = self.reuse(unit)
        if reused is not None:
            return reused
        exp = self.experiment(unit)
        root = self.folder.experiment_root(unit.arm.name)
        path = f"{root}/{unit.name}" if "://" in root else os.path.join(root, unit.name)
        resume = can_restore(path)
        if not resume and "://" not in path and os.path.isdir(path) and os.listdir(path):
            # A driver killed before the experiment's first snapshot: nothing to restore. Its trial
            # folders go aside, so the experiment folder holds only the trials of the run that counts.
            aside = f"{path}.unrestorable-{int(time.time())}"
            os.rename(path, aside)
            self.opts.log(f"[{self.progress.phase}] {unit.label}: no snapshot to resume from; the killed attempt "
                          f"moved to {os.path.basename(aside)}", flush=True)
        self.opts.log(f"[{self.progress.phase}] {unit.label}: {'resuming' if resume else 'starting'} "
                      f"{unit.trials} trial(s) ({unit.scheduler})", flush=True)
        run_opts = RunOptions(size=self.opts.size, storage=root, address=self.opts.address, name=unit.name,
                              cpus_per_trial=self.cpus, resume=resume, verbose=self.opts.verbose,
                              seeds=tuple(unit.seeds), per_seed=unit.per_seed or None, workers=self.opts.workers,
                              loggers=tuple(self.opts.loggers), tracking_uri=mlflow_uri(self.folder.root),
                              mlflow_experiment=f"{self.folder.root.name}/{unit.label}")
        before = self.progress.done
        grid = run_experiment(exp, run_opts, callbacks=[TrialFinished(str(self.folder.root), unit.label)])
        trials = [_trial_summary(r) for r in grid]
        unfinished = len(trials) < unit.trials or not all(_ended(t) for t in trials)
        if unfinished:  # a driver interrupted (Ctrl-C, its cluster gone): Tune returns what it had
            raise UserError(f"{unit.label}: its trials stopped before their end (interrupted?); nothing recorded, "
                            "--resume continues them")
        self.progress.done = before + unit.trials  # whatever the callbacks counted (or, on resume, did not)
        self.folder.record(unit.arm.name, unit.name, trials)
        self.prune(unit, trials)  # only now: a resume skips a recorded experiment and reads its last checkpoints only
        return trials

    def reuse(self, unit: Unit) -> list[dict] | None:
        """The unit's trials copied from a donor study (``--reuse``; :mod:`.reuse`), if every one of them
        finished there with this exact config; else None (and the unit runs)."""
        if not self.donors.folders or "://" in self.folder.storage:
            return None
        from .reuse import expected_configs

        path = Path(self.folder.experiment_root(unit.arm.name)) / unit.name
        if path.exists() and any(path.iterdir()):
            return None  # begun here before: Tune resumes it
        matches = self.donors.match(expected_configs(self, unit))
        if matches is None:
            return None
        trials = self.donors.take(matches, path)
        self.progress.skip(unit.trials)
        self.folder.record(unit.arm.name, unit.name, trials)
        donors = sorted({str(d) for d, _ in matches})
        self.opts.log(f"[{self.progress.phase}] {unit.label}: {len(trials)} trial(s) reused from {', '.join(donors)}", flush=True)
        return trials

    def prune(self, unit: Unit, trials: list[dict]) -> None:
        """Each finished trial keeps its last checkpoint (:mod:`.disk`), unless ``keep_checkpoints``."""
        if self.opts.keep_checkpoints:
            return
        removed, freed = prune_checkpoints(trials)
        if removed:
            self.opts.log(f"[{self.progress.phase}] {unit.label}: kept each trial's last checkpoint, deleted "
                          f"{removed} older one(s) ({freed / 1e6:.0f} MB)", flush=True)


def _trial_summary(result) -> dict:
    metrics = result.metrics or {}
    config = {k: v for k, v in (result.config or {}).items()}
    return {"trial": metrics.get("trial_id") or os.path.basename(result.path), "seed": config.get("seed"),
            "config": config, "metrics": {k: metrics[k] for k in KEPT_METRICS if k in metrics},
            "checkpoint": result.checkpoint.path if result.checkpoint else None, "path": result.path,
            "error": str(result.error).splitlines()[0] if result.error else None, "done": bool(metrics.get("done"))}


def _ended(trial: dict) -> bool:
    """Whether Tune ended the trial: its last result says ``done`` (its trainable returned, or a stop
    criterion or the scheduler stopped it), or it failed. A driver interrupted mid-run returns its
    running trials without ``done``."""
    return bool(trial.get("done")) or bool(trial["error"])


def local_checkpoint(path: str) -> Path:
    """The checkpoint file of a Tune checkpoint folder (downloaded first from a URI)."""
    if "://" in path:
        target = Path(tempfile.mkdtemp(prefix="metaadv-study-ckpt-"))
        fetch_checkpoint(path, target)
        path = str(target)
    return Path(path) / CHECKPOINT_NAME


def phase1_units(study: Study, size) -> list[Unit]:
    units = []
    for arm in study.arms:
        if arm.kind == "single" and not arm.config_of:  # config_of: phase 2, once the pick is known
            seeds = arm_seeds(size, arm.name) if arm.unit == "seed" else list(range(1, size.populations + 1))
            units.append(Unit(arm, arm.name, len(seeds), seeds=tuple(seeds)))
        elif arm.kind == "tuned":
            units.append(Unit(arm, "search", study.search_trials(arm, size), space=study.search_space(arm, size),
                              seeds=tuple(search_seeds(size)), searcher=arm.search))
        elif arm.kind == "searched":
            for p in range(size.populations):
                units.append(Unit(arm, f"pbt-{p}", size.population, space=dict(study.space), scheduler="pbt",
                                  seeds=tuple(population_seeds(size, p)), experiment_seed=p))
    return units


def derived_trials(study: Study, size) -> int:
    """Phase 2's trials: the tuned reruns and transfers on the arms' seeds, and the replays (one per
    population for a searched source: see :func:`metaadv.study.derive.replay_seeds`)."""
    def trials(arm: Arm) -> int:
        if arm.kind == "replay" and study.arm(arm.source).kind == "searched":
            return size.populations
        derived = arm.kind in ("tuned", "replay", "transfer", "deployed") or arm.config_of
        return size.seeds if derived else 0  # a search's trials are phase 1's

    return sum(trials(a) for a in study.arms)
