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

Time attributes are ``training_iteration`` (one report is one round, the unit everything in
metaadv agrees on; Ray's default, wall-clock seconds, would make decisions load-dependent), or for
PBT/PB2 the experiment's ``time_attr``: ``cost/grad_evals`` compares trials at equal training cost.

PBT's ``one_dim`` option (``scheduler_options={"one_dim": True}``) makes each explore step change
exactly one hyperparameter of the donor's config, chosen at random (:class:`SeededPBT`).

PBT and PB2 are Ray's, with four fixes (:class:`_PopulationFixes`): a diverged trial's score is
the worst possible at once (it can never be a donor, and is replaced at its next perturbation);
mutations are put back inside the declared space (:func:`~metaadv.tune.space.fit_to_space`); the
random draws (donor choice, perturbation factors, resampling) come from the scheduler's own
generators, seeded from the experiment's ``seed``; trial tags stay the first tag across
``--resume`` (Ray re-reads a perturbed tag as the original one).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2  # imports scikit-learn only when PB2 explores
from ray.tune.search.basic_variant import BasicVariantGenerator

from .experiment import Experiment
from .space import Grid, LogRange, explore_one_dimension, fit_to_space

__all__ = ["param_space", "build_scheduler", "build_searcher", "SeededPBT", "SeededPB2", "is_diverged"]

TIME_ATTR = "training_iteration"


def _sampler(dim):
    if isinstance(dim, Grid):
        return tune.choice(list(dim.values))
    if isinstance(dim, LogRange):
        return tune.loguniform(dim.low, dim.high)
    return tune.uniform(dim.low, dim.high)


def param_space(exp: Experiment, size: str) -> dict:
    """The trial config: constants plus one Tune sampler per searched key (initial values)."""
    if exp.searcher == "grid":  # every combination, each ``num_samples`` times (or once per seed)
        return {**exp.fixed_config(size), **{k: tune.grid_search(list(d.values)) for k, d in exp.space.items()}}
    return {**exp.fixed_config(size), **{k: _sampler(d) for k, d in exp.space.items()}}


def _pbt_mutations(exp: Experiment) -> dict:
    # PBT reads a list as categorical (move to a neighbour) and a sampler as continuous.
    return {k: list(d.values) if isinstance(d, Grid) else _sampler(d) for k, d in exp.space.items()}


def is_diverged(result: dict, metric: str) -> bool:
    """A diverged trial's report: ``status: diverged`` (metaadv's trainable), or a NaN metric."""
    value = result.get(metric)
    return result.get("status") == "diverged" or (isinstance(value, float) and math.isnan(value))


class _PopulationFixes:
    """Mixed in before PopulationBasedTraining / PB2; see the module docstring."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._py_random = random.Random(seed).getstate()
        self._np_random = np.random.RandomState(seed).get_state()

    @contextlib.contextmanager
    def own_random(self):
        """Ray's PBT draws from Python's global ``random`` (donor, perturbation factor, grid shift)
        and, to resample a range, NumPy's global generator. Inside this block both are the
        scheduler's own seeded streams; outside, the globals are as they were."""
        saved = random.getstate(), np.random.get_state()
        random.setstate(self._py_random)
        np.random.set_state(self._np_random)
        try:
            yield
        finally:
            self._py_random, self._np_random = random.getstate(), np.random.get_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])

    def on_trial_add(self, tune_controller, trial):
        with self.own_random():
            super().on_trial_add(tune_controller, trial)
        # After --resume the trial's tag is the perturbed one ("3_lr=...@perturbed[...]"); the
        # lineage files name a trial by its first tag, before and after the restore alike.
        state = self._trial_state[trial]
        state.orig_tag = state.orig_tag.split("@perturbed[")[0]

    def on_trial_result(self, tune_controller, trial, result):
        if self._metric in result and is_diverged(result, self._metric):
            # Ray 2.60 leaves a NaN out of its quantiles, but keeps the trial's score from its last
            # perturbation round until the trial ends: a trial that diverged between two
            # perturbations could still be cloned. Its score is the worst there is, at once.
            worst = -math.inf if self._mode == "max" else math.inf
            result = {**result, self._metric: worst}
            self._trial_state[trial].last_score = -math.inf  # last_score is mode-adjusted: higher is better
        with self.own_random():
            return super().on_trial_result(tune_controller, trial, result)


class SeededPBT(_PopulationFixes, PopulationBasedTraining):
    """With ``one_dim`` (and the declared ``space``), an exploit copies the donor's config and the
    explore step changes exactly one hyperparameter (:func:`~metaadv.tune.space.explore_one_dimension`)
    instead of Ray's perturbing all of them at once."""

    def __init__(self, *args, one_dim: bool = False, space: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._one_dim_space = dict(space or {}) if one_dim else None

    def _get_new_config(self, trial, trial_to_clone):
        if self._one_dim_space is None:
            return super()._get_new_config(trial, trial_to_clone)
        # Called inside own_random (from on_trial_result): the global module is the scheduler's stream.
        return explore_one_dimension(trial_to_clone.config, self._one_dim_space, random,
                                     resample_probability=self._resample_probability,
                                     perturbation_factors=tuple(self._perturbation_factors))


class SeededPB2(_PopulationFixes, PB2):
    def _save_trial_state(self, state, time, result, trial):
        if is_diverged(result, self._metric) or not math.isfinite(result[self._metric]):
            # The GP models score changes: an infinite one would break its fit. Rank only.
            return PopulationBasedTraining._save_trial_state(self, state, time, result, trial)
        return super()._save_trial_state(state, time, result, trial)


def build_scheduler(exp: Experiment, size: str):
    opts = exp.options(size)
    time_attr = exp.time_attr
    explore = functools.partial(fit_to_space, space=dict(exp.space))
    # metric and mode reach the scheduler through TuneConfig (Tune refuses them in both places).
    if exp.scheduler == "pbt":
        if opts.get("one_dim"):
            opts["space"] = dict(exp.space)
        return SeededPBT(time_attr=time_attr, hyperparam_mutations=_pbt_mutations(exp), custom_explore_fn=explore,
                         seed=exp.seed, **{"perturbation_interval": 2, "quantile_fraction": 0.25, **opts})
    if exp.scheduler == "pb2":
        bounds = {k: list(d.bounds) for k, d in exp.space.items()}
        return SeededPB2(time_attr=time_attr, hyperparam_bounds=bounds, custom_explore_fn=explore, seed=exp.seed,
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
