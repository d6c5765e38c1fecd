"""The round loop: controller -> trainer round -> validation -> one metrics row -> checkpoint.

``TrainingRun`` is the unit the CLI drives to completion and the Ray Tune adapter drives one
round per report. ``run_training`` is the CLI's whole job: a run folder with ``config.json``,
``metrics.csv`` and ``checkpoint.pt``, resumable with ``resume=True``.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import TrainConfig
from ..data import load_splits
from ..errors import UserError
from .controllers import build_controller
from .folder import run_in_folder
from .parallel import SINGLE_PROCESS, DataParallel
from .trainer import Trainer, resolve_device

__all__ = ["TrainingRun", "run_training", "progress_line"]


class TrainingRun:
    """``device`` overrides ``config.device`` (a data-parallel worker trains on the device its
    resources give it); ``parallel`` makes this run one of several data-parallel workers
    (metaadv/training/parallel.py, metaadv/distributed): every worker builds the same run."""

    def __init__(self, config: TrainConfig, splits=None, controller=None, *, device: torch.device | None = None,
                 parallel: DataParallel = SINGLE_PROCESS):
        self.config = config
        self.device = device if device is not None else resolve_device(config.device)
        splits = splits or load_splits(config.dataset, config.data_dir or None, config.download)
        self.trainer = Trainer(config, splits, self.device, parallel)
        self.controller = controller or build_controller(config)
        self.rows: list[dict] = []
        self.seconds = 0.0
        self.stopped_reason = ""  # set when the run ends before config.rounds (e.g. catastrophic overfitting)
        self._best_robust = -1.0
        # The co_guard's state: the weights of the round with the best val/robust_acc so far (and its
        # number), what a catastrophic-overfitting stop reverts to. Kept in the checkpoint.
        self._best_weights: dict | None = None
        self._best_round = 0

    def in_tail(self) -> bool:
        """Whether the next round belongs to the threat model's tail (``tail_fraction``): it starts
        once the training cost reaches (1 - f) of the budget, or, without a budget, at round
        ceil((1 - f) * rounds)."""
        f = self.config.tail_fraction
        if f <= 0:
            return False
        budget = self.config.budget_grad_evals
        if budget > 0:
            return self.trainer.budget_spent() >= (1.0 - f) * budget
        return self.round >= math.ceil((1.0 - f) * self.config.rounds)

    def _propose(self) -> tuple:
        """The round's hyperparameters, whether the controller chose them (not in the tail), and
        the controller's per-step schedule of the round (``at_step``, or None).

        In the tail: the target eps and the configured attack (``tail_steps``, ``tail_step_ratio`` where
        set). The lr is what a schedule gives the round (a fixed or replayed schedule's, its final decay
        included, step by step where the schedule counts steps); a controller that acts on its own
        measurements (the policy: proposing is a decision it must learn from) is not asked, and the lr
        of its last round holds.
        """
        step_schedule = getattr(self.controller, "step_schedule", None)
        at_step = step_schedule(self.round) if step_schedule else None
        if not self.in_tail():
            return self.controller.propose(self.round), True, at_step
        if getattr(self.controller, "wants_reward_check", False):
            lr = self.rows[-1]["hp/lr"] if self.rows else self.config.lr
        else:
            lr = self.controller.propose(self.round).lr
        c = self.config
        attack = {k: v for k, v in (("steps", c.tail_steps), ("step_ratio", c.tail_step_ratio)) if v}
        held = c.hparams().replace(lr=lr, **attack)
        if at_step is not None:
            return held, False, lambda *step: held.replace(lr=at_step(*step).lr)
        return held, False, None

    @property
    def round(self) -> int:
        return len(self.rows)

    @property
    def done(self) -> bool:
        budget = self.config.budget_grad_evals
        over_budget = budget > 0 and self.trainer.budget_spent() >= budget
        return self.round >= self.config.rounds or bool(self.stopped_reason) or over_budget

    def step(self) -> dict:
        """Train and measure one round; return its metrics row."""
        start = time.perf_counter()
        hp, chosen, at_step = self._propose()
        # Optional: a controller that learns from its own measurement (the policy) gets it on a
        # fresh batch, before and after the round, paid for in cost/reward_grad_evals. Tail rounds
        # are not its choices: it neither measures nor learns from them.
        check = chosen and getattr(self.controller, "wants_reward_check", False)
        reward = self.trainer.reward_check(self.round, before=True) if check else {}
        guard = self.config.co_guard
        before = copy.deepcopy(self.trainer.model.state_dict()) if guard else None
        train = self.trainer.train_round(hp, at_step, chosen=chosen)
        hp = self.trainer.round_hp  # with a per-step schedule: the first step's eps to the last step's values
        val = self.trainer.validate(self.round)
        if check:
            reward.update(self.trainer.reward_check(self.round, before=False))
        extras = {}
        if guard:
            # Measured on the weights the round ended with, before the guard may revert them. Like
            # validation, every data-parallel worker measures the same examples on the same weights.
            extras["train/grad_align"] = self.trainer.grad_align(self.round)
            extras.update(self._catastrophic_overfitting_check(train, val, hp, before))
        # The slowest worker's time: the round is done when all are (and every worker's row is the same).
        self.seconds += self.trainer.parallel.max(time.perf_counter() - start)
        t = self.trainer
        row = {"round": self.round + 1, "step": t.global_step, "epoch": round(t.epoch, 6), **train, **val, **extras,
               **hp.as_row(), **reward, "cost/grad_evals": t.grad_evals, "cost/eval_grad_evals": t.eval_grad_evals,
               "cost/reward_grad_evals": t.reward_grad_evals, "cost/seconds": round(self.seconds, 3), "run/precision": t.precision}
        if self.config.tail_fraction > 0:
            row["run/tail"] = int(not chosen)
        if chosen:
            self.controller.observe(row)
            # Optional hook: controllers that learn (the policy) report on the round just observed.
            row.update(getattr(self.controller, "row_metrics", dict)())
        self.rows.append(row)
        return row

    def _catastrophic_overfitting_check(self, train: dict, val: dict, hp, before: dict) -> dict:
        """Wong et al. 2020's guard for FGSM training (``co_guard``; fast-at and the generator methods by
        default): if PGD accuracy collapses, go back to the round with the best validation PGD
        accuracy (as their early stopping does) and stop; with ``co_guard_stop=False`` revert and train on
        (the classifier alone is reverted: its optimizer and a generator keep their state), so the run
        spends the same budget as runs the guard never stopped.

        Two signs count: validation PGD accuracy falling more than ``co_threshold`` below its best,
        and, once eps is at its target, accuracy on the training examples (FGSM's, the generator's)
        exceeding validation PGD accuracy by more than ``co_gap``: a model that beats its own attack
        and nothing else, which is also how a run that never became robust shows it (no best to
        fall from).
        """
        c, robust = self.config, val["val/robust_acc"]
        reason = ""
        if self._best_robust >= 0 and robust < self._best_robust - c.co_threshold:
            reason = f"val robust accuracy fell from {self._best_robust:.3f} to {robust:.3f}"
        elif hp.eps >= c.eps and train["train/adv_acc"] - robust > c.co_gap:
            reason = (f"accuracy on its training examples {train['train/adv_acc']:.3f} exceeds val PGD accuracy "
                      f"{robust:.3f} by more than --co-gap {c.co_gap}")
        if reason:
            if self._best_weights is not None:
                self.trainer.model.load_state_dict(self._best_weights)
                where = f"round {self._best_round} (the best val/robust_acc, {self._best_robust:.3f})"
            else:  # detected in the first round: nothing better than the start
                self.trainer.model.load_state_dict(before)
                where = "their state before this round"
            if not c.co_guard_stop:  # the revert without the stop: the run goes on to its full budget
                warnings.warn(f"catastrophic overfitting: {reason}; weights reverted to {where}, training continues",
                              stacklevel=2)
                return {"train/co_detected": 1}
            self.stopped_reason = f"catastrophic overfitting: {reason}; weights reverted to {where} and training stopped"
            warnings.warn(self.stopped_reason, stacklevel=2)
            return {"train/co_detected": 1}
        if robust >= self._best_robust:  # ties go to the later round: as robust, and trained longer
            self._best_robust, self._best_round = robust, self.round + 1
            self._best_weights = copy.deepcopy(self.trainer.model.state_dict())
        return {"train/co_detected": 0}

    def state_dict(self) -> dict:
        t = self.trainer
        return {"kind": "train", "config": self.config.to_dict(), "arch": t.arch, "model_kwargs": t.model_kwargs,
                "trainer": t.state_dict(), "controller": self.controller.state_dict(), "rows": self.rows,
                "seconds": self.seconds, "stopped_reason": self.stopped_reason, "best_robust": self._best_robust,
                "best_round": self._best_round, "best_weights": self._best_weights}

    def load_state_dict(self, state: dict, restore_controller: bool = True) -> None:
        if state.get("kind") != "train":
            raise UserError(f"checkpoint is of kind {state.get('kind')!r}, not a training run")
        if state["arch"] != self.trainer.arch:
            raise UserError(f"checkpoint holds a {state['arch']!r} model but this run builds {self.trainer.arch!r}")
        try:
            self.trainer.load_state_dict(state["trainer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(f"checkpoint does not fit this run: {str(exc).splitlines()[0]}") from None
        if restore_controller:
            self.controller.load_state_dict(state["controller"])
        self.rows = [dict(r) for r in state["rows"]]
        self.seconds = float(state["seconds"])
        self.stopped_reason = state["stopped_reason"]
        self._best_robust = float(state["best_robust"])
        # Checkpoints written before the guard kept its best round have neither key: such a run
        # falls back to reverting one round, as it would have then.
        self._best_round = int(state.get("best_round", 0))
        self._best_weights = state.get("best_weights")

    def save(self, path: str | Path) -> None:
        save_checkpoint(self.state_dict(), path)


def run_training(config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
                 on_row: Callable[[dict, "TrainingRun"], None] | None = None) -> TrainingRun:
    """Train to ``config.rounds`` rounds in ``out_dir``, writing rows and a checkpoint every round.

    Everything that can be wrong with the input is checked before the folder is touched.
    """
    return run_in_folder(config, out_dir, resume=resume, run_cls=TrainingRun, on_row=on_row,
                         read_state=lambda path: read_checkpoint(path, kind="train"))


def progress_line(row: dict, rounds: int) -> str:
    """One round's metrics row as the progress line a run prints (plain, or rank 0 of ``--workers``)."""
    return (f"round {row['round']:>3}/{rounds}  loss {row['train/loss']:.4f}  adv_acc {row['train/adv_acc']:.3f}  "
            f"val clean {row['val/clean_acc']:.3f}  robust {row['val/robust_acc']:.3f}  "
            f"eps {row['hp/eps']:.3f}  lr {row['hp/lr']:.2e}  {row['cost/seconds']:.1f}s")
