"""The frame-level half of the PBT lineage rebuild (see :mod:`analysis.lineage` for the method):
Ray's exploit logs parsed, a trial's rows split into segments, and a model's lineage rows picked
out of a loaded frame. It reads no results folder, so the loader (:mod:`analysis.load`) and the
cost columns (:mod:`analysis.cost`) can use it without depending on each other through it; the
public names are re-exported by :mod:`analysis.lineage`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metaadv.errors import UserError

__all__ = ["Exploit", "read_exploits", "tag_index", "policy_chain", "policy_schedule", "assign_segments",
           "lineage_rows", "hp_columns"]


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
