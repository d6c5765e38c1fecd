"""The ``replay`` controller: train under a per-round hyperparameter table.

A schedule is a CSV with a ``round`` column (1-based, consecutive from 1) and ``hp/<field>``
columns naming :class:`~metaadv.training.hparams.HParams` fields, exactly as the metrics row
names them. Any ``metrics.csv`` is therefore a schedule, and so is a PBT lineage or a policy
run's rows written by :func:`write_schedule`. Other columns are ignored, and so are the columns
the row derives from the others (``hp/step_size``).

Round r of a replay run carries exactly row r's values for the columns the table has; the
config's fixed schedule (eps ramp, lr schedule) gives the columns it lacks. Within-round eps:
``hp/eps_start`` is the eps at the round's start and ``hp/eps`` at its end, as in the row; when
the table has ``hp/eps`` but no ``hp/eps_start``, eps holds for the whole round (the table
replaces the ramp).

Replay retrains from scratch, on whatever seed the config names: the fair test of a schedule
apart from the lucky seeds a population or a policy run happened to have.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
from pathlib import Path

from .._eps_bounds import eps_error
from ..errors import UserError
from .controllers import ScheduleController, register_controller
from .hparams import HPARAM_NAMES, HParams
from .metrics import write_metrics_csv

__all__ = ["ReplayController", "read_schedule", "write_schedule", "check_schedule", "DERIVED_COLUMNS"]

DERIVED_COLUMNS = ("hp/step_size",)  # printed by the row, computed from other fields: ignored on read
_INT_FIELDS = {f.name for f in dataclasses.fields(HParams) if f.type in ("int", int)}


def read_schedule(path: str | Path) -> list[dict]:
    """The validated rows of schedule ``path``: ``[{"round": 1, "hp/eps": 0.1, ...}, ...]``.

    Raises :class:`UserError` (one line) for a missing or unreadable file, a missing ``round``
    column, rounds that are not 1, 2, 3, ..., an ``hp/`` column that is not an HParams field, and
    a value that is not a finite number or is one HParams refuses on its own (eps outside [0, 1],
    steps 0, ...).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"schedule file {str(p)!r} not found")
    try:
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read schedule {str(p)!r}: {str(exc).splitlines()[0]}") from None
    return _validate(raw, columns, str(p))


def write_schedule(rows: list[dict], path: str | Path) -> None:
    """Write the ``round`` and ``hp/*`` columns of ``rows`` (metrics rows, or schedule rows) as a
    schedule, atomically; the rows are checked as :func:`read_schedule` checks them, first."""
    columns = ["round"]
    for row in rows:
        columns += [k for k in row if k.startswith("hp/") and k not in columns]
    _validate([{k: row.get(k) for k in columns} for row in rows], columns, str(path))
    write_metrics_csv(rows, path, columns)


def _validate(raw: list[dict], columns: list[str], name: str) -> list[dict]:
    if "round" not in columns:
        raise UserError(f"schedule {name!r} has no 'round' column (columns: {', '.join(columns) or 'none'})")
    hp_cols = [c for c in columns if c.startswith("hp/") and c not in DERIVED_COLUMNS]
    unknown = [c for c in hp_cols if c[3:] not in HPARAM_NAMES]
    if unknown:
        raise UserError(f"schedule {name!r}: unknown hyperparameter column(s) {', '.join(unknown)}; "
                        f"hp/ columns name fields of HParams: {', '.join(HPARAM_NAMES)}")
    if not hp_cols:
        raise UserError(f"schedule {name!r} has no hp/* columns: nothing to replay")
    rows = []
    for i, rec in enumerate(raw, start=1):
        r = _number(rec.get("round"), name, i, "round")
        if r != i:
            raise UserError(f"schedule {name!r}: rounds must be 1, 2, 3, ... without gaps or repeats; "
                            f"row {i} has round {rec.get('round')!r}")
        row = {"round": i}
        for col in hp_cols:
            value = _number(rec.get(col), name, i, col)
            field = col[3:]
            if field in _INT_FIELDS and float(value).is_integer():
                value = int(value)
            try:
                HParams(**{field: value})  # the field's own range check, with its own message
            except UserError as exc:
                raise UserError(f"schedule {name!r} round {i}: {exc}") from None
            row[col] = value
        rows.append(row)
    if not rows:
        raise UserError(f"schedule {name!r} has no rows")
    return rows


def _number(text, name: str, i: int, col: str):
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = text
    else:
        value = None
        for cast in (int, float):
            try:
                value = cast(str(text).strip())
                break
            except (TypeError, ValueError):
                pass
    if value is None or not math.isfinite(value):
        raise UserError(f"schedule {name!r} round {i}: {col} must be a finite number, got {text!r}")
    return value


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_schedule(config) -> list[HParams]:
    """The hyperparameters of every round of ``config`` under its schedule, or a one-line UserError.

    Called when the config is built, so a bad table fails before any file is written (and, in
    ``metaadv tune``, before Ray starts).
    """
    if config.controller != "replay":
        if config.schedule:
            raise UserError(f"schedule {config.schedule!r} needs --controller replay (the controller is {config.controller!r})")
        return []
    if not config.schedule:
        raise UserError("--controller replay needs --schedule FILE (a CSV with round and hp/* columns)")
    rows = read_schedule(config.schedule)
    if len(rows) < config.rounds:
        raise UserError(f"schedule {config.schedule!r} has {len(rows)} rounds but the run trains {config.rounds}; "
                        f"give --epochs {len(rows)} or a longer schedule")
    base = ScheduleController(config)
    out = []
    for r in range(config.rounds):
        try:
            hp = _apply(base.propose(r), rows[r])
            if error := eps_error(config, max(hp.eps, hp.eps_start or 0.0)):
                raise UserError(error)
            out.append(hp)
        except UserError as exc:
            raise UserError(f"schedule {config.schedule!r} round {r + 1}: {exc}") from None
    return out


def _apply(hp: HParams, row: dict) -> HParams:
    """``hp`` (the config's schedule) with the table's values in force."""
    changes = {col[3:]: v for col, v in row.items() if col.startswith("hp/") and col != "hp/eps_start"}
    eps = changes.get("eps", hp.eps)
    if "hp/eps_start" in row:
        start = row["hp/eps_start"]
        changes["eps_start"] = None if start == eps else start  # the row shows eps_start = eps when constant
    elif "eps" in changes:
        changes["eps_start"] = None  # the table's eps holds for the round: no ramp of the config's inside it
    return hp.replace(**changes)


class ReplayController:
    """Round r's hyperparameters from row r of ``config.schedule`` (see the module docstring).

    The table is read and checked once, when built; ``state_dict`` records its SHA-256, so a
    resumed run refuses a schedule file that changed since the run started.
    """

    def __init__(self, config):
        self.path = config.schedule
        self.plan = check_schedule(config)
        self.digest = _file_digest(self.path)

    def propose(self, round_index: int) -> HParams:
        return self.plan[round_index]

    def observe(self, row: dict) -> None:
        pass  # a replay does not look at results

    def state_dict(self) -> dict:
        return {"schedule_sha256": self.digest}

    def load_state_dict(self, state: dict) -> None:
        stored = state.get("schedule_sha256")
        if stored is not None and stored != self.digest:
            raise UserError(f"schedule {self.path!r} changed since this run started; restore the original file to resume")


register_controller("replay", ReplayController)
