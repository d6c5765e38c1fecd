"""Run a declared study (:mod:`metaadv.tune.study_spec`): every arm as Ray Tune trials, in
dependency order, then every final model through :func:`metaadv.evaluation.evaluate_checkpoint`.

Phases:

1. ``train``: the arms that depend on nothing (single-run arms, the random search, the PBT
   populations), one Tune experiment each;
2. ``derive``: the arms built from phase 1's results: the tuned config rerun on fresh seeds,
   replays of the learned schedules and the best PBT lineages (``schedules/``), the learned
   policies frozen on new seeds (``policies/``);
3. ``evaluate``: every final model, as Ray tasks (so a cluster shares the work), into
   ``eval/ARM/MODEL.json``; then ``models.csv``.

The study folder (layout in /work/wt/STUDY_CONTRACT.md and docs/study.md) is resumable: a Tune
experiment finished before is skipped (``progress.json`` records its trials), a half-finished one
continues with ``Tuner.restore``, and an evaluation whose JSON exists is not redone.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import tune

from ..checkpoint import CHECKPOINT_NAME, read_checkpoint
from ..config import TrainConfig
from ..errors import UserError
from .experiment import Experiment, Size
from .runner import RunOptions, ensure_ray, run_experiment
from .study_spec import Arm, Study, arm_seeds, population_seeds, search_seeds

__all__ = ["StudyOptions", "run_study", "study_folder", "replay_available", "MODELS_COLUMNS"]

MODELS_COLUMNS = ("arm", "model", "seed", "experiment", "trial", "checkpoint", "eval")
KEPT_METRICS = ("round", "status", "val/robust_acc", "val/clean_acc", "cost/grad_evals", "cost/eval_grad_evals",
                "cost/seconds")


@dataclass(frozen=True)
class StudyOptions:
    size: str
    out: str | None = None  # the study folder; default studies/<name>-<size>
    storage: str | None = None  # Tune's storage root (a folder or URI); default the study folder
    address: str | None = None
    resume: bool = False
    cpus_per_trial: float | None = None  # default: the size's
    verbose: int = 0  # Tune's own table (0: only the study's progress lines)
    log: object = field(default=print, repr=False)


def study_folder(study: Study, opts: StudyOptions) -> Path:
    return Path(opts.out or os.path.join("studies", f"{study.name}-{opts.size}")).expanduser().resolve()


def replay_available() -> bool:
    """True once the replay controller (``controller: replay``, ``schedule``) exists."""
    import dataclasses
    import importlib.util

    if importlib.util.find_spec("metaadv.training.replay") is None:
        return False
    import metaadv.training.replay  # noqa: F401  (registers the controller)
    from ..training.controllers import CONTROLLERS

    return "replay" in CONTROLLERS and "schedule" in {f.name for f in dataclasses.fields(TrainConfig)}


# ----------------------------------------------------------------------------------------------
# Progress: one line per finished trial and experiment, ETA from the time per trial so far.
# ----------------------------------------------------------------------------------------------

_PROGRESS: dict[str, "Progress"] = {}  # by study folder; Tune callbacks look it up (they are pickled)


class Progress:
    def __init__(self, log, total_trials: int):
        self.log, self.total, self.done, self.ran = log, total_trials, 0, 0
        self.start = time.perf_counter()
        self.phase = ""

    def eta(self, remaining: int, done: int, seconds: float) -> str:
        if done <= 0:
            return "ETA unknown"
        return f"ETA {_duration(seconds / done * remaining)}"

    def trial(self, label: str, finished: int, of: int) -> None:
        self.done += 1
        self.ran += 1
        elapsed = time.perf_counter() - self.start
        self.log(f"[{self.phase}] {label}: {finished}/{of} trials | study {self.done}/{self.total} trials, "
                 f"{_duration(elapsed)} elapsed, {self.eta(self.total - self.done, self.ran, elapsed)}", flush=True)

    def skip(self, trials: int) -> None:
        self.done += trials


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _TrialProgress(tune.Callback):
    """Reports each finished trial to the study's :class:`Progress` (found by key: a resumed
    Tuner brings back a pickled copy of this callback, not the live object)."""

    def __init__(self, key: str, label: str):
        self.key, self.label = key, label

    def on_trial_complete(self, iteration, trials, trial, **info):
        progress = _PROGRESS.get(self.key)
        if progress is not None:
            finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
            progress.trial(self.label, min(finished, len(trials)), len(trials))

    on_trial_error = on_trial_complete


# ----------------------------------------------------------------------------------------------
# The study folder
# ----------------------------------------------------------------------------------------------


class Folder:
    def __init__(self, root: Path, storage: str):
        self.root, self.storage = root, storage
        self.progress_path = root / "progress.json"
        self.state = json.loads(self.progress_path.read_text()) if self.progress_path.is_file() else {"experiments": {}}

    def experiment_root(self, arm: str) -> str:
        return f"{self.storage.rstrip('/')}/arms/{arm}" if "://" in self.storage else os.path.join(self.storage, "arms", arm)

    def finished(self, arm: str, experiment: str) -> list[dict] | None:
        return self.state["experiments"].get(f"{arm}/{experiment}")

    def record(self, arm: str, experiment: str, trials: list[dict]) -> None:
        self.state["experiments"][f"{arm}/{experiment}"] = trials
        write_json(self.progress_path, self.state)

    def rel(self, path: str | None) -> str:
        if not path:
            return ""
        if "://" in path:
            return path
        try:
            return os.path.relpath(path, self.root)
        except ValueError:
            return path


def write_json(path: Path, data) -> None:
    """Through a temporary file and a rename: never half a file on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _start_folder(study: Study, opts: StudyOptions, root: Path, storage: str, notes: dict) -> dict:
    meta_path = root / "study.json"
    if meta_path.is_file():
        if not opts.resume:
            raise UserError(f"{root} already holds a study; add --resume to continue it or pass another --out")
        meta = json.loads(meta_path.read_text())
        if (meta.get("study"), meta.get("size")) != (study.name, opts.size):
            raise UserError(f"{root} holds study {meta.get('study')} ({meta.get('size')}), not {study.name} ({opts.size})")
        return meta
    if opts.resume:
        raise UserError(f"nothing to resume at {root}; run without --resume first (or give its --out)")
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} exists and is not a study folder; pass another --out")
    meta = {**study.declaration(opts.size), "commit": _commit(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "storage": storage if "://" in storage else os.path.relpath(storage, root), **notes, "status": "running"}
    meta["evaluation"] = {**meta["evaluation"], "eps": study.val_eps(opts.size)}
    write_json(meta_path, meta)
    return meta


# ----------------------------------------------------------------------------------------------
# One Tune experiment of an arm
# ----------------------------------------------------------------------------------------------


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

    @property
    def label(self) -> str:
        return f"{self.arm.name}/{self.name}"


class Runner:
    def __init__(self, study: Study, opts: StudyOptions, folder: Folder, progress: Progress):
        self.study, self.opts, self.folder, self.progress = study, opts, folder, progress
        self.size = study.sizes[opts.size]
        self.cpus = opts.cpus_per_trial or self.size.cpus_per_trial

    def experiment(self, unit: Unit) -> Experiment:
        s, size = self.study, self.opts.size
        base = {**s.arm_config(unit.arm, size), **unit.base}
        options = {}
        if unit.scheduler == "pbt":
            options = {**s.pbt, **self.size.pbt}
        return Experiment(name=unit.name, description=unit.arm.description, space=unit.space,
                          sizes={size: Size(unit.trials // max(1, len(unit.seeds)), {"val_eps": s.val_eps(size)})},
                          base=base, scheduler=unit.scheduler, searcher="random", metric=s.metric, mode="max",
                          scheduler_options=options, threat_eps=s.val_eps(size), seed=unit.experiment_seed)

    def run(self, unit: Unit) -> list[dict]:
        done = self.folder.finished(unit.arm.name, unit.name)
        if done is not None:
            self.progress.skip(unit.trials)
            self.opts.log(f"[{self.progress.phase}] {unit.label}: finished before, skipped", flush=True)
            return done
        exp = self.experiment(unit)
        root = self.folder.experiment_root(unit.arm.name)
        path = f"{root}/{unit.name}" if "://" in root else os.path.join(root, unit.name)
        resume = tune.Tuner.can_restore(path)
        self.opts.log(f"[{self.progress.phase}] {unit.label}: {'resuming' if resume else 'starting'} "
                      f"{unit.trials} trial(s) ({unit.scheduler})", flush=True)
        run_opts = RunOptions(size=self.opts.size, storage=root, address=self.opts.address, name=unit.name,
                              cpus_per_trial=self.cpus, resume=resume, verbose=self.opts.verbose,
                              seeds=tuple(unit.seeds), per_seed=unit.per_seed or None)
        before = self.progress.done
        grid = run_experiment(exp, run_opts, callbacks=[_TrialProgress(str(self.folder.root), unit.label)])
        trials = [_trial_summary(r) for r in grid]
        self.progress.done = before + unit.trials  # whatever the callbacks counted (or, on resume, did not)
        self.folder.record(unit.arm.name, unit.name, trials)
        return trials


def _trial_summary(result) -> dict:
    metrics = result.metrics or {}
    config = {k: v for k, v in (result.config or {}).items()}
    return {"trial": metrics.get("trial_id") or os.path.basename(result.path), "seed": config.get("seed"),
            "config": config, "metrics": {k: metrics[k] for k in KEPT_METRICS if k in metrics},
            "checkpoint": result.checkpoint.path if result.checkpoint else None, "path": result.path,
            "error": str(result.error).splitlines()[0] if result.error else None}


def _score(trial: dict) -> float:
    value = trial["metrics"].get("val/robust_acc")
    ok = trial["checkpoint"] and not trial["error"] and trial["metrics"].get("status", "ok") != "diverged"
    return float(value) if ok and isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def best_trial(trials: list[dict]) -> dict:
    best = max(trials, key=_score)
    if _score(best) == -math.inf:
        raise UserError("no trial finished with a finite val/robust_acc and a checkpoint")
    return best


def _local_checkpoint(path: str) -> Path:
    """The checkpoint file of a Tune checkpoint folder (downloaded first from a URI)."""
    if "://" in path:
        target = Path(tempfile.mkdtemp(prefix="metaadv-study-ckpt-"))
        ray.tune.Checkpoint(path).to_directory(str(target))
        path = str(target)
    return Path(path) / CHECKPOINT_NAME


# ----------------------------------------------------------------------------------------------
# Schedules and policies derived from phase 1
# ----------------------------------------------------------------------------------------------


def schedule_rows(rows: list[dict]) -> list[dict]:
    """``round`` and every ``hp/*`` column of a run's rows: a replay schedule (the contract's format)."""
    out = []
    for i, row in enumerate(rows, start=1):
        out.append({"round": i, **{k: v for k, v in row.items() if k.startswith("hp/")}})
    return out


def write_schedule(rows: list[dict], path: Path) -> None:
    try:
        from ..training.replay import write_schedule as replay_write  # the replay helper's writer
    except ImportError:
        replay_write = None
    path.parent.mkdir(parents=True, exist_ok=True)
    if replay_write is not None:
        replay_write(rows, path)
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def lineage_rows(experiment_dir: str, trial: dict) -> tuple[list[dict], str]:
    """The hyperparameters in force every round of a PBT trial, across its exploits.

    ``analysis.lineage.trial_schedule`` rebuilds them from PBT's logs when it is importable; the
    trial's final checkpoint holds the same history as rows (an exploit restores the donor's rows
    and the trial appends its own), so those are used otherwise.
    """
    try:
        from analysis.lineage import trial_schedule
    except ImportError:
        trial_schedule = None
    if trial_schedule is not None:
        frame = trial_schedule(experiment_dir, trial["trial"])
        return frame.to_dict("records"), "analysis.lineage.trial_schedule"
    rows = read_checkpoint(_local_checkpoint(trial["checkpoint"]))["rows"]
    return schedule_rows(rows), "the best trial's checkpoint rows"


def save_policy(trial: dict, path: Path) -> None:
    """The learned policy network of a finished policy trial, as a ``--policy-file``."""
    from ..training.policy import PolicyController, save_policy_file

    values = {k: v for k, v in trial["config"].items() if k not in ("kind", "val_eps")}
    controller = PolicyController(TrainConfig.from_dict(values))
    controller.load_state_dict(read_checkpoint(_local_checkpoint(trial["checkpoint"]))["controller"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_policy_file(controller, path)


def _rotated(trials: list[dict], seeds: list[int]) -> dict[int, dict]:
    """Seed s -> the source trial of the next seed (wrapping): never the seed that made it."""
    by_seed = {int(t["seed"]): t for t in trials if _score(t) > -math.inf}
    if not by_seed:
        raise UserError("the source arm has no finished run to derive from")
    order = sorted(by_seed)
    return {s: by_seed[order[(order.index(s) + 1) % len(order)] if s in by_seed else order[i % len(order)]]
            for i, s in enumerate(seeds)}


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def _evaluate(checkpoint: str, out: str, eps: float, options: dict) -> dict:
    import torch

    from ..evaluation import evaluate_checkpoint

    torch.set_num_threads(1)
    result = evaluate_checkpoint(_local_checkpoint(checkpoint).parent, eps=eps, **options)
    write_json(Path(out), result)
    return {"robust_acc": result["robust_acc"], "clean_acc": result["clean_acc"]}


# ----------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------


def run_study(study: Study, opts: StudyOptions) -> dict:
    if opts.size not in study.sizes:
        raise UserError(f"study {study.name} has no size {opts.size!r}; choose one of {', '.join(study.sizes)}")
    root = study_folder(study, opts)
    storage = opts.storage or str(root)
    storage = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    replay_ok = replay_available()
    skipped = {} if replay_ok else {a.name: "needs the replay controller (metaadv.training.replay and "
                                    "TrainConfig.schedule), not in this checkout" for a in study.arms if a.kind == "replay"}
    notes = {"pbt_time_attr": "training_iteration",
             "pbt_note": "PBT compares trials at equal rounds (training_iteration), not equal cost/grad_evals; every "
                         "trial still stops at the per-model budget",
             "seeds": "single, tuned (rerun), replay and transfer arms train on seeds 1..N (paired); replay/transfer "
                      "seed s follows its source's run on the next seed; search seeds 20000+k, PBT 10000+100p+m",
             "skipped_arms": skipped}
    meta = _start_folder(study, opts, root, storage, notes)
    size = study.sizes[opts.size]
    folder = Folder(root, storage)
    units_1, n_derived = _phase1_units(study, size, skipped), _derived_trials(study, size, skipped)
    total = sum(u.trials for u in units_1) + n_derived
    progress = Progress(opts.log, total)
    _PROGRESS[str(root)] = progress
    started = ensure_ray(opts.address)
    start = time.perf_counter()
    try:
        runner = Runner(study, opts, folder, progress)
        opts.log(f"study {study.name} ({opts.size}) in {root}: {len(study.arms)} arms, {total} trials, then "
                 f"evaluation; cuts: {size.corners or 'none'}", flush=True)
        for name, why in skipped.items():
            opts.log(f"arm {name} skipped: {why}", flush=True)
        progress.phase = "1/3 train"
        results: dict[str, dict[str, list[dict]]] = {}
        for unit in units_1:
            results.setdefault(unit.arm.name, {})[unit.name] = runner.run(unit)
        progress.phase = "2/3 derive"
        for unit in _phase2_units(study, size, root, results, skipped, opts.log):
            results.setdefault(unit.arm.name, {})[unit.name] = runner.run(unit)
        models = _final_models(study, size, results, folder)
        _write_models(root, models)
        progress.phase = "3/3 evaluate"
        verdicts = _evaluate_all(study, opts, root, models, progress)
        _write_models(root, models)
    finally:
        _PROGRESS.pop(str(root), None)
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - start
    meta.update({"status": "done", "seconds_last_session": round(seconds, 1), "skipped_arms": skipped,
                 "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    write_json(root / "study.json", meta)
    summary = {"folder": str(root), "models": models, "verdicts": verdicts, "seconds": seconds, "skipped": skipped}
    for line in summary_lines(study, opts.size, summary):
        opts.log(line, flush=True)
    return summary


def _phase1_units(study: Study, size, skipped) -> list[Unit]:
    units = []
    for arm in study.arms:
        if arm.kind == "single":
            units.append(Unit(arm, arm.name, size.seeds, seeds=tuple(arm_seeds(size))))
        elif arm.kind == "tuned":
            units.append(Unit(arm, "search", size.search_samples, space=dict(study.space),
                              seeds=tuple(search_seeds(size))))
        elif arm.kind == "searched":
            for p in range(size.populations):
                units.append(Unit(arm, f"pbt-{p}", size.population, space=dict(study.space), scheduler="pbt",
                                  seeds=tuple(population_seeds(size, p)), experiment_seed=p))
    return units


def _derived_trials(study: Study, size, skipped) -> int:
    return sum(size.seeds for a in study.arms if a.kind in ("tuned", "replay", "transfer") and a.name not in skipped)


def _phase2_units(study: Study, size, root: Path, results: dict, skipped: dict, log) -> list[Unit]:
    seeds = arm_seeds(size)
    units = []
    for arm in study.arms:
        if arm.name in skipped:
            continue
        if arm.kind == "tuned":
            best = best_trial(results[arm.name]["search"])
            picked = {k: best["config"][k] for k in study.space}
            units.append(Unit(arm, "rerun", size.seeds, base=picked, seeds=tuple(seeds)))
        elif arm.kind == "replay":
            schedules, rounds = {}, {}
            for s, (name, rows) in _replay_sources(study, arm, size, root, results, seeds).items():
                path = root / "schedules" / arm.name / f"{name}.csv"
                if not path.is_file():
                    write_schedule(rows, path)
                schedules[s], rounds[s] = str(path), len(rows)
            units.append(Unit(arm, arm.name, size.seeds, seeds=tuple(seeds), base={"rounds": max(rounds.values())},
                              per_seed={"schedule": schedules, "rounds": rounds}))
        elif arm.kind == "transfer":
            files = {}
            for s, trial in _rotated(_source_trials(results, arm.source), seeds).items():
                path = root / "policies" / f"{arm.source}-seed{trial['seed']}.pt"
                if not path.is_file():
                    save_policy(trial, path)
                files[s] = str(path)
            units.append(Unit(arm, arm.name, size.seeds, seeds=tuple(seeds), per_seed={"policy_file": files}))
    return units


def _source_trials(results: dict, arm: str) -> list[dict]:
    return [t for trials in results[arm].values() for t in trials]


def _replay_sources(study: Study, arm: Arm, size, root: Path, results: dict, seeds: list[int]) -> dict:
    """Seed -> (schedule name, rows) for a replay arm."""
    source = study.arm(arm.source)
    if source.kind == "searched":
        pops = sorted(results[source.name])
        out = {}
        for i, s in enumerate(seeds):
            pop = pops[i % len(pops)]
            best = best_trial(results[source.name][pop])
            exp_dir = os.path.dirname(best["path"]) if "://" not in best["path"] else best["path"].rsplit("/", 1)[0]
            rows, _how = lineage_rows(exp_dir, best)
            out[s] = (f"{pop}-{best['trial']}", rows)
        return out
    return {s: (f"{source.name}-seed{t['seed']}", schedule_rows(read_checkpoint(_local_checkpoint(t["checkpoint"]))["rows"]))
            for s, t in _rotated(_source_trials(results, source.name), seeds).items()}


def _final_models(study: Study, size, results: dict, folder: Folder) -> list[dict]:
    models = []
    for arm in study.arms:
        if arm.name not in results:
            continue
        if arm.kind == "searched":
            for pop, trials in sorted(results[arm.name].items()):
                best = best_trial(trials)
                models.append(_model_row(arm, pop, best, pop, folder))
            continue
        experiment = "rerun" if arm.kind == "tuned" else arm.name
        for trial in sorted(results[arm.name].get(experiment, []), key=lambda t: t["seed"] or 0):
            if trial["checkpoint"]:
                models.append(_model_row(arm, f"seed{trial['seed']}", trial, experiment, folder))
    return models


def _model_row(arm: Arm, model: str, trial: dict, experiment: str, folder: Folder) -> dict:
    return {"arm": arm.name, "model": model, "seed": trial["seed"], "experiment": experiment, "trial": trial["trial"],
            "checkpoint": folder.rel(trial["checkpoint"]), "eval": f"eval/{arm.name}/{model}.json",
            "_checkpoint": trial["checkpoint"], "_metrics": trial["metrics"]}


def _write_models(root: Path, models: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MODELS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(models)
    os.replace(tmp, root / "models.csv")


def _evaluate_all(study: Study, opts: StudyOptions, root: Path, models: list[dict], progress: Progress) -> dict:
    size = study.sizes[opts.size]
    options = {k: v for k, v in size.evaluation.items()}
    eps = study.val_eps(opts.size)
    verdicts, pending = {}, {}
    task = ray.remote(num_cpus=1)(_evaluate)
    for m in models:
        out = root / m["eval"]
        if out.is_file():
            r = json.loads(out.read_text())
            verdicts[(m["arm"], m["model"])] = {"robust_acc": r["robust_acc"], "clean_acc": r["clean_acc"]}
        else:
            pending[task.remote(m["_checkpoint"], str(out), eps, options)] = m
    if not pending:
        opts.log(f"[{progress.phase}] every model was evaluated before", flush=True)
        return verdicts
    opts.log(f"[{progress.phase}] {len(pending)} model(s) (eps {eps:g}, {options})", flush=True)
    start, total, done = time.perf_counter(), len(pending), 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        m = pending.pop(ready[0])
        verdicts[(m["arm"], m["model"])] = ray.get(ready[0])
        done += 1
        elapsed = time.perf_counter() - start
        opts.log(f"[{progress.phase}] {m['arm']}/{m['model']}: robust {verdicts[(m['arm'], m['model'])]['robust_acc']:.3f} "
                 f"| {done}/{total} models, {_duration(elapsed)} elapsed, {progress.eta(total - done, done, elapsed)}",
                 flush=True)
    return verdicts


def summary_lines(study: Study, size: str, summary: dict) -> list[str]:
    s = study.sizes[size]
    lines = [f"study {study.name} ({size}) done in {_duration(summary['seconds'])}: {summary['folder']}",
             f"  cuts: {s.corners or 'none'}",
             f"  per-model budget (cost a): {s.budget_grad_evals:,} grad evals; evaluated at eps {study.val_eps(size):g} "
             f"on {s.evaluation.get('n') or 'all'} test digits, AutoAttack {s.evaluation.get('aa_version')}",
             f"  {'arm':<18}{'models':>7}{'robust':>9}{'clean':>8}   (mean over models; worst case over attacks)"]
    for arm in study.arms:
        if arm.name in summary["skipped"]:
            lines.append(f"  {arm.name:<18}skipped: {summary['skipped'][arm.name]}")
            continue
        got = [summary["verdicts"][(m["arm"], m["model"])] for m in summary["models"] if m["arm"] == arm.name
               and (m["arm"], m["model"]) in summary["verdicts"]]
        if not got:
            lines.append(f"  {arm.name:<18}{0:>7}")
            continue
        mean = lambda key: sum(g[key] for g in got) / len(got)  # noqa: E731
        lines.append(f"  {arm.name:<18}{len(got):>7}{mean('robust_acc'):>9.3f}{mean('clean_acc'):>8.3f}")
    lines.append("  next: metaadv analyze " + summary["folder"] + " --out REPORT_DIR  (CIs, paired contrasts, cost (b))")
    return lines

