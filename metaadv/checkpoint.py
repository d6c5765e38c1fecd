"""Checkpoint files: write atomically, read safely, refuse what does not fit.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``: no pickled code runs on load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .errors import UserError
from .models import build_model

__all__ = ["FORMAT", "VERSION", "check_kind", "save_checkpoint", "read_checkpoint", "resolve_checkpoint_path", "load_model",
           "staging_folder", "tune_folder_hint"]

FORMAT = "metaadv-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
STAGING_PREFIX = "metaadv-ckpt-"
STAGING_STALE_S = 600.0  # a dead process's staging folder is removed once it is this old


@contextmanager
def staging_folder() -> Iterator[Path]:
    """A temporary folder for the checkpoint handed to ``ray.tune.report`` / ``ray.train.report``.

    Ray stops a paused, exploited or early-stopped trial while it waits inside ``report``, so a
    plain ``TemporaryDirectory`` there is never removed: one checkpoint left behind per stopped
    trial, gigabytes over a long PBT run. The folder's name carries this process's id, and each
    new one first removes the folders of processes that are gone. The age condition keeps a
    process whose id this one cannot see (another PID namespace sharing the folder) safe.
    """
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{STAGING_PREFIX}*-*"):
        pid = old.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and _age(old) > STAGING_STALE_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def save_checkpoint(payload: dict, path: str | Path) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (or a Ray Tune checkpoint folder) holding ``checkpoint.pt``.

    A Tune trial or experiment folder holds several checkpoints, one per round: which one is meant
    is the user's choice, so the refusal names them instead of picking one."""
    p = Path(path)
    if p.is_dir():
        hint = tune_folder_hint(p)
        if hint:
            raise UserError(hint)
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise UserError(f"no checkpoint at {str(path)!r}; pass a checkpoint file or a run folder holding {CHECKPOINT_NAME}")
    return p


def _tune_checkpoints(folder: Path) -> list[Path]:
    """A Tune trial folder's ``checkpoint_00000N/`` folders holding a checkpoint, oldest first."""
    return sorted(c for c in folder.glob("checkpoint_*") if (c / CHECKPOINT_NAME).is_file())


def _names(paths: list[Path], shown: int = 4) -> str:
    names = [p.name for p in paths]
    return ", ".join(names) if len(names) <= shown else f"{', '.join(names[:2])}, ..., {names[-1]} ({len(names)})"


def tune_folder_hint(folder: Path) -> str | None:
    """What to pass instead of a Ray Tune trial or experiment folder (``None`` for any other folder)."""
    if (folder / CHECKPOINT_NAME).is_file():
        return None
    if (folder / "study.json").is_file():
        return (f"{str(folder)!r} is a study folder; its models.csv names each final model's checkpoint folder "
                "(column checkpoint, relative to the study folder): pass one of them")
    checkpoints = _tune_checkpoints(folder)
    if checkpoints:
        return (f"{str(folder)!r} is a Ray Tune trial folder holding checkpoints {_names(checkpoints)}; "
                f"pass one of them (the last is {checkpoints[-1]})")
    trials = sorted(t for t in folder.iterdir() if t.is_dir() and _tune_checkpoints(t))
    if trials:
        last = _tune_checkpoints(trials[0])[-1]
        return (f"{str(folder)!r} is a Ray Tune experiment folder of trials {_names(trials)}; pass a trial's "
                f"checkpoint folder, e.g. {last} (the first trial's last)")
    return None


# What reads each kind of checkpoint, for the message that refuses it elsewhere.
KIND_READERS = {
    "train": "metaadv evaluate, metaadv train --resume or metaadv.load_model",
    "meta": "metaadv meta-evaluate (meta-test) or metaadv meta --resume",
    "policy": "metaadv train --controller policy --policy-file",
    "policy-meta": "metaadv policy train --resume",
}
KIND_NAMES = {"train": "a training run's checkpoint (made by metaadv train)",
              "meta": "a meta-learning run's checkpoint (made by metaadv meta)",
              "policy": "a policy file (made by metaadv train --save-policy)",
              "policy-meta": "a policy training's state (made by metaadv policy train)"}


def read_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """The checkpoint dict of a file or run folder; with ``kind``, refuse a checkpoint of another kind."""
    p = resolve_checkpoint_path(path)
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; anything else would fail inside torch.load
        raise UserError(f"cannot read checkpoint {str(p)!r}: not a file written by torch.save (truncated, or another kind of file)")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or pickled objects that weights-only loading refuses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if first.startswith("Weights only load failed"):
            first = "it holds pickled Python objects, which safe (weights-only) loading refuses; not a metaadv checkpoint"
        raise UserError(f"cannot read checkpoint {str(p)!r}: {first[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{str(p)!r} is not a metaadv checkpoint")
    if payload.get("version") != VERSION:
        raise UserError(f"{str(p)!r} has checkpoint version {payload.get('version')}, this metaadv reads {VERSION}")
    if kind is not None:
        check_kind(payload, kind, repr(str(p)))
    return payload


def check_kind(payload: dict, kind: str, where: str = "the checkpoint") -> None:
    """Refuse a checkpoint of another kind with one line saying what it is and what reads it.

    Training checkpoints written before ``kind`` existed count as ``train``.
    """
    found = payload.get("kind", "train")
    if found == kind:
        return
    what = KIND_NAMES.get(found, f"a checkpoint of kind {found!r}")
    reader = KIND_READERS.get(found)
    hint = f"; read it with {reader}" if reader else ""
    raise UserError(f"{where} is {what}, not {KIND_NAMES[kind].split(' (')[0]}{hint}")


def build_checkpoint_model(payload: dict, expected_arch: str | None = None) -> torch.nn.Module:
    """The checkpoint's model with its weights, in eval mode; refuse another architecture or kind."""
    check_kind(payload, "train")
    arch = payload["arch"]
    if expected_arch is not None and arch != expected_arch:
        raise UserError(f"checkpoint holds a {arch!r} model, but {expected_arch!r} was expected")
    model = build_model(arch, **payload["model_kwargs"])
    try:
        model.load_state_dict(payload["trainer"]["model"])
    except RuntimeError as exc:
        raise UserError(f"checkpoint weights do not fit the {arch!r} architecture: {str(exc).splitlines()[0]}") from None
    return model.eval()


def load_model(checkpoint: str | Path) -> torch.nn.Module:
    """The trained classifier of a checkpoint (file or run folder), in eval mode, on the CPU.

    It takes ``(B, C, H, W)`` images in [0, 1] and returns logits (normalisation is inside), so
    any third-party attack library can evaluate it.
    """
    return build_checkpoint_model(read_checkpoint(checkpoint, kind="train"))
