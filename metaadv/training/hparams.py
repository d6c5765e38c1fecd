"""The hyperparameters in force for one round, chosen by a controller.

These are exactly the knobs a schedule, the REINFORCE policy or Ray Tune PBT may change between
rounds. Everything else about a run is static and lives in :class:`metaadv.config.TrainConfig`.
Each field appears in every metrics row as ``hp/<field>`` (plus the derived ``hp/step_size``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UserError

__all__ = ["HParams", "HPARAM_NAMES"]


@dataclass(frozen=True)
class HParams:
    eps: float = 0.3  # attack radius in pixel units of [0, 1] images; its upper bound depends on the norm (TrainConfig checks it)
    step_ratio: float = 0.25  # attack step size as a multiple of eps
    steps: int = 10  # attack iterations (PGD steps, TRADES steps, VAT power iterations)
    lr: float = 1e-3
    weight_decay: float = 0.0
    trades_beta: float = 6.0  # TRADES robustness weight
    adv_mix: float = 1.0  # weight of the adversarial loss; (1 - adv_mix) goes on the clean loss
    # When set, eps rises linearly from eps_start to eps over the round's steps (a smooth ramp);
    # None keeps eps constant through the round. Shown as hp/eps_start (= eps when None).
    eps_start: float | None = None
    # Perturbation generators (meta-generator, advgan, meta-adv); other methods ignore these.
    gen_lr: float = 1e-3  # Adam step of the generator
    gen_steps: int = 1  # generator updates per classifier update
    gen_fraction: float = 1.0  # fraction of each batch attacked by the generator; the rest by PGD
    gen_unroll: int = 3  # K, steps of the recursive generator (--gen-arch recursive), each reading a fresh gradient
    gen_step_ratio: float = 0.5  # the recursive generator's largest move per step, as a multiple of eps
    gen_final_steps: int = 1  # signed-gradient steps after the generator (0 = train on its output as it is)
    gen_final_ratio: float = 0.5  # their step size, as a multiple of eps

    def __post_init__(self):
        # Only the lower bound here: the upper one is 1 for L-inf but sqrt(C*H*W) for L2, which
        # needs the norm and the data set (TrainConfig._check_eps); the schedules only scale eps down.
        if not 0.0 <= self.eps < float("inf"):
            raise UserError(f"eps must be >= 0 (pixel units: 0.3, or 8/255 = 0.0314), got {self.eps}")
        if self.eps_start is not None and not 0.0 <= self.eps_start < float("inf"):
            raise UserError(f"eps_start must be >= 0, got {self.eps_start}")
        if self.step_ratio <= 0:
            raise UserError(f"step_ratio must be > 0, got {self.step_ratio}")
        if int(self.steps) != self.steps or self.steps < 1:
            raise UserError(f"steps must be an integer >= 1, got {self.steps}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.trades_beta < 0:
            raise UserError(f"trades_beta must be >= 0, got {self.trades_beta}")
        if not 0.0 <= self.adv_mix <= 1.0:
            raise UserError(f"adv_mix must be in [0, 1], got {self.adv_mix}")
        if self.gen_lr <= 0:
            raise UserError(f"gen_lr must be > 0, got {self.gen_lr}")
        if int(self.gen_steps) != self.gen_steps or self.gen_steps < 1:
            raise UserError(f"gen_steps must be an integer >= 1, got {self.gen_steps}")
        if not 0.0 <= self.gen_fraction <= 1.0:
            raise UserError(f"gen_fraction must be in [0, 1], got {self.gen_fraction}")
        if int(self.gen_unroll) != self.gen_unroll or self.gen_unroll < 1:
            raise UserError(f"gen_unroll must be an integer >= 1, got {self.gen_unroll}")
        if int(self.gen_final_steps) != self.gen_final_steps or self.gen_final_steps < 0:
            raise UserError(f"gen_final_steps must be an integer >= 0 (0 = no gradient step after the generator), "
                            f"got {self.gen_final_steps}")
        for name in ("gen_step_ratio", "gen_final_ratio"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be > 0 (a multiple of eps), got {getattr(self, name)}")
        for name in ("steps", "gen_steps", "gen_unroll", "gen_final_steps"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def at_fraction(self, fraction: float) -> "HParams":
        """The values in force ``fraction`` (0..1] of the way through the round."""
        if self.eps_start is None:
            return self
        return self.replace(eps=self.eps_start + (self.eps - self.eps_start) * fraction, eps_start=None)

    @property
    def step_size(self) -> float:
        return self.step_ratio * self.eps

    def replace(self, **changes) -> "HParams":
        return dataclasses.replace(self, **changes)

    def as_row(self) -> dict[str, float]:
        row = {f"hp/{k}": v for k, v in dataclasses.asdict(self).items()}
        row["hp/eps_start"] = self.eps if self.eps_start is None else self.eps_start
        row["hp/step_size"] = self.step_size
        return row


HPARAM_NAMES = tuple(f.name for f in dataclasses.fields(HParams))
