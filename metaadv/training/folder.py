"""A run folder driven to completion: the loop ``metaadv train`` and ``metaadv meta`` share.

The folder gets ``config.json``, ``metrics.csv`` and ``checkpoint.pt``, rewritten every round.
Everything that can be wrong with the input is checked before the folder is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..checkpoint import CHECKPOINT_NAME
from ..errors import UserError
from .metrics import METRICS_NAME, write_metrics_csv

__all__ = ["check_fresh_folder", "check_out_folder", "run_in_folder", "save_round", "start_folder", "stored_config"]


def run_in_folder(config, out_dir: str | Path, *, resume: bool, run_cls, read_state: Callable[[Path], dict],
                  on_row: Callable | None = None):
    """Build ``run_cls(config)`` (or restore it from the folder's checkpoint) and step it to the end.

    ``run_cls`` has ``done``, ``step() -> row``, ``rows``, ``save(path)`` and ``load_state_dict``;
    ``config`` has ``to_dict`` and ``from_dict``; ``read_state(path)`` reads the checkpoint.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    check_out_folder(out)
    if resume:
        state = read_state(ckpt_path)
        run = run_cls(stored_config(config, state))
        run.load_state_dict(state)
    else:
        check_fresh_folder(out)
        run = run_cls(config)
        start_folder(out, config)
    while not run.done:
        row = run.step()
        save_round(run, out)
        if on_row:
            on_row(row, run)
    return run


def check_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder for the run")


def check_fresh_folder(out: Path, also: tuple[str, ...] = ()) -> None:
    """Refuse to start a new run where one is stored (``also``: more names that mark one)."""
    if any((out / name).exists() for name in (CHECKPOINT_NAME, METRICS_NAME, *also)):
        raise UserError(f"{str(out)!r} already holds a run; add --resume to continue it or choose another --out")


def stored_config(config, state: dict):
    """The checkpoint's config, after refusing a ``config`` that differs from it."""
    stored = type(config).from_dict(state["config"])
    if stored.to_dict() != config.to_dict():
        changed = sorted(k for k, v in config.to_dict().items() if stored.to_dict()[k] != v)
        raise UserError(f"--resume continues the stored run; these settings differ from it: {', '.join(changed)}")
    return stored


def start_folder(out: Path, config) -> None:
    """Create the run folder and write ``config.json``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {str(out)!r}: {exc.strerror or exc}") from None
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def save_round(run, out: Path) -> None:
    """The files a finished round leaves in the folder: the checkpoint, then the rows."""
    run.save(out / CHECKPOINT_NAME)
    write_metrics_csv(run.rows, out / METRICS_NAME)
