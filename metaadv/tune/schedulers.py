"""Ray's own schedulers and searchers, built from an :class:`Experiment`.

- ``pbt``: PopulationBasedTraining; a Grid mutates to a neighbouring value, a range is perturbed
  (x0.8 / x1.2) or resampled.
- ``pb2``: PB2 (a GP bandit picks the new values); it knows only numeric bounds, so a Grid is
  searched over its hull and snapped back onto the grid by ``custom_explore_fn``.
- ``asha``: ASHAScheduler, stopping trials at rungs of ``training_iteration`` (= rounds).
- ``fifo``: no early stopping.
- searchers ``random`` (Tune's variant generator, seeded) and ``optuna`` (TPE, one or several
  objectives). PBT/PB2 refuse a searcher (Ray raises), which Experiment already rejects; their
  initial population comes from the (seeded) variant generator.

All time attributes are ``training_iteration``: one report is one round, the unit everything
in metaadv agrees on (the default, wall-clock seconds, would make decisions load-dependent).
"""

from __future__ import annotations

import functools

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search.basic_variant import BasicVariantGenerator

from .experiment import Experiment
from .space import Grid, LogRange, snap_to_grids

__all__ = ["param_space", "build_scheduler", "build_searcher", "checkpoints_to_keep"]

TIME_ATTR = "training_iteration"


def _sampler(dim):
    if isinstance(dim, Grid):
        return tune.choice(list(dim.values))
    if isinstance(dim, LogRange):
        return tune.loguniform(dim.low, dim.high)
    return tune.uniform(dim.low, dim.high)


def param_space(exp: Experiment, size: str) -> dict:
    """The trial config: constants plus one Tune sampler per searched key (initial values)."""
    return {**exp.fixed_config(size), **{k: _sampler(d) for k, d in exp.space.items()}}


def _pbt_mutations(exp: Experiment) -> dict:
    # PBT reads a list as categorical (move to a neighbour) and a sampler as continuous.
    return {k: list(d.values) if isinstance(d, Grid) else _sampler(d) for k, d in exp.space.items()}


def build_scheduler(exp: Experiment, size: str):
    opts = exp.options(size)
    # metric and mode reach the scheduler through TuneConfig (Tune refuses them in both places).
    if exp.scheduler == "pbt":
        return PopulationBasedTraining(time_attr=TIME_ATTR, hyperparam_mutations=_pbt_mutations(exp),
                                       **{"perturbation_interval": 2, "quantile_fraction": 0.25, **opts})
    if exp.scheduler == "pb2":
        from ray.tune.schedulers.pb2 import PB2

        grids = {k: d for k, d in exp.space.items() if isinstance(d, Grid)}
        bounds = {k: list(d.bounds) for k, d in exp.space.items()}
        return PB2(time_attr=TIME_ATTR, hyperparam_bounds=bounds,
                   custom_explore_fn=functools.partial(snap_to_grids, grids=grids),
                   **{"perturbation_interval": 2, "quantile_fraction": 0.25, **opts})
    if exp.scheduler == "asha":
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=exp.rounds(size),
                             **{"grace_period": 1, "reduction_factor": 2, **opts})
    return FIFOScheduler()


def build_searcher(exp: Experiment, size: str):
    """Optuna, or Tune's own variant generator (seeded) for random search and PBT/PB2's
    initial population (PBT refuses only real searchers)."""
    limit = exp.sizes[size].max_concurrent
    if exp.searcher == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # TPE handles several objectives too (it absorbed MOTPE); seeded for repeatable studies.
        sampler = optuna.samplers.TPESampler(seed=exp.seed)
        if exp.multi_objective:
            searcher = OptunaSearch(metric=list(exp.metrics), mode=list(exp.modes), sampler=sampler)
        else:
            searcher = OptunaSearch(sampler=sampler)  # metric/mode and the space come from TuneConfig
        return ConcurrencyLimiter(searcher, max_concurrent=limit) if limit else searcher
    # TuneConfig(max_concurrent_trials) is ignored next to a variant generator: give it here.
    return BasicVariantGenerator(random_state=exp.seed, max_concurrent=limit or 0)


def checkpoints_to_keep(exp: Experiment, size: str) -> int | None:
    """How many checkpoints each trial keeps on storage.

    A PBT donor is cloned from the checkpoint it had at its last perturbation, at most
    ``perturbation_interval`` reports old; deleting it earlier breaks the exploit (Ray warns at
    <= 2). Other schedulers resume from the latest only.
    """
    if exp.scheduler in ("pbt", "pb2"):
        return int(exp.options(size).get("perturbation_interval", 2)) + 2
    return 2
