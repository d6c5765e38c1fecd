"""Fixes for Ray 2.60's result files under PBT and after a killed driver.

Tune writes results in a driver staging folder and copies it to the storage path every
``sync_period``. When a trial starts, the loggers copy their file back *from storage*:

- the JSON logger does so on every start, and under PBT a trial starts again after each pause
  and each exploit: the stored copy is older than the local one, so the rows reported since the
  last copy vanished from result.json (seen here: 3 of 10 rows left);
- the copy to storage is not atomic, so a driver killed while copying leaves a half-written last
  line, which the resumed run would append after.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

__all__ = ["SessionJsonLogger", "SessionCSVLogger", "LOGGERS"]


def drop_partial_last_line(path: Path) -> None:
    """Cut a file back to its last complete line (a copy interrupted mid-line)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


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
        drop_partial_last_line(Path(trial.local_path, file_name))


class SessionJsonLogger(_RestoreOncePerSession, JsonLoggerCallback):
    pass


class SessionCSVLogger(_RestoreOncePerSession, CSVLoggerCallback):
    pass


def LOGGERS() -> list:
    """Fresh instances for RunConfig(callbacks=...); Tune then adds no JSON/CSV logger of its own."""
    return [SessionJsonLogger(), SessionCSVLogger()]
