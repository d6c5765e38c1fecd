"""Fixes for Ray 2.60's result files under PBT and after a killed driver.

Tune writes results in a driver staging folder and copies it to the storage path every
``sync_period``. When a trial starts, the loggers copy their file back *from storage*:

- the JSON logger does so on every start, and under PBT a trial starts again after each pause
  and each exploit: the stored copy is older than the local one, so the rows reported since the
  last copy vanished from result.json (seen here: 3 of 10 rows left);
- the copy to storage is not atomic, so a driver killed while copying leaves a half-written last
  line, which the resumed run would append after;
- a driver killed between a report and the snapshot that records its checkpoint resumes the trial
  from the previous checkpoint, and the round in between would be logged twice: rows after the
  restored checkpoint's round are dropped when the resumed session first restores the file;
- a driver killed while it copies a trial's file leaves the stored copy empty or older than the
  snapshot (the snapshot may be copied first): the resumed trial continues after its checkpoint's
  round and the rounds in between would be missing (seen in CI: a trial resumed at round 5 logged
  rounds 5-6 only). The checkpoint carries every row it holds, so they are written back, marked
  ``restored_from_checkpoint`` (Tune's own columns, such as pid and timings, are not in them);
- PBT appends its lineage (``pbt_global.txt``, ``pbt_policy_<trial>.txt``) to files in the driver's
  staging folder, which the periodic copy uploads over the stored ones. ``Tuner.restore`` copies
  back only ``*.json`` and ``*.pkl`` (``_ExperimentCheckpointManager.sync_down_experiment_state``),
  so after ``--resume`` PBT started new, empty files and the first upload replaced the lineage
  written before the interruption. :class:`KeepLineageFiles` copies them back first.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

__all__ = ["SessionJsonLogger", "SessionCSVLogger", "LOGGERS", "KeepLineageFiles", "restore_lineage_files"]

LINEAGE_GLOBS = ("pbt_global.txt", "pbt_policy_*.txt")


def drop_partial_last_line(path: Path) -> None:
    """Cut a file back to its last complete line (a copy interrupted mid-line)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def checkpoint_rows(trial) -> list[dict]:
    """The rows held by the trial's latest checkpoint, round 1 first (none without one: the trial
    starts afresh). Under PBT they are the lineage: the donor's rows up to an exploit, then its own."""
    from ..checkpoint import CHECKPOINT_NAME, read_checkpoint

    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as folder:
        return list(read_checkpoint(Path(folder) / CHECKPOINT_NAME)["rows"])


def drop_rows_after(path: Path, last_round: int) -> None:
    """Drop the trailing rows of ``path`` (result.json or progress.csv) past ``last_round``.

    Only trailing rows: under PBT a trial's history is not monotonic (an exploit continues from the
    donor's round), and the rows before the restored checkpoint are its real history.
    """
    if not path.is_file():
        return
    text = path.read_text()
    if path.suffix == ".json":
        lines = [line for line in text.splitlines() if line.strip()]
        while lines and json.loads(lines[-1]).get("round", 0) > last_round:
            lines.pop()
        path.write_text("".join(line + "\n" for line in lines))
        return
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "round" not in rows[0]:
        return
    col = rows[0].index("round")
    out = io.StringIO()
    body = [r for r in rows[1:] if r]
    while body and float(body[-1][col]) > last_round:
        body.pop()
    csv.writer(out, lineterminator="\n").writerows([rows[0]] + body)
    path.write_text(out.getvalue())


def _last_round(path: Path) -> int:
    """The round of the last row of result.json or progress.csv (0 when it has none)."""
    if not path.is_file():
        return 0
    if path.suffix == ".json":
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        return int(json.loads(lines[-1]).get("round", 0)) if lines else 0
    rows = [r for r in csv.DictReader(io.StringIO(path.read_text())) if r.get("round")]
    return int(float(rows[-1]["round"])) if rows else 0


def fill_rows_from(path: Path, rows: list[dict], extra: dict) -> int:
    """Append the ``rows`` (a checkpoint's, round 1 first) past the last round the file holds, each
    with ``extra`` and ``restored_from_checkpoint``; return how many. A progress.csv without its
    header is left alone: its columns are Tune's to choose, and result.json is the file read first."""
    missing = rows[_last_round(path):]
    if not missing:
        return 0
    restored = [{**row, **extra, "restored_from_checkpoint": True} for row in missing]
    if path.suffix == ".json":
        with path.open("a") as f:
            f.writelines(json.dumps(row, default=str) + "\n" for row in restored)
        return len(restored)
    header = next(csv.reader(io.StringIO(path.read_text())), None) if path.is_file() else None
    if not header:
        return 0
    out = io.StringIO()
    csv.DictWriter(out, header, restval="", extrasaction="ignore", lineterminator="\n").writerows(restored)
    with path.open("a") as f:
        f.write(out.getvalue())
    return len(restored)


class _RestoreOncePerSession:
    """Copy a trial's file back from storage only on its first start in this driver session (a
    resumed experiment); afterwards the local file is the newest and is appended to."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        seen = self.__dict__.setdefault("_restored", set())
        key = (trial.trial_id, file_name)
        if key in seen:
            return
        seen.add(key)
        super()._restore_from_remote(file_name, trial)
        path = Path(trial.local_path, file_name)
        rows = checkpoint_rows(trial)
        drop_partial_last_line(path)
        drop_rows_after(path, len(rows))
        fill_rows_from(path, rows, {"trial_id": trial.trial_id, "config": trial.config})


class SessionJsonLogger(_RestoreOncePerSession, JsonLoggerCallback):
    pass


class SessionCSVLogger(_RestoreOncePerSession, CSVLoggerCallback):
    pass


def restore_lineage_files(fs, fs_path: str, local: str) -> list[str]:
    """Copy the PBT lineage files stored at ``fs_path`` (a pyarrow filesystem's path) into the local
    staging folder ``local``, ahead of anything this session already wrote there; return their names.

    Restored trials keep the staging folder name of the session that started them, inside the
    current Ray session's folder: after a driver that started its own Ray was killed, it is new and
    empty; when the driver joined a cluster that outlived it, the folder is still there, with every
    line the killed driver wrote, and is left as it is."""
    import fnmatch

    import pyarrow.fs

    copied = []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(fs_path, allow_not_found=True)):
        if info.type != pyarrow.fs.FileType.File or not any(fnmatch.fnmatch(info.base_name, g) for g in LINEAGE_GLOBS):
            continue
        with fs.open_input_stream(info.path) as f:
            stored = f.read()
        if stored and not stored.endswith(b"\n"):  # a copy interrupted mid-line
            stored = stored[: stored.rfind(b"\n") + 1]
        target = Path(local, info.base_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = target.read_bytes() if target.is_file() else b""
        if written.startswith(stored):
            continue  # the staging folder survived (same Ray session): it already holds all of it
        target.write_bytes(stored + written)
        copied.append(info.base_name)
    return copied


class KeepLineageFiles(Callback):
    """On a driver session's first step (before any result, so before any exploit), copy the PBT
    lineage files back from storage into the new staging folder, where PBT appends to them."""

    def on_step_begin(self, iteration, trials, **info):
        if not trials:
            return
        storage = trials[0].storage
        staging = storage.experiment_driver_staging_path
        if self.__dict__.get("_restored_into") == staging:  # once per session (each has its own staging folder)
            return
        self._restored_into = staging
        restore_lineage_files(storage.storage_filesystem, storage.experiment_fs_path, staging)


def LOGGERS() -> list:
    """Fresh instances for RunConfig(callbacks=...); Tune then adds no JSON/CSV logger of its own."""
    return [SessionJsonLogger(), SessionCSVLogger()]
