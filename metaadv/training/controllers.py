"""Controllers choose the hyperparameters in force for each round.

The round loop asks ``controller.propose(round_index)`` before a round and hands it the finished
metrics row with ``controller.observe(row)`` after. A fixed schedule ignores the rows; the
REINFORCE policy reads them as state and reward; Ray Tune PBT builds a fresh controller from the
(mutated) trial config. Controllers with learnable state checkpoint it via ``state_dict``.
"""

from __future__ import annotations

import math
from typing import Protocol

from ..errors import UserError
from .hparams import HParams

__all__ = ["CONTROLLERS", "Controller", "ScheduleController", "build_controller", "register_controller"]


class Controller(Protocol):
    def propose(self, round_index: int) -> HParams:
        """Hyperparameters for round ``round_index`` (0-based)."""

    def observe(self, row: dict) -> None:
        """The metrics row of the round just trained with the proposed hyperparameters."""

    # Optional: ``row_metrics() -> dict``, extra columns merged into that same row right after
    # ``observe`` (the policy's ``policy/reward`` of the round's choice, known only from its row).
    # Optional: ``step_schedule(round_index) -> at_step(spent, step, steps) -> HParams | None``,
    # the hyperparameters of each optimizer step (the fixed schedule counted in budget fractions).

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ScheduleController:
    """Fixed schedules, counted in the share of the run done: the training cost spent over
    ``budget_grad_evals`` when the run has a budget, else the rounds done over ``rounds``.

    eps rises linearly from 0 to its target over the first ``eps_ramp_fraction`` of the run and
    holds; lr is constant, stepped by ``lr_gamma`` at each of ``lr_milestones`` (fractions of the
    run) or cosine-annealed. Both are set per optimizer step (:meth:`step_schedule`) from the cost
    spent before the step, so a run whose rounds are long still ramps over exactly that share of its
    budget, and its lr drops at the step that crosses the milestone. The share is a pure function of
    the checkpointed cost (or round and step), so a resumed run follows the uninterrupted one.

    ``eps_ramp_rounds >= 0`` keeps the schedule of old configs and checkpoints, counted in rounds:
    eps ramps over that many rounds (round r ends at ``eps * (r + 1) / R``; with
    ``eps_ramp_by="step"`` it rises smoothly from ``eps * r / R`` within the round, else it holds
    that value for the round), and lr changes at round boundaries (milestones as fractions of the
    rounds, whatever the budget).
    """

    def __init__(self, config):
        self.target = config.hparams()
        self.rounds = config.rounds
        self.budget = config.budget_grad_evals
        self.by_rounds = config.eps_ramp_rounds >= 0  # the old, round-counted schedule
        self.eps_ramp_rounds = config.eps_ramp_rounds
        self.eps_ramp_fraction = config.eps_ramp_fraction
        self.smooth_ramp = config.eps_ramp_by == "step"
        self.lr_schedule = config.lr_schedule
        self.lr_milestones = config.lr_milestones
        self.lr_gamma = config.lr_gamma

    # --- the schedule counted in budget (or round) fractions ------------------------------------

    def progress(self, round_index: int, spent: int, step: int, steps: int) -> float:
        """The share of the run done when step ``step`` (0-based) of the ``steps`` of round
        ``round_index`` starts: the training cost ``spent`` before it over the budget, or without
        one the rounds done over the rounds. Integer ratios, so a milestone of 0.8 is crossed
        exactly at 80%."""
        if self.budget:
            return spent / self.budget
        return (round_index * steps + step) / (steps * self.rounds)

    def at_progress(self, progress: float) -> HParams:
        """The hyperparameters in force once ``progress`` (0..1) of the run is done."""
        f = self.eps_ramp_fraction
        eps = self.target.eps * min(1.0, progress / f) if f > 0 else self.target.eps
        return self.target.replace(eps=eps, lr=self._lr(progress))

    def _lr(self, progress: float) -> float:
        lr = self.target.lr
        if self.lr_schedule == "step":
            return lr * self.lr_gamma ** sum(progress >= m for m in self.lr_milestones)
        if self.lr_schedule == "cosine":
            return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return lr

    def step_schedule(self, round_index: int):
        """``at_step(spent, step, steps) -> HParams`` for each optimizer step of round
        ``round_index`` (``spent``: the training cost before the step), or None for the
        round-counted schedule (one HParams a round, :meth:`propose`)."""
        if self.by_rounds:
            return None
        return lambda spent, step, steps: self.at_progress(self.progress(round_index, spent, step, steps))

    # --- one HParams a round --------------------------------------------------------------------

    def eps_at(self, r: int) -> float:
        if self.eps_ramp_rounds <= 0:
            return self.target.eps
        return self.target.eps * min(1.0, (r + 1) / self.eps_ramp_rounds)

    def lr_at(self, r: int) -> float:
        lr = self.target.lr
        if self.lr_schedule == "step":
            passed = sum(r >= m * self.rounds for m in self.lr_milestones)
            return lr * self.lr_gamma**passed
        if self.lr_schedule == "cosine":
            return lr * 0.5 * (1.0 + math.cos(math.pi * r / self.rounds))
        return lr

    def propose(self, round_index: int) -> HParams:
        """Round ``round_index``'s hyperparameters. Counted in fractions, the values at the round's
        start as a share of the rounds (what a caller without the cost sees: the policy's and the
        replay's base); the round loop applies :meth:`step_schedule` on top, step by step."""
        if not self.by_rounds:
            return self.at_progress(round_index / self.rounds)
        hp = self.target.replace(eps=self.eps_at(round_index), lr=self.lr_at(round_index))
        if self.smooth_ramp and round_index < self.eps_ramp_rounds:
            hp = hp.replace(eps_start=self.target.eps * round_index / self.eps_ramp_rounds)
        return hp

    def observe(self, row: dict) -> None:
        pass  # a fixed schedule does not look at results

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


CONTROLLERS = {"schedule": ScheduleController}


def register_controller(name: str, factory) -> None:
    """Plug in a controller: ``factory(config) -> Controller`` (the policy registers itself here)."""
    CONTROLLERS[name] = factory


def build_controller(config) -> Controller:
    try:
        factory = CONTROLLERS[config.controller]
    except KeyError:
        raise UserError(f"unknown controller {config.controller!r}; choose one of {', '.join(CONTROLLERS)}") from None
    return factory(config)
