"""Run a declared study (:mod:`metaadv.study.spec`): every arm as Ray Tune trials, in
dependency order, then every final model through :func:`metaadv.evaluation.evaluate_checkpoint`.

Phases:

1. ``train``: the arms that depend on nothing (single-run arms, the random search, the PBT
   populations), one Tune experiment each;
2. ``derive``: the arms built from phase 1's results: the tuned config rerun on fresh seeds,
   replays of the learned schedules and the best PBT lineages (``schedules/``), the learned
   policies frozen on new seeds (``policies/``);
3. ``evaluate``: every final model, as Ray tasks (so a cluster shares the work), into
   ``eval/ARM/MODEL.json``; then ``models.csv``.

Modules: :mod:`.folder` (options, study.json, progress.json, models.csv), :mod:`.progress`,
:mod:`.units` (Tune experiments, phase 1), :mod:`.derive` (phase 2, final models), :mod:`.evaluate`
(phase 3), :mod:`.disk` (a finished experiment's trials keep their last checkpoint), :mod:`.run`
(the phases in order).

The study folder (layout in /work/wt/STUDY_CONTRACT.md and docs/study.md) is resumable: a Tune
experiment finished before is skipped (``progress.json`` records its trials), a half-finished one
continues with ``Tuner.restore``, and an evaluation whose JSON exists is not redone.
"""

from .folder import MODELS_COLUMNS, StudyOptions, study_folder
from .run import run_study

__all__ = ["StudyOptions", "run_study", "study_folder", "MODELS_COLUMNS"]
