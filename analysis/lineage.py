"""PBT lineage: which rows (and so which hyperparameters) made a trial's final model.

Ray's PBT logs every exploit as one JSON line ``[target tag, donor tag, target iteration, donor
iteration, donor config, new config]``: all of them, in order, in ``pbt_global.txt``, and a trial's
own chain in ``pbt_policy_<trial id>.txt`` (before a line is appended the target's file is
overwritten with the donor's, so the file holds the ancestors' exploits too). Tags are the trials'
first ``experiment_tag``, ``"<index>_<values>"``; the index is the trial id's counter
(``e92ca_00003`` has tag ``3_...``).

The rebuild (see docs/analysis.md, "Lineage"):

1. A trial's reported rows are split into **segments**: segment 0 is what it trained from its own
   initial config; segment k starts after its k-th exploit (``pbt_global.txt`` order). A new segment
   begins where ``round`` jumps back, or where the rows' ``hp/*`` switch to the exploit's new
   config (a donor one round ahead resumes without a jump).
2. Segment k of trial T was cloned from donor D's checkpoint; D was then in its segment j, j = the
   number of D's own exploits logged before that line. The rows in force at rounds before the
   segment's first round are D's lineage (recursively), the later ones T's own.

The logged donor iteration can be a round off the checkpoint actually cloned (Ray registers a
checkpoint after the result that reports it); taking the boundary from the first row the target
reported after the exploit avoids that slack entirely. The policy-file parse
(:func:`policy_chain`, :func:`policy_schedule`) uses the logged iterations, as Ray's own
``PopulationBasedTrainingReplay`` does, and serves where rows are missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from metaadv.errors import UserError

# The frame-level functions live in ._lineage, below the loader, which needs them (this module's
# trial_schedule needs the loader); they are public here.
from ._lineage import (Exploit, assign_segments, hp_columns, lineage_rows, policy_chain, policy_schedule,
                       read_exploits, tag_index)
from .load import load_results

__all__ = ["Exploit", "read_exploits", "tag_index", "policy_chain", "policy_schedule", "assign_segments",
           "lineage_rows", "trial_schedule", "hp_columns", "save_schedule"]


def _find_trial(frame: pd.DataFrame, trial) -> str:
    trials = frame["trial"].drop_duplicates().tolist()
    if str(trial) in trials:
        return str(trial)
    index = tag_index(trial) if not isinstance(trial, int) else trial
    hits = [t for t in trials if str(t).rsplit("_", 1)[-1].isdigit() and int(str(t).rsplit("_", 1)[-1]) == index]
    if len(hits) != 1:
        raise UserError(f"no single trial matches {trial!r}; trials: {', '.join(map(str, trials))}")
    return hits[0]


def trial_schedule(experiment_dir: str | Path, trial) -> pd.DataFrame:
    """The effective schedule of a PBT trial (id ``e92ca_00000``, tag ``"0_eps=..."`` or index 0).

    ``round`` (1, 2, ... consecutive) and ``hp/*`` as the rows carried them, plus
    ``pbt/source_trial``; a valid replay schedule (extra columns are ignored by replay). Rounds
    whose row is missing from every log are filled from the rows stored in the trial's latest
    checkpoint (source ``"checkpoint"``), else from its policy file's configs (``"policy-file"``).
    """
    frame = load_results(experiment_dir)
    experiment = frame["experiment"].iloc[0]
    tid = _find_trial(frame, trial)
    rows = lineage_rows(frame, experiment, tid)
    out = rows[["round", *hp_columns(rows), "pbt/source_trial"]]
    last = int(out["round"].max())
    if len(out) < last:  # a gap in the logs
        full = out.set_index("round").reindex(range(1, last + 1))
        folder = Path(frame.loc[frame["trial"] == tid, "source"].iloc[0])
        for name, filler in _fillers(Path(experiment_dir), folder, tid, last):
            for col in filler.columns.intersection(full.columns):
                full[col] = full[col].fillna(filler[col])
            full["pbt/source_trial"] = full["pbt/source_trial"].fillna(
                pd.Series(name, index=filler.index).where(filler.notna().any(axis=1)))
        if full["pbt/source_trial"].isna().any():
            missing = [int(r) for r in full.index[full["pbt/source_trial"].isna()]]
            raise UserError(f"rounds {missing} of trial {tid} are in no log, checkpoint or policy file")
        out = full.reset_index()
    return out.reset_index(drop=True)


def _fillers(experiment_dir: Path, folder: Path, tid: str, last: int):
    """(name, frame indexed by round) sources for rounds missing from the logs, most exact first."""
    checkpoints = sorted(folder.glob("checkpoint_*/checkpoint.pt"))
    if checkpoints:
        from metaadv.checkpoint import read_checkpoint

        stored = pd.DataFrame(read_checkpoint(checkpoints[-1])["rows"])
        yield "checkpoint", stored[stored["round"] <= last].set_index("round")[hp_columns(stored)]
    policy = experiment_dir / f"pbt_policy_{tid}.txt"
    if policy.is_file():
        yield "policy-file", policy_schedule(policy, last).set_index("round")


def save_schedule(schedule: pd.DataFrame, path: str | Path) -> Path:
    """Write ``round`` + ``hp/*`` as a replay schedule CSV (through the replay module's writer when
    it is installed, so the format is the one replay reads)."""
    path = Path(path)
    cols = ["round", *hp_columns(schedule)]
    try:
        from metaadv.training.replay import write_schedule
    except ImportError:
        path.parent.mkdir(parents=True, exist_ok=True)
        schedule[cols].to_csv(path, index=False)
        return path
    write_schedule(schedule[cols].to_dict("records"), path)
    return path
