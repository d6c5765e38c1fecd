"""A declarative search space, free of Ray, translated to Ray Tune's objects per scheduler.

Experiments in ``tune_experiments/`` say *what* is searched; :mod:`metaadv.tune.schedulers`
says how each scheduler wants it: PBT mutates a ``Grid`` to a neighbouring value and perturbs a
range continuously, PB2 needs numeric ``[low, high]`` bounds (a grid is searched on its hull and
snapped back to the grid), Optuna and random search sample the initial values.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Grid", "Range", "LogRange", "Dimension", "snap_to_grids", "fit_to_space"]


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
