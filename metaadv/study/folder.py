"""The study folder: options, study.json, progress.json, models.csv (the layout is in
docs/study.md and /work/wt/STUDY_CONTRACT.md)."""

from __future__ import annotations

import csv
import datetime
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .spec import Study

__all__ = ["StudyOptions", "study_folder", "Folder", "write_json", "start_folder", "write_models", "MODELS_COLUMNS"]

# ``pair``: the unit a paired contrast matches models on: the seed, or for a searched arm's model its
# population (p + 1, the seed its replay and the arms at its cost (b) train on).
MODELS_COLUMNS = ("arm", "model", "seed", "pair", "experiment", "trial", "checkpoint", "eval", "judge")


@dataclass(frozen=True)
class StudyOptions:
    size: str
    out: str | None = None  # the study folder; default studies/<name>-<size>
    storage: str | None = None  # Tune's storage root (a folder or URI); default the study folder
    address: str | None = None
    resume: bool = False
    cpus_per_trial: float | None = None  # default: the size's
    verbose: int = 0  # Tune's own table (0: only the study's progress lines)
    workers: object = None  # a metaadv.distributed.WorkerSpec: every arm's trials train with Ray Train workers
    keep_checkpoints: bool = False  # keep every round's checkpoint of finished experiments (default: each trial's last)
    loggers: tuple = ()  # Ray Tune's logger callbacks (metaadv/tune/loggers.py) for every experiment started
    reuse: tuple = ()  # donor study folders whose finished runs with identical configs are copied, not rerun
    log: object = field(default=print, repr=False)


def study_folder(study: Study, opts: StudyOptions) -> Path:
    return Path(opts.out or os.path.join("studies", f"{study.name}-{opts.size}")).expanduser().resolve()


class Folder:
    def __init__(self, root: Path, storage: str):
        self.root, self.storage = root, storage
        self.progress_path = root / "progress.json"
        self.state = json.loads(self.progress_path.read_text()) if self.progress_path.is_file() else {"experiments": {}}

    def experiment_root(self, arm: str) -> str:
        return f"{self.storage.rstrip('/')}/arms/{arm}" if "://" in self.storage else os.path.join(self.storage, "arms", arm)

    def finished(self, arm: str, experiment: str) -> list[dict] | None:
        return self.state["experiments"].get(f"{arm}/{experiment}")

    def record(self, arm: str, experiment: str, trials: list[dict]) -> None:
        self.state["experiments"][f"{arm}/{experiment}"] = trials
        write_json(self.progress_path, self.state)

    def rel(self, path: str | None) -> str:
        if not path:
            return ""
        if "://" in path:
            return path
        try:
            return os.path.relpath(path, self.root)
        except ValueError:
            return path


def write_json(path: Path, data) -> None:
    """Through a temporary file and a rename: never half a file on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def commit_of_code() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_folder(study: Study, opts: StudyOptions, root: Path, storage: str, notes: dict) -> dict:
    meta_path = root / "study.json"
    if meta_path.is_file():
        if not opts.resume:
            raise UserError(f"{root} already holds a study; add --resume to continue it or pass another --out")
        meta = json.loads(meta_path.read_text())
        if (meta.get("study"), meta.get("size")) != (study.name, opts.size):
            raise UserError(f"{root} holds study {meta.get('study')} ({meta.get('size')}), not {study.name} ({opts.size})")
        if meta.get("pilot", {}) != dict(study.pilot_of):
            said = meta.get("pilot")
            raise UserError(f"{root} holds " + (f"a pilot of arms {','.join(said['arms'])} on {said['seeds']} seeds"
                                                if said else "the whole study")
                            + "; resume it with the same --arms and --seeds")
        return meta
    if opts.resume:
        raise UserError(f"nothing to resume at {root}; run without --resume first (or give its --out)")
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} exists and is not a study folder; pass another --out")
    meta = {**study.declaration(opts.size), "commit": commit_of_code(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "storage": storage if "://" in storage else os.path.relpath(storage, root), **notes, "status": "running"}
    meta["evaluation"] = {**meta["evaluation"], "eps": study.val_eps(opts.size)}
    write_json(meta_path, meta)
    return meta


def write_models(root: Path, models: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MODELS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(models)
    os.replace(tmp, root / "models.csv")
