"""The meta-learning round loop: learner round -> meta-validation -> one metrics row -> checkpoint.

``MetaRun`` is the unit a CLI or a Ray Tune trainable drives one round at a time (``step(hp)``
takes the round's hyperparameters, so a controller or PBT may change them); ``run_meta`` is the
CLI's whole job: a run folder with ``config.json``, ``metrics.csv`` and ``checkpoint.pt``
(``"kind": "meta"``), resumable with ``resume=True``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import read_checkpoint, save_checkpoint
from ..errors import UserError
from ..training.folder import run_in_folder
from ..training.parallel import SINGLE_PROCESS, DataParallel
from ..training.trainer import resolve_device
from .config import MetaConfig, MetaHParams
from .data import MetaData, load_meta_data
from .learner import MetaLearner

__all__ = ["MetaRun", "run_meta", "progress_line"]


class MetaRun:
    """``device`` overrides ``config.device``; ``parallel`` shards each meta-batch's tasks over
    data-parallel workers (see :class:`~metaadv.meta.learner.MetaLearner`)."""

    def __init__(self, config: MetaConfig, data: MetaData | None = None, *, device: torch.device | None = None,
                 parallel: DataParallel = SINGLE_PROCESS):
        self.config = config
        self.device = device if device is not None else resolve_device(config.device)
        # Every split, so that the meta-test pool is checked against the task shape up front (Omniglot's
        # Vinyals split draws meta-train characters from both of its folders, so they are read anyway).
        data = data or load_meta_data(config.dataset, config.data_dir or None, config.download)
        self.learner = MetaLearner(config, data, self.device, parallel)
        self.rows: list[dict] = []
        self.seconds = 0.0

    @property
    def round(self) -> int:
        return len(self.rows)

    @property
    def done(self) -> bool:
        return self.round >= self.config.rounds or self.learner.over_budget

    def step(self, hp: MetaHParams | None = None) -> dict:
        """Meta-train and meta-validate one round; return its metrics row."""
        hp = hp or self.config.hparams()
        start = time.perf_counter()
        learner = self.learner
        train = learner.train_round(hp)
        val = learner.validate(hp)
        self.seconds += learner.parallel.max(time.perf_counter() - start)  # the slowest worker's
        c = self.config
        row = {"round": self.round + 1, "step": learner.global_step, "tasks": learner.global_step * c.meta_batch,
               **train, **val, **hp.as_row(), "hp/meta_batch": c.meta_batch,
               "cost/grad_evals": learner.grad_evals, "cost/eval_grad_evals": learner.eval_grad_evals,
               "cost/seconds": round(self.seconds, 3), "run/precision": learner.precision}
        self.rows.append(row)
        return row

    def state_dict(self) -> dict:
        learner = self.learner
        return {"kind": "meta", "config": self.config.to_dict(), "arch": learner.arch,
                "model_kwargs": learner.model_kwargs, "learner": learner.state_dict(), "rows": self.rows,
                "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "meta":
            raise UserError(f"checkpoint is of kind {state.get('kind')!r}, not a meta-learning run")
        if state["arch"] != self.learner.arch:
            raise UserError(f"checkpoint holds a {state['arch']!r} model but this run builds {self.learner.arch!r}")
        try:
            self.learner.load_state_dict(state["learner"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(f"checkpoint does not fit this run: {str(exc).splitlines()[0]}") from None
        self.rows = [dict(r) for r in state["rows"]]
        self.seconds = float(state["seconds"])

    def save(self, path: str | Path) -> None:
        save_checkpoint(self.state_dict(), path)


def read_meta_checkpoint(path: str | Path) -> dict:
    """A checkpoint file (or run folder) of ``kind: meta``; anything else is a :class:`UserError`."""
    return read_checkpoint(path, kind="meta")  # another kind: one line saying what it is and what reads it


def run_meta(config: MetaConfig, out_dir: str | Path, *, resume: bool = False,
             on_row: Callable[[dict, MetaRun], None] | None = None) -> MetaRun:
    """Meta-train to ``config.rounds`` rounds in ``out_dir``, writing rows and a checkpoint every round.

    Everything that can be wrong with the input (config, data, class and image counts, an
    existing run) is checked before the folder is touched.
    """
    return run_in_folder(config, out_dir, resume=resume, run_cls=MetaRun, read_state=read_meta_checkpoint, on_row=on_row)


def progress_line(row: dict, rounds: int) -> str:
    """One round's metrics row as the progress line a run prints (plain, or rank 0 of ``--workers``)."""
    return (f"round {row['round']:>3}/{rounds}  loss {row['train/loss']:.4f}  acc {row['train/acc']:.3f}  "
            f"val clean {row['val/clean_acc']:.3f}  robust {row['val/robust_acc']:.3f}  "
            f"grad_evals {row['cost/grad_evals']}  {row['cost/seconds']:.1f}s")
