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

__all__ = ["run_in_folder"]


def run_in_folder(config, out_dir: str | Path, *, resume: bool, run_cls, read_state: Callable[[Path], dict],
                  on_row: Callable | None = None):
    """Build ``run_cls(config)`` (or restore it from the folder's checkpoint) and step it to the end.

    ``run_cls`` has ``done``, ``step() -> row``, ``rows``, ``save(path)`` and ``load_state_dict``;
    ``config`` has ``to_dict`` and ``from_dict``; ``read_state(path)`` reads the checkpoint.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder for the run")
    if resume:
        state = read_state(ckpt_path)
        stored = type(config).from_dict(state["config"])
        if stored.to_dict() != config.to_dict():
            changed = sorted(k for k, v in config.to_dict().items() if stored.to_dict()[k] != v)
            raise UserError(f"--resume continues the stored run; these settings differ from it: {', '.join(changed)}")
        run = run_cls(stored)
        run.load_state_dict(state)
    else:
        if ckpt_path.exists() or (out / METRICS_NAME).exists():
            raise UserError(f"{str(out)!r} already holds a run; add --resume to continue it or choose another --out")
        run = run_cls(config)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the run folder {str(out)!r}: {exc.strerror or exc}") from None
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    while not run.done:
        row = run.step()
        run.save(ckpt_path)
        write_metrics_csv(run.rows, out / METRICS_NAME)
        if on_row:
            on_row(row, run)
    return run
