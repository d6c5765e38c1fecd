"""A study's disk: the checkpoints of a finished experiment that nothing reads again.

Tune keeps every checkpoint while an experiment runs (``CheckpointConfig(num_to_keep=None)`` in
:mod:`metaadv.tune.runner`: a resume names the checkpoint of a snapshot that can lag the trials,
and PBT clones a donor's checkpoint up to an interval old). Once the experiment is finished and
recorded in ``progress.json``, ``--resume`` skips it and never restores it again, and what the
study reads of it from then on is each trial's *last* checkpoint: the checkpoint recorded for the
trial (final models, the judge, policies of transfer arms, the rows of replayed runs) and the
newest ``checkpoint_*`` folder (``analysis.lineage`` fills gaps in a PBT lineage from it). The
rest, one folder per round per trial, is deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["prune_checkpoints", "folder_bytes"]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def kept_checkpoints(trial: dict) -> set[Path]:
    """The checkpoint folders of a finished trial that are read again: the recorded one and the newest."""
    folder = Path(trial["path"])
    kept = {Path(trial["checkpoint"])} if trial.get("checkpoint") else set()
    newest = sorted(folder.glob("checkpoint_*"))
    return kept | set(newest[-1:])


def prune_checkpoints(trials: list[dict]) -> tuple[int, int]:
    """Delete the checkpoint folders of the finished ``trials`` (progress.json's summaries) that
    :func:`kept_checkpoints` leaves out; return (folders deleted, bytes freed).

    Only local folders: a URI's checkpoints are left to the bucket's own lifecycle rules."""
    removed, freed = 0, 0
    for trial in trials:
        path = trial.get("path")
        if not path or "://" in path or "://" in (trial.get("checkpoint") or ""):
            continue
        kept = kept_checkpoints(trial)
        for folder in sorted(Path(path).glob("checkpoint_*")):
            if folder in kept or not folder.is_dir():
                continue
            size = folder_bytes(folder)
            shutil.rmtree(folder)
            removed, freed = removed + 1, freed + size
    return removed, freed
