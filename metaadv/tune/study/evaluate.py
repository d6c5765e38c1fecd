"""Phase 3: every final model through :func:`metaadv.evaluation.evaluate_checkpoint`, as Ray tasks
(so a cluster shares the work), into ``eval/ARM/MODEL.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray

from ..study_spec import Study
from .folder import StudyOptions, write_json
from .progress import Progress, duration
from .units import local_checkpoint

__all__ = ["evaluate_all"]


def _evaluate(checkpoint: str, out: str, eps: float, options: dict) -> dict:
    import torch

    from ...evaluation import evaluate_checkpoint

    torch.set_num_threads(1)
    result = evaluate_checkpoint(local_checkpoint(checkpoint).parent, eps=eps, **options)
    write_json(Path(out), result)
    return {"robust_acc": result["robust_acc"], "clean_acc": result["clean_acc"]}


def evaluate_all(study: Study, opts: StudyOptions, root: Path, models: list[dict], progress: Progress) -> dict:
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
                 f"| {done}/{total} models, {duration(elapsed)} elapsed, {progress.eta(total - done, done, elapsed)}",
                 flush=True)
    return verdicts
