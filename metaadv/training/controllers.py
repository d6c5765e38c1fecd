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

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ScheduleController:
    """Fixed schedules: eps ramps linearly to its target over the first ``eps_ramp_rounds`` rounds
    (round r ends at ``eps * (r + 1) / R``; with ``eps_ramp_by="step"`` it rises smoothly from
    ``eps * r / R`` within the round, else it holds that value for the round), and lr is constant,
    stepped at ``lr_milestones`` (fractions of the run, times ``lr_gamma``) or cosine-annealed.
    """

    def __init__(self, config):
        self.target = config.hparams()
        self.rounds = config.rounds
        self.eps_ramp_rounds = config.eps_ramp_rounds
        self.smooth_ramp = config.eps_ramp_by == "step"
        self.lr_schedule = config.lr_schedule
        self.lr_milestones = config.lr_milestones
        self.lr_gamma = config.lr_gamma

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
