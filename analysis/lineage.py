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

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metaadv.errors import UserError

__all__ = ["Exploit", "read_exploits", "tag_index", "policy_chain", "policy_schedule", "assign_segments",
           "lineage_rows", "trial_schedule", "hp_columns", "save_schedule"]


@dataclass(frozen=True)
class Exploit:
    """One PBT exploit: ``target`` restarted from ``donor``'s checkpoint with ``new_config``."""

    target: str  # tag of the trial that was replaced
    donor: str  # tag of the trial it was cloned from
    target_iteration: int  # the target's training_iteration when PBT decided (one report behind)
    donor_iteration: int  # the donor's training_iteration (its checkpoint may be one round earlier)
    donor_config: dict
    new_config: dict

    @property
    def target_index(self) -> int:
        return tag_index(self.target)

    @property
    def donor_index(self) -> int:
        return tag_index(self.donor)


def tag_index(tag: str) -> int:
    """The trial counter a PBT tag starts with: ``"3_eps=0.2,..."`` -> 3."""
    head = str(tag).split("_", 1)[0]
    if not head.isdigit():
        raise UserError(f"unexpected PBT trial tag {tag!r} (expected '<index>_<values>')")
    return int(head)


def read_exploits(path: str | Path) -> list[Exploit]:
    """Every line of a ``pbt_global.txt`` or ``pbt_policy_*.txt`` file, in file order."""
    out = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            target, donor, t_iter, d_iter, d_conf, n_conf = json.loads(line)
        except (ValueError, TypeError):
            raise UserError(f"{path}:{number}: not a PBT log line (a JSON list of 6 items)") from None
        out.append(Exploit(target, donor, int(t_iter), int(d_iter), d_conf, n_conf))
    return out


def policy_chain(policy_file: str | Path) -> tuple[dict, list[tuple[int, dict]]]:
    """The initial config and ``(donor iteration, new config)`` change points of a trial's chain.

    Walks the file back from its last line while each earlier line's target is the later line's
    donor (the same rule as Ray's ``PopulationBasedTrainingReplay``). Rounds ``1..it_1`` ran with
    the initial config, rounds ``it_k+1..it_{k+1}`` with the k-th new config.
    """
    chain: list[Exploit] = []
    for ex in reversed(read_exploits(policy_file)):
        if chain and ex.target != chain[-1].donor:
            break
        chain.append(ex)
    if not chain:
        raise UserError(f"{policy_file} records no exploit")
    chain.reverse()
    return chain[0].donor_config, [(ex.donor_iteration, ex.new_config) for ex in chain]


def policy_schedule(policy_file: str | Path, rounds: int) -> pd.DataFrame:
    """``round`` and ``hp/<key>`` for rounds 1..``rounds`` from the policy file alone (configs as
    logged; keys are the config's keys, so fixed TrainConfig keys appear too)."""
    initial, changes = policy_chain(policy_file)
    rows = []
    for r in range(1, rounds + 1):
        config = initial
        for boundary, new in changes:
            if r > boundary:
                config = new
        rows.append({"round": r, **{f"hp/{k}": v for k, v in config.items() if isinstance(v, (int, float))
                                    and not isinstance(v, bool)}})
    return pd.DataFrame(rows)


def _matches(row: pd.Series, config: dict, keys) -> bool:
    return all(f"hp/{k}" in row and _close(row[f"hp/{k}"], config[k]) for k in keys)


def _close(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return a == b


def assign_segments(rows: pd.DataFrame, exploits: list[Exploit]) -> tuple[list[int], dict[int, int | None]]:
    """Segment number of each reported row (in report order) of one trial, and for each segment
    > 0 the position in ``exploits`` (the trial's own, in log order) that started it.

    A segment starts where ``round`` jumps back or the rows switch to the next exploit's new config.
    A jump back that matches no logged exploit (a lost ``pbt_global.txt``: the policy files keep
    only the latest chain) starts a segment whose exploit is unknown (``None``).
    """
    segments, origin, k, prev = [], {}, 0, None
    for _, row in rows.iterrows():
        if prev is not None:
            nxt = exploits[k] if k < len(exploits) else None
            changed = [] if nxt is None else [key for key in nxt.new_config if key in nxt.donor_config
                                              and not _close(nxt.new_config[key], nxt.donor_config[key])
                                              and f"hp/{key}" in row]
            matches = nxt is not None and _matches(row, nxt.new_config, changed)
            switched = bool(changed) and matches and not _matches(prev, nxt.new_config, changed)
            jumped = row["round"] <= prev["round"]
            if switched or (jumped and matches):
                origin[len(origin) + 1] = k
                k += 1
            elif jumped:
                origin[len(origin) + 1] = None
        segments.append(len(origin))
        prev = row
    return segments, origin


def hp_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("hp/")]


def lineage_rows(frame: pd.DataFrame, experiment: str, trial: str, segment: int | None = None) -> pd.DataFrame:
    """The rows in force at every round of ``trial``'s model (its last segment by default).

    ``frame`` is :func:`analysis.load_results` output (it holds ``pbt/segment``, ``pbt/donor`` and
    ``pbt/donor_segment``). Returns one row per round, ascending, each the reported row of the trial
    that trained that round, with ``pbt/source_trial`` naming it.
    """
    own = frame[(frame["experiment"] == experiment) & (frame["trial"] == trial)]
    if own.empty:
        raise UserError(f"no rows of trial {trial!r} in experiment {experiment!r}")
    if segment is None:
        segment = int(own["pbt/segment"].max()) if "pbt/segment" in own else 0
    seg = own[own.get("pbt/segment", 0) == segment] if "pbt/segment" in own else own
    first = int(seg["round"].min())
    parts = []
    if first > 1 and segment > 0:
        donor, donor_seg = seg["pbt/donor"].iloc[0], seg["pbt/donor_segment"].iloc[0]
        if isinstance(donor, str) and not pd.isna(donor_seg):
            inherited = lineage_rows(frame, experiment, donor, int(donor_seg))
            parts.append(inherited[inherited["round"] < first])
    parts.append(seg.assign(**{"pbt/source_trial": trial}))
    out = pd.concat(parts, ignore_index=True).drop_duplicates("round", keep="last")
    return out.sort_values("round", kind="stable").reset_index(drop=True)


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
    from .load import load_results

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
