"""Phase 4 (sizes with ``judge`` options): each arm's best model evaluated again with a stronger
attack, into ``judge/ARM/MODEL.json``.

Phase 3 judges every model with what the size can afford (at ``medium``, AutoAttack's fast subset:
APGD-CE + APGD-T); this phase re-judges the one model per arm a user would ship (the highest
trusted phase-3 robust accuracy, ties to the lower seed) with the size's ``judge`` options (the
standard AutoAttack) on the same test examples. The difference says what the stronger attack finds
that the cheaper one missed; both numbers carry the optimism of picking the best model on those
examples, so an arm is still read by its mean over models.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray

from ..study_spec import Study
from .evaluate import _evaluate, trust_label, verdict_of
from .folder import StudyOptions
from .progress import Progress, duration

__all__ = ["best_per_arm", "judge_best"]


def best_per_arm(models: list[dict], verdicts: dict) -> list[dict]:
    """Each arm's model with the highest trusted robust accuracy (``verdicts`` keyed by (arm, model));
    ties go to the model listed first (the lower seed). Arms whose every verdict is untrusted, or
    missing, have no best."""
    best: dict[str, tuple[float, dict]] = {}
    for m in models:
        v = verdicts.get((m["arm"], m["model"]))
        if v is None or v.get("trusted") is False:
            continue
        if m["arm"] not in best or v["robust_acc"] > best[m["arm"]][0]:
            best[m["arm"]] = (v["robust_acc"], m)
    return [m for _, m in best.values()]


def judge_best(study: Study, opts: StudyOptions, root: Path, models: list[dict], verdicts: dict,
               progress: Progress) -> dict:
    """Evaluate :func:`best_per_arm` with the size's ``judge`` options; sets each judged model's
    ``judge`` path (models.csv) and returns the verdicts keyed by (arm, model)."""
    options = dict(study.sizes[opts.size].judge)
    eps = study.val_eps(opts.size)
    judged, pending = {}, {}
    task = ray.remote(num_cpus=1)(_evaluate)
    for m in best_per_arm(models, verdicts):
        m["judge"] = f"judge/{m['arm']}/{m['model']}.json"
        out = root / m["judge"]
        if out.is_file():
            judged[(m["arm"], m["model"])] = verdict_of(json.loads(out.read_text()))
        else:
            pending[task.remote(m["_checkpoint"], str(out), eps, options)] = m
    if not pending:
        opts.log(f"[{progress.phase}] every arm's best model was judged before", flush=True)
        return judged
    opts.log(f"[{progress.phase}] each arm's best model again: {len(pending)} model(s) (eps {eps:g}, {options})", flush=True)
    start, total, done = time.perf_counter(), len(pending), 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        m = pending.pop(ready[0])
        v = judged[(m["arm"], m["model"])] = ray.get(ready[0])
        first = verdicts[(m["arm"], m["model"])]["robust_acc"]
        done += 1
        elapsed = time.perf_counter() - start
        opts.log(f"[{progress.phase}] {m['arm']}/{m['model']}: robust {v['robust_acc']:.3f} (phase 3: {first:.3f}), "
                 f"{trust_label(v)} | {done}/{total} models, {duration(elapsed)} elapsed, "
                 f"{progress.eta(total - done, done, elapsed)}", flush=True)
    return judged
