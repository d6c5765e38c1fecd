"""metaadv's PBT/PB2 fixes, without starting Ray: a diverged trial is never a donor, mutations stay
inside the declared space, the random draws are the experiment's (seeded), tags survive a resume,
lineage files come back from storage, and PBT can count time in training cost.

The kill-and-resume run with the lineage intact is in test_tune_ray.py.
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pyarrow.fs
import pytest

from metaadv.errors import UserError
from metaadv.training.trainer import DivergedError
from metaadv.tune.callbacks import restore_lineage_files
from metaadv.tune.experiment import Experiment, Size
from metaadv.tune.kinds import build_train_run
from metaadv.tune.schedulers import SeededPB2, SeededPBT, build_scheduler
from metaadv.tune.space import Grid, LogRange, Range, fit_to_space
from metaadv.tune.trainable import _diverged_row

TINY = {"method": "pgd-at", "dataset": "digits", "rounds": 4, "steps_per_round": 3, "val_size": 50,
        "val_pgd_steps": 2, "device": "cpu", "eps_ramp_rounds": 0}
SPACE = {"steps": Grid(1, 2, 3), "lr": LogRange(1e-3, 1.1e-3), "adv_mix": Range(0.5, 0.55)}


def _exp(scheduler="pbt", **changes) -> Experiment:
    size = Size(4, TINY)
    options = {"perturbation_interval": 2, "quantile_fraction": 0.25}
    space = SPACE if scheduler != "pb2" else {**SPACE, "lr": Range(1e-3, 1.1e-3)}  # PB2: linear bounds only
    values = dict(name="t", description="t", space=space, sizes={"smoke": size, "full": size}, scheduler=scheduler,
                  scheduler_options=options if scheduler == "pb2" else {**options, "resample_probability": 0.25})
    return Experiment(**{**values, **changes})


def _scheduler(**changes):
    sched = build_scheduler(_exp(**changes), "smoke")
    sched.set_search_properties("val/robust_acc", "max")
    return sched


class FakeTrial:
    """What PBT reads of a trial on the paths tested here."""

    def __init__(self, tag: str, config: dict | None = None):
        self.experiment_tag, self.config, self.status = tag, config or {}, "RUNNING"
        self.run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(checkpoint_config=SimpleNamespace(num_to_keep=None)))
        self.evaluated_params = {}

    def is_finished(self) -> bool:
        return False


def _add(sched, trial):
    sched.on_trial_add(SimpleNamespace(search_alg=None), trial)
    return trial


def test_fit_to_space_clips_ranges_and_snaps_grids():
    out = fit_to_space({"steps": 5, "lr": 1.32e-3, "adv_mix": 0.4, "other": 7}, SPACE)
    assert out == {"steps": 3, "lr": 1.1e-3, "adv_mix": 0.5, "other": 7}


@pytest.mark.parametrize("scheduler", ["pbt", "pb2"])
def test_explored_configs_stay_inside_the_declared_space(scheduler):
    sched = _scheduler(scheduler=scheduler)
    donor = FakeTrial("0", {"steps": 3, "lr": 1.1e-3, "adv_mix": 0.55})
    if scheduler == "pb2":
        pytest.importorskip("sklearn")
        sched.data = sched.data.__class__(  # PB2 fits a GP on the population's history first
            [["0", t, 3, 1.05e-3, 0.52, 0.1 * t] for t in (2, 4)] + [["1", t, 1, 1.01e-3, 0.51, 0.05 * t] for t in (2, 4)],
            columns=["Trial", "Time", "steps", "lr", "adv_mix", "Reward"])
    for _ in range(30):
        with sched.own_random():
            new, _ = sched._get_new_config(FakeTrial("1", dict(donor.config)), donor)
        assert new["steps"] in (1, 2, 3)
        assert 1e-3 <= new["lr"] <= 1.1e-3 and 0.5 <= new["adv_mix"] <= 0.55, new


def _draws(sched, n=12):
    donor = FakeTrial("0", {"steps": 2, "lr": 1.05e-3, "adv_mix": 0.52})
    out = []
    for _ in range(n):
        with sched.own_random():
            out.append(sched._get_new_config(FakeTrial("1"), donor)[0])
            out.append(random.choice("abcdefgh"))  # as PBT picks a donor from the top quantile
    return out


def test_mutations_are_drawn_from_the_experiments_seed_and_leave_the_global_generators_alone():
    random.seed(123)
    np.random.seed(123)
    before = random.random(), np.random.random_sample()
    random.seed(123)
    np.random.seed(123)
    first = _draws(_scheduler(seed=5))
    assert (random.random(), np.random.random_sample()) == before  # the globals did not move
    assert _draws(_scheduler(seed=5)) == first  # same seed, same decisions, whatever the global state
    assert _draws(_scheduler(seed=6)) != first
    assert len({str(c) for c in first[::2]}) > 3  # the draws do vary (resampling and x0.8 / x1.2)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_trial_that_diverges_between_perturbations_is_never_a_donor(mode):
    sched = build_scheduler(_exp(), "smoke")
    sched.set_search_properties("val/robust_acc", mode)
    trials = [_add(sched, FakeTrial(str(i), {"steps": 1, "lr": 1e-3, "adv_mix": 0.5})) for i in range(4)]
    scores = [0.9, 0.5, 0.4, 0.3]  # trial 0 leads at the last perturbation (round 2)
    for trial, score in zip(trials, scores):
        state = sched._trial_state[trial]
        state.last_score, state.last_perturbation_time = score, 2  # mode-adjusted: higher is better
    lower, upper = sched._quantiles()
    assert upper == [trials[0]]
    # Round 3, between perturbations: trial 0 diverges. Ray keeps its round-2 score until it ends.
    row = {"training_iteration": 3, "val/robust_acc": math.nan, "status": "diverged"}
    assert sched.on_trial_result(SimpleNamespace(get_trials=lambda: trials), trials[0], row) == "CONTINUE"
    lower, upper = sched._quantiles()
    assert trials[0] not in upper and lower == [trials[0]]


def test_a_resumed_trials_perturbed_tag_is_read_back_as_its_first_tag():
    sched = _scheduler()
    trial = _add(sched, FakeTrial("3_lr=0.0010@perturbed[lr=0.0011,steps=2]@perturbed[lr=0.0010,steps=3]"))
    assert sched._trial_state[trial].orig_tag == "3_lr=0.0010"


def test_pb2_keeps_a_diverged_score_out_of_its_gp_data():
    pytest.importorskip("sklearn")
    sched = _scheduler(scheduler="pb2")
    assert isinstance(sched, SeededPB2)
    trials = [_add(sched, FakeTrial(str(i), {"steps": 1, "lr": 1e-3, "adv_mix": 0.5})) for i in range(2)]
    controller = SimpleNamespace(get_trials=lambda: trials, _schedule_trial_save=lambda trial, result: None)
    sched.on_trial_result(controller, trials[1], {"training_iteration": 2, "val/robust_acc": 0.5})
    sched.on_trial_result(controller, trials[0], {"training_iteration": 2, "val/robust_acc": math.nan, "status": "diverged"})
    assert list(sched.data["Reward"]) == [0.5] and sched._trial_state[trials[0]].last_score == -math.inf


def test_time_attr_cost_is_pbt_only_and_needs_an_interval_in_its_units():
    exp = _exp(time_attr="cost/grad_evals", scheduler_options={"perturbation_interval": 2000, "burn_in_period": 4000})
    sched = build_scheduler(exp, "smoke")
    assert isinstance(sched, SeededPBT) and sched._time_attr == "cost/grad_evals" and sched._perturbation_interval == 2000
    with pytest.raises(UserError, match="perturbation_interval"):
        _exp(time_attr="cost/grad_evals", scheduler_options={})
    with pytest.raises(UserError, match="PBT and PB2 only"):
        _exp(scheduler="asha", time_attr="cost/grad_evals", scheduler_options={"perturbation_interval": 5})
    with pytest.raises(UserError, match="unknown time_attr"):
        _exp(time_attr="time_total_s")


def test_a_diverged_row_carries_the_cost_columns_pbt_may_count_time_in():
    run = build_train_run({**TINY, "optimizer": "sgd", "lr": 1e4, "eps": 0.1})
    first = run.step()
    with pytest.raises(DivergedError) as info:
        run.step()
    row = _diverged_row(run, info.value, ("val/robust_acc", "hp/eps"))
    assert row["status"] == "diverged" and math.isnan(row["val/robust_acc"]) and row["round"] == 2
    assert row["cost/grad_evals"] >= first["cost/grad_evals"] > 0 and "cost/seconds" in row
    fresh = build_train_run({**TINY, "optimizer": "sgd", "lr": 1e4, "eps": 0.1})
    assert _diverged_row(fresh, info.value, ("val/robust_acc",))["cost/grad_evals"] == 0


def test_lineage_files_come_back_from_storage_ahead_of_new_lines(tmp_path):
    stored, staging = tmp_path / "stored", tmp_path / "staging"
    stored.mkdir()
    (stored / "pbt_global.txt").write_text('["a"]\n["b"]\n["c')  # the last copy was cut mid-line
    (stored / "pbt_policy_x_00001.txt").write_text('["a"]\n')
    (stored / "result.json").write_text("{}\n")
    staging.mkdir()
    (staging / "pbt_global.txt").write_text('["d"]\n')
    copied = restore_lineage_files(pyarrow.fs.LocalFileSystem(), str(stored), str(staging))
    assert sorted(copied) == ["pbt_global.txt", "pbt_policy_x_00001.txt"]
    assert (staging / "pbt_global.txt").read_text() == '["a"]\n["b"]\n["d"]\n'
    assert (staging / "pbt_policy_x_00001.txt").read_text() == '["a"]\n' and not (staging / "result.json").exists()
    assert restore_lineage_files(pyarrow.fs.LocalFileSystem(), str(tmp_path / "none"), str(staging)) == []
    # A staging folder that outlived the killed driver holds the stored lines and more: kept as is.
    (staging / "pbt_global.txt").write_text('["a"]\n["b"]\n["c"]\n')
    restore_lineage_files(pyarrow.fs.LocalFileSystem(), str(stored), str(staging))
    assert (staging / "pbt_global.txt").read_text() == '["a"]\n["b"]\n["c"]\n'


# --- one dimension at a time (issue 21, fault 6) ----------------------------------------------

EDGES = {"steps": Grid(1, 2, 3), "lr": LogRange(1e-3, 1.1e-3), "adv_mix": Range(0.5, 0.55), "eps": Grid(0.1, 0.3)}


@pytest.mark.parametrize("resample", [0.0, 0.25, 1.0])
def test_the_one_dimension_explore_changes_exactly_one_key_inside_the_space(resample):
    from metaadv.tune.space import explore_one_dimension

    rng = random.Random(0)
    donors = [{"steps": 1, "lr": 1.1e-3, "adv_mix": 0.5, "eps": 0.3, "other": 7},  # at the ends of every dimension
              {"steps": 2, "lr": 1.05e-3, "adv_mix": 0.52, "eps": 0.1, "other": 7}]
    moved = set()
    for i in range(200):
        donor = donors[i % 2]
        new, ops = explore_one_dimension(donor, EDGES, rng, resample_probability=resample)
        changed = [k for k in donor if new[k] != donor[k]]
        assert len(changed) == 1 and list(ops) == changed, (donor, new, ops)
        assert fit_to_space(new, EDGES) == new  # inside the declared space, on the grids
        if isinstance(EDGES[changed[0]], Grid) and resample == 0.0:
            values = EDGES[changed[0]].values
            assert abs(values.index(new[changed[0]]) - values.index(donor[changed[0]])) == 1  # a neighbour
        moved.add(changed[0])
    assert moved == set(EDGES)  # each dimension gets its turn


def test_one_dim_pbt_explores_one_key_where_rays_perturbs_them_all():
    donor = FakeTrial("0", {"steps": 2, "lr": 1.05e-3, "adv_mix": 0.52})
    counts = {}
    for one_dim in (False, True):
        sched = _scheduler(scheduler_options={"perturbation_interval": 2, "quantile_fraction": 0.25,
                                              "resample_probability": 0.25, "one_dim": one_dim})
        counts[one_dim] = []
        for _ in range(30):
            with sched.own_random():
                new, _ = sched._get_new_config(FakeTrial("1", dict(donor.config)), donor)
            counts[one_dim].append(sum(new[k] != donor.config[k] for k in donor.config))
    assert set(counts[True]) == {1}
    assert max(counts[False]) == 3  # Ray's explore moves every key at once


def test_one_dim_is_a_pbt_option():
    with pytest.raises(UserError, match="one_dim .* is a PBT option"):
        _exp(scheduler="pb2", scheduler_options={"perturbation_interval": 2, "one_dim": True})
    with pytest.raises(UserError, match="one_dim is true or false"):
        _exp(scheduler_options={"perturbation_interval": 2, "one_dim": "yes"})
