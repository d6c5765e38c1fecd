"""A declarative search space, free of Ray, translated to Ray Tune's objects per scheduler.

Experiments in ``tune_experiments/`` say *what* is searched; :mod:`metaadv.tune.schedulers`
says how each scheduler wants it: PBT mutates a ``Grid`` to a neighbouring value and perturbs a
range continuously, PB2 needs numeric ``[low, high]`` bounds (a grid is searched on its hull and
snapped back to the grid), Optuna and random search sample the initial values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Grid", "Range", "LogRange", "Dimension", "snap_to_grids", "fit_to_space", "explore_one_dimension"]


@dataclass(frozen=True)
class Grid:
    """A categorical choice among ordered values (PBT moves to a neighbour)."""

    values: tuple

    def __init__(self, *values):
        if len(values) == 1 and isinstance(values[0], (list, tuple)):
            values = tuple(values[0])
        if len(values) < 2:
            raise ValueError(f"a Grid needs at least two values, got {values!r}")
        object.__setattr__(self, "values", tuple(values))

    @property
    def bounds(self) -> tuple[float, float]:
        return float(min(self.values)), float(max(self.values))

    def snap(self, value: float):
        """The grid value nearest to ``value`` (PB2 proposes points between grid values)."""
        return min(self.values, key=lambda v: abs(float(v) - float(value)))


@dataclass(frozen=True)
class Range:
    """A continuous interval, sampled uniformly."""

    low: float
    high: float

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got [{self.low}, {self.high}]")

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.low), float(self.high)


@dataclass(frozen=True)
class LogRange(Range):
    """A continuous interval of positive values, sampled log-uniformly (learning rates, decays)."""

    def __post_init__(self):
        super().__post_init__()
        if self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")


Dimension = Grid | Range | LogRange


def snap_to_grids(config: dict, grids: dict[str, Grid]) -> dict:
    """Put every gridded key of ``config`` back on its grid (PB2's ``custom_explore_fn``)."""
    out = dict(config)
    for key, grid in grids.items():
        if key in out:
            out[key] = grid.snap(out[key])
    return out


def fit_to_space(config: dict, space: dict[str, Dimension]) -> dict:
    """Put every searched key of ``config`` back inside its declared dimension: a range's value is
    clipped to ``[low, high]``, a grid's snapped to the nearest grid value.

    PBT's ``custom_explore_fn``: PBT multiplies a continuous value by 0.8 or 1.2 without looking
    at the bounds (so ``lr`` drifts out of its LogRange after a few exploits), and PB2 proposes
    points between grid values.
    """
    out = dict(config)
    for key, dim in space.items():
        if key not in out:
            continue
        if isinstance(dim, Grid):
            out[key] = dim.snap(out[key])
        else:
            out[key] = min(max(float(out[key]), dim.low), dim.high)
    return out


def explore_one_dimension(config: dict, space: dict[str, Dimension], rng, *, resample_probability: float,
                          perturbation_factors: tuple[float, ...] = (1.2, 0.8)) -> tuple[dict, dict]:
    """PBT's explore step moving one hyperparameter: ``(new config, {key: operation})``.

    One key of ``space``, drawn uniformly, changes; every other key keeps the donor's value, so
    an exploit's effect can be read off the one change (Ray's explore perturbs every key at once:
    with five keys that is close to a fresh random draw). With ``resample_probability`` the key is
    resampled (a grid among its other values; a range uniformly, log-uniformly for a LogRange),
    else a grid moves to a neighbouring value (inwards at an end) and a range is multiplied by one
    of ``perturbation_factors``, clipped to its bounds, trying the other factors if that lands on
    the same value. ``rng`` is a ``random.Random`` (or the ``random`` module): the caller decides
    whose stream the draws come from.
    """
    key = rng.choice(sorted(space))
    dim, old = space[key], config[key]
    new_config = dict(config)
    if isinstance(dim, Grid):
        values = list(dim.values)
        if old not in values or rng.random() < resample_probability:
            new, op = rng.choice([v for v in values if v != old]), "resample"
        else:
            i = values.index(old)
            step = rng.choice([-1, 1]) if 0 < i < len(values) - 1 else (1 if i == 0 else -1)
            new, op = values[i + step], f"shift {'left' if step < 0 else 'right'}"
    else:
        new, op = None, "resample"
        if rng.random() >= resample_probability:
            factors = list(perturbation_factors)
            rng.shuffle(factors)
            for factor in factors:
                moved = min(max(float(old) * factor, dim.low), dim.high)
                if moved != old:
                    new, op = moved, f"* {factor}"
                    break
        if new is None:
            if isinstance(dim, LogRange):
                new = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
            else:
                new = rng.uniform(dim.low, dim.high)
    new_config[key] = new
    return new_config, {key: op}
