"""``run_study``: the three phases in order, resumable (see the package docstring)."""

from __future__ import annotations

import datetime
import os
import time

from ..distributed.ray_session import ensure_ray
from ..errors import UserError
from ..tune.loggers import mlflow_uri, where_lines
from ..tune.study_support import TRIAL_LISTENERS, shutdown
from .spec import Study
from .derive import final_models, phase2_units
from .evaluate import evaluate_all
from .folder import Folder, StudyOptions, commit_of_code, start_folder, study_folder, write_json, write_models
from .judge import judge_best
from .meta_train import meta_train_arms
from .progress import Progress, summary_lines
from .units import Runner, derived_trials, phase1_units

__all__ = ["run_study"]


def run_study(study: Study, opts: StudyOptions) -> dict:
    if opts.size not in study.sizes:
        raise UserError(f"study {study.name} has no size {opts.size!r}; choose one of {', '.join(study.sizes)}")
    root = study_folder(study, opts)
    storage = opts.storage or str(root)
    storage = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    notes = {"pbt_time_attr": study.pbt_time_attr,
             "pbt_note": f"PBT perturbs every perturbation_interval of {study.pbt_time_attr} (study.json pbt), so trials "
                         "are compared at equal training cost, not equal round counts; every trial stops at the "
                         "per-model budget",
             "seeds": "single, tuned (rerun), replay and transfer arms train on seeds 1..N (paired); replay/transfer "
                      "seed s follows its source's run on the next seed; search seeds 20000+k, PBT 10000+100p+m"}
    meta = start_folder(study, opts, root, storage, notes)
    size = study.sizes[opts.size]
    folder = Folder(root, storage)
    units_1, n_derived = phase1_units(study, size), derived_trials(study, size)
    total = sum(u.trials for u in units_1) + n_derived
    progress = Progress(opts.log, total)
    TRIAL_LISTENERS[str(root)] = progress.trial
    started = ensure_ray(opts.address)
    start = time.perf_counter()
    try:
        runner = Runner(study, opts, folder, progress)
        opts.log(f"study {study.name} ({opts.size}) in {root}: {len(study.arms)} arms, {total} trials, then "
                 f"evaluation; cuts: {size.corners or 'none'}", flush=True)
        for line in where_lines(tuple(opts.loggers), folder.experiment_root("").rstrip("/"), mlflow_uri(root)):
            opts.log(f"loggers: {line}", flush=True)
        phases = progress.phases  # seconds per phase, this session
        n = 4 if size.judge else 3
        progress.begin(f"1/{n} train")
        results: dict[str, dict[str, list[dict]]] = {}
        for unit in units_1:
            results.setdefault(unit.arm.name, {})[unit.name] = runner.run(unit)
        progress.begin(f"2/{n} derive")
        for unit in phase2_units(study, size, root, results):  # what needs no meta-training first
            results.setdefault(unit.arm.name, {})[unit.name] = runner.run(unit)
        meta_train_arms(study, opts, root, progress)
        for unit in phase2_units(study, size, root, results, deployed=True):
            results.setdefault(unit.arm.name, {})[unit.name] = runner.run(unit)
        models = final_models(study, size, results, folder)
        write_models(root, models)
        progress.begin(f"3/{n} evaluate")
        verdicts = evaluate_all(study, opts, root, models, progress)
        write_models(root, models)
        judged = {}
        if size.judge:
            progress.begin(f"4/{n} judge")
            judged = judge_best(study, opts, root, models, verdicts, progress)
            write_models(root, models)
            meta["judge"] = dict(size.judge)  # a study begun before its size had a judge gains it here
        progress.begin("")
    finally:
        TRIAL_LISTENERS.pop(str(root), None)
        if started:
            shutdown()
    seconds = time.perf_counter() - start
    finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    session = {"finished": finished, "seconds": round(seconds, 1), "phases": {k: round(v, 1) for k, v in phases.items()},
               "commit": commit_of_code()}  # a resumed study may run on newer code than study.json's commit
    meta.update({"status": "done", "seconds_last_session": session["seconds"], "phase_seconds_last_session": session["phases"],
                 "finished": finished, "sessions": [*meta.get("sessions", []), session]})  # each completed one
    write_json(root / "study.json", meta)
    summary = {"folder": str(root), "models": models, "verdicts": verdicts, "judged": judged, "seconds": seconds,
               "phases": dict(phases)}
    for line in summary_lines(study, opts.size, summary):
        opts.log(line, flush=True)
    return summary
