"""A named experiment: what is searched, by which scheduler, judged by which metric, how big.

Ray-free and declarative, so ``tune_experiments/`` modules stay data and ``metaadv tune --list``
does not start Ray. Everything is checked here, in the driver, before any trial starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..config import TrainConfig
from ..meta.config import MetaConfig
from ..errors import UserError
from .space import Dimension, Grid, LogRange, Range

__all__ = ["Experiment", "Size", "SCHEDULERS", "SEARCHERS", "SIZES", "REQUIRED_SIZES"]

SCHEDULERS = ("pbt", "pb2", "asha", "fifo")
SEARCHERS = ("random", "optuna", "grid")  # grid: every combination of the Grid dimensions, num_samples times
SIZES = ("tiny", "smoke", "medium", "full")
# Every named experiment has these; ``tiny`` (tests) and ``medium`` (hours on 2 CPUs) are optional.
REQUIRED_SIZES = ("smoke", "full")
# What PBT/PB2 count time in (perturbation_interval and burn_in_period are in these units): reports
# (= rounds), or the training gradient evaluations of the row, so that trials whose rounds cost
# different amounts (PGD-1 vs PGD-10) are compared at equal cost.
TIME_ATTRS = ("training_iteration", "cost/grad_evals")
# The config class each run kind is built from (see metaadv/tune/kinds.py).
CONFIG_CLASSES = {"train": TrainConfig, "meta": MetaConfig}

# Trial-config keys that are not TrainConfig keys: the run kind, and the fixed threat model.
RESERVED = ("kind", "val_eps")


@dataclass(frozen=True)
class Size:
    """One budget of an experiment: population / sample count and the per-trial training size."""

    num_samples: int
    config: dict = field(default_factory=dict)  # TrainConfig keys (dataset, rounds, ...) and val_eps
    scheduler_options: dict = field(default_factory=dict)  # merged over Experiment.scheduler_options
    max_concurrent: int | None = None  # None: as many as the cluster's resources allow


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    space: dict[str, Dimension]
    sizes: dict[str, Size]
    base: dict = field(default_factory=dict)  # fixed TrainConfig keys shared by both sizes
    scheduler: str = "fifo"
    searcher: str = "random"
    metric: str | tuple[str, ...] = "val/robust_acc"
    mode: str | tuple[str, ...] = "max"
    scheduler_options: dict = field(default_factory=dict)
    # The eps at which val/robust_acc is measured when the *training* eps is searched: a population
    # must be judged under one threat model, or a small training eps wins by measuring itself.
    threat_eps: float | None = None
    kind: str = "train"
    max_failures: int = 2  # retries of a crashed trial, each from its last checkpoint
    seed: int = 0  # the initial population's sampler and PBT/PB2's own random draws
    time_attr: str = "training_iteration"  # PBT/PB2 only: one of TIME_ATTRS

    def __post_init__(self):
        _one_of("scheduler", self.scheduler, SCHEDULERS)
        _one_of("searcher", self.searcher, SEARCHERS)
        if self.searcher == "grid" and any(not isinstance(d, Grid) for d in self.space.values()):
            raise UserError(f"{self.name}: searcher 'grid' enumerates Grid dimensions only")
        if self.scheduler in ("pbt", "pb2") and self.searcher != "random":
            raise UserError(f"{self.name}: {self.scheduler} mutates its own population; it takes no searcher")
        if self.multi_objective and (self.scheduler != "fifo" or self.searcher != "optuna"):
            raise UserError(f"{self.name}: several metrics need searcher='optuna' and scheduler='fifo'")
        if len(self.metrics) != len(self.modes) or any(m not in ("min", "max") for m in self.modes):
            raise UserError(f"{self.name}: give one mode ('min' or 'max') per metric")
        unknown = sorted(set(self.sizes) - set(SIZES))
        if unknown or not self.sizes:
            raise UserError(f"{self.name}: sizes must be among {', '.join(SIZES)}, got {', '.join(self.sizes) or 'none'}")
        for key, dim in self.space.items():
            if not isinstance(dim, (Grid, Range, LogRange)):
                raise UserError(f"{self.name}: search dimension {key!r} must be a Grid, Range or LogRange")
            if self.scheduler == "pb2" and isinstance(dim, LogRange):
                raise UserError(f"{self.name}: PB2 searches linear bounds only; give {key!r} as a Range")
        _one_of("kind", self.kind, tuple(CONFIG_CLASSES))
        _one_of("time_attr", self.time_attr, TIME_ATTRS)
        if self.time_attr != "training_iteration":
            if self.scheduler not in ("pbt", "pb2"):
                raise UserError(f"{self.name}: time_attr={self.time_attr!r} applies to PBT and PB2 only")
            for size in self.sizes:
                if "perturbation_interval" not in self.options(size):
                    raise UserError(f"{self.name}: with time_attr={self.time_attr!r}, give perturbation_interval "
                                    f"(and burn_in_period) in units of {self.time_attr} in scheduler_options")
        for size in self.sizes:
            one_dim = self.options(size).get("one_dim", False)
            if not isinstance(one_dim, bool):
                raise UserError(f"{self.name}: one_dim is true or false, got {one_dim!r}")
            if one_dim and self.scheduler != "pbt":
                raise UserError(f"{self.name}: one_dim (explore one hyperparameter at a time) is a PBT option; "
                                f"the scheduler is {self.scheduler}")
            self.check_config(size)

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

    @property
    def modes(self) -> tuple[str, ...]:
        return (self.mode,) if isinstance(self.mode, str) else tuple(self.mode)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def fixed_config(self, size: str) -> dict:
        """The trial config's constant part: kind, fixed TrainConfig keys, the threat model."""
        values = {"kind": self.kind, **self.base, **self.sizes[size].config}
        for key in ("data_dir", "schedule"):  # Tune runs trials in their own folder: paths made absolute
            if values.get(key) and "://" not in values[key]:
                values[key] = os.path.abspath(values[key])
        if self.threat_eps is not None:
            values.setdefault("val_eps", float(self.threat_eps))  # a size may set its own val_eps
        if self.kind == "train" and "lr" in self.space:
            # The search sets lr: a schedule's own step would fight PBT's mutations and hide the
            # searched value from hp/lr. A base may still ask for one.
            values.setdefault("lr_schedule", "constant")
        return values

    def options(self, size: str) -> dict:
        return {**self.scheduler_options, **self.sizes[size].scheduler_options}

    def rounds(self, size: str) -> int:
        return int(self.fixed_config(size).get("rounds", TrainConfig.rounds))

    def check_config(self, size: str) -> None:
        """Build the run's config at each grid/range corner so typos fail before Ray starts."""
        values = {k: v for k, v in self.fixed_config(size).items() if k not in RESERVED}
        for corner in (0, 1):
            sample = {k: (d.values[-corner] if isinstance(d, Grid) else d.bounds[corner]) for k, d in self.space.items()}
            try:
                CONFIG_CLASSES[self.kind].from_dict({**values, **sample})
            except UserError as exc:
                raise UserError(f"experiment {self.name} ({size}): {exc}") from None

    def replace(self, **changes) -> "Experiment":
        return dataclasses.replace(self, **changes)


def _one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
