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

from pathlib import Path

from .spec import Study
from .evaluate import JUDGES, evaluate_into, trust_label
from .folder import StudyOptions
from .progress import Progress

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
    best = best_per_arm(models, verdicts)
    for m in best:
        m["judge"] = f"judge/{m['arm']}/{m['model']}.json"
    return evaluate_into(
        root, best, "judge", eps, options, opts, progress, none_left="every arm's best model was judged before",
        starting=lambda n: f"each arm's best model again: {n} model(s) (eps {eps:g}, {options})",
        describe=lambda m, v: (f"robust {v['robust_acc']:.3f} (phase 3: {verdicts[(m['arm'], m['model'])]['robust_acc']:.3f}), "
                               f"{trust_label(v)}"), judge=JUDGES[study.kind], everyone=models)
