"""Data parallelism's arithmetic: N workers train what one process trains, and a row means the same.

The pure parts (slicing a batch, drawing a slice's noise, the worker flags) are checked in the
parent. The rest runs two forked workers in a gloo process group (tests/distributed_harness.py),
each driving the plain round loop with :class:`~metaadv.distributed.ddp.TorchDistributed`, next
to the same run in one process, two ways:

- **One optimizer step, float32** (the precision users train in): the workers' averaged gradient
  equals the single process's gradient to a float32 tolerance, for the classifier, every generator
  variant (and the generator's own gradient) and meta-learning. One step is deterministic maths:
  measured 1e-6 relative on an AVX2 CPU, 100 times inside the tolerance.
- **Several steps, float64**: the parameters agree weight for weight. Adversarial training is
  chaotic (on mnist5k a 1e-7 nudge of PGD-AT's starting weights moves them 5e-2 after the same
  steps; the generator's sign steps and clamps turn a last-bit difference into another
  perturbation), so in float32 such agreement is a bet on one CPU's rounding: at 1e-4 it held on
  an AVX-512 CPU and failed on an AVX2 one. In float64 the rounding sits near 1e-16 (measured:
  1e-17 to 3e-16 after 10 steps), so a 1e-8 tolerance keeps the comparison's strength on any CPU,
  and the negative control (gradient averaging off, 0.1 apart) must still fail it.
"""

from __future__ import annotations

import math

import pytest
import torch

from metaadv.attacks.noise import batch_slice, draw
from metaadv.config import TrainConfig
from metaadv.distributed.workers import WorkerSpec, check_device_request
from metaadv.errors import UserError
from metaadv.meta import MetaConfig
from metaadv.meta.run import MetaRun
from metaadv.training.parallel import split
from metaadv.training.run import TrainingRun

from .distributed_harness import float64, relative_difference, run_group, same_rows

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels

TOL = 1e-8  # several steps in float64 (see the module's docstring)
GRAD_TOL = 1e-4  # one step's gradient in float32
WORLD = 2
PGD = {"method": "pgd-at", "dataset": "digits", "rounds": 2, "steps_per_round": 5, "batch_size": 64, "val_size": 50,
       "val_pgd_steps": 2, "device": "cpu", "eps": 0.2, "eps_ramp_rounds": 0}
GEN = {**PGD, "method": "meta-generator"}
ADML = {"method": "adml", "first_order": True, "dataset": "digits", "ways": 3, "shots": 1, "queries": 3,
        "meta_batch": 3, "rounds": 2, "steps_per_round": 5, "inner_steps": 1, "val_tasks": 3, "val_pgd_steps": 2,
        "device": "cpu"}

# name -> (kind, config, gradient averaging on)
JOBS = {
    "pgd-at": ("train", PGD, True),
    "pgd-at, no averaging": ("train", PGD, False),
    # meta-generator's defaults: the recursive generator (3 unrolled steps, each reading a fresh
    # gradient), one final signed-gradient step, the co_guard and its train/grad_align.
    "meta-generator": ("train", {**PGD, "method": "meta-generator"}, True),
    "meta-generator, no averaging": ("train", {**PGD, "method": "meta-generator"}, False),
    # Noise input with the diversity term (two stacked copies of each slice, each drawing its rows
    # of the global batch's copies); the one-step generator; the noise control (its random points
    # are drawn as a random delta_0 is).
    "meta-generator, noise and diversity": ("train", {**GEN, "gen_noise": True, "gen_diversity": 0.5}, True),
    "meta-generator, onestep": ("train", {**GEN, "gen_arch": "onestep"}, True),
    "meta-generator, noise control": ("train", {**GEN, "gen_arch": "noise"}, True),
    "advgan": ("train", {**PGD, "method": "advgan"}, True),
    # 1259 training digits in batches of 629: slices of 315 and 314 (weights other than 1), then an
    # epoch's last batch of one example, which leaves the second worker a placeholder row.
    "meta-generator, uneven slices": ("train", {**PGD, "method": "meta-generator", "batch_size": 629,
                                                "steps_per_round": 0, "rounds": 1}, True),
    "advgan, uneven slices": ("train", {**PGD, "method": "advgan", "batch_size": 629, "steps_per_round": 0,
                                        "rounds": 1}, True),
    # 1259 training digits in batches of 37: slices of 19 and 18, and an epoch's last batch of
    # one example, which leaves the second worker a placeholder row of weight 0.
    "fast-at, uneven slices": ("train", {**PGD, "method": "fast-at", "batch_size": 37, "steps_per_round": 0,
                                         "rounds": 1}, True),
    # Each worker splits its own slice between generator and PGD (2 -> 1 + 1, 1 -> 1 + 0): not the
    # single process's split, but the workers must neither hang nor drift apart.
    "meta-generator, gen_fraction 0.5, slices of 2 and 1": ("train", {**PGD, "method": "meta-generator",
                                                                       "gen_fraction": 0.5, "batch_size": 3,
                                                                       "rounds": 1, "steps_per_round": 3}, True),
    "trades": ("train", {**PGD, "method": "trades"}, True),
    "vat": ("train", {**PGD, "method": "vat"}, True),
    "adml first-order": ("meta", ADML, True),
    "adml first-order, no averaging": ("meta", ADML, False),
    "reptile": ("meta", {**ADML, "method": "reptile", "first_order": False}, True),
    "maml second-order meta-gradient": ("meta-grad", {**ADML, "method": "maml", "first_order": False,
                                                       "inner_steps": 2}, True),
}
GENERATOR_JOBS = ["meta-generator", "meta-generator, noise and diversity", "meta-generator, onestep",
                  "meta-generator, noise control", "meta-generator, uneven slices", "advgan", "advgan, uneven slices"]


# The one-step comparisons: every job but the split of each worker's slice between generator and
# PGD (not the single process's split, by design); those without averaging are negative controls.
ONE_STEP = [name for name, (kind, _, _) in JOBS.items() if kind != "meta-grad" and "gen_fraction" not in name]
AVERAGED_ONE_STEP = [name for name in ONE_STEP if JOBS[name][2]]


def _run(kind: str, values: dict, parallel=None) -> dict:
    """Train one job to its end (or, ``meta-grad``, one outer step); what the tests compare."""
    extra = {} if parallel is None else {"parallel": parallel}
    if kind == "train":
        run = TrainingRun(TrainConfig.from_dict(values), device=torch.device("cpu"), **extra)
        model, gen = run.trainer.model, getattr(run.trainer.method, "gen", None)
    else:
        run = MetaRun(MetaConfig.from_dict(values), device=torch.device("cpu"), **extra)
        model, gen = run.learner.model, None
    if kind == "meta-grad":
        run.learner.outer_step(run.config.hparams())
        return {"grads": _grads(model)}
    while not run.done:
        run.step()
    return {"model": {k: v.clone() for k, v in model.state_dict().items()}, "rows": run.rows,
            "gen": None if gen is None else {k: v.clone() for k, v in gen.state_dict().items()}}


def _first_step(kind: str, values: dict, parallel=None) -> dict:
    """The gradients of the classifier (and generator) in the job's first optimizer step."""
    extra = {} if parallel is None else {"parallel": parallel}
    one = {**values, "rounds": 1, "steps_per_round": 1}
    if kind == "train":
        run = TrainingRun(TrainConfig.from_dict(one), device=torch.device("cpu"), **extra)
        run.step()  # the optimizers zero their gradients before a step, not after: these are the step's
        gen = getattr(run.trainer.method, "gen", None)
        return {"grads": _grads(run.trainer.model), "gen": None if gen is None else _grads(gen)}
    run = MetaRun(MetaConfig.from_dict(one), device=torch.device("cpu"), **extra)
    run.learner.outer_step(run.config.hparams())
    return {"grads": _grads(run.learner.model), "gen": None}


def _grads(module: torch.nn.Module) -> dict:
    return {k: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for k, p in module.named_parameters()}


def _everything(parallel_for=lambda averaging: None) -> dict:
    """Every job: its trajectory in float64 (one-step meta-gradients in float32) and its first step
    in float32, run with ``parallel_for(averaging)`` (None: one process)."""
    out = {}
    for name, (kind, values, averaging) in JOBS.items():
        if kind == "meta-grad":
            out[name] = _run(kind, values, parallel_for(averaging))
            continue
        with float64():
            out[name] = _run(kind, values, parallel_for(averaging))
        assert next(iter(out[name]["model"].values())).dtype == torch.float64
    for name in ONE_STEP:
        kind, values, averaging = JOBS[name]
        out[f"{name}, first step"] = _first_step(kind, values, parallel_for(averaging))
    return out


def _worker(rank: int) -> dict:
    from metaadv.distributed.ddp import TorchDistributed

    return _everything(lambda averaging: TorchDistributed(average_gradients=averaging))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every job with two workers (each worker's results) and in one process."""
    torch.set_num_threads(1)
    workers = run_group(_worker, WORLD, tmp_path_factory.mktemp("group"))
    single = _everything()
    return {name: (single[name], [w[name] for w in workers]) for name in single}


# -- the pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize("total,world", [(64, 2), (37, 2), (10, 3), (1, 2), (5, 8)])
def test_slices_cover_the_batch_once_in_order_and_their_weights_make_a_mean(total, world):
    idx = torch.arange(100, 100 + total)
    shards = [split(idx, world, r) for r in range(world)]
    real = [s for s in shards if s.count]
    assert torch.equal(torch.cat([s.indices for s in real]), idx)  # contiguous, in order, each row once
    assert [s.offset for s in real] == [sum(t.count for t in real[:i]) for i in range(len(real))]
    assert max(s.count for s in shards) - min(s.count for s in shards) <= 1
    # Averaging weight * (the slice's mean loss) over the workers, as DDP averages gradients, gives the batch's mean.
    losses = torch.rand(total, generator=torch.Generator().manual_seed(total), dtype=torch.float64)
    averaged = sum(s.weight * losses[s.offset : s.offset + s.count].mean() for s in real) / world
    assert math.isclose(averaged, losses.mean().item(), rel_tol=1e-12)
    assert all(len(s.indices) == 1 and s.weight == 0 for s in shards if not s.count)  # placeholders weigh nothing


@pytest.mark.parametrize("sampler", [torch.rand, torch.randn])
def test_a_slice_draws_the_rows_of_the_whole_batchs_noise(sampler):
    whole = draw(sampler, (10, 1, 4, 4), torch.Generator().manual_seed(3), torch.device("cpu"), torch.float32)
    with batch_slice(6, 4, 10):
        part = draw(sampler, (4, 1, 4, 4), torch.Generator().manual_seed(3), torch.device("cpu"), torch.float32)
        other = draw(sampler, (3, 1, 4, 4), torch.Generator().manual_seed(3), torch.device("cpu"), torch.float32)
    assert torch.equal(part, whole[6:])
    assert torch.equal(other, whole[:3])  # a sub-batch of another size draws plainly


def test_stacked_copies_of_a_slice_draw_their_rows_of_the_whole_batchs_copies():
    whole = draw(torch.randn, (20, 1, 4, 4), torch.Generator().manual_seed(3), torch.device("cpu"), torch.float32)
    with batch_slice(6, 4, 10):
        part = draw(torch.randn, (8, 1, 4, 4), torch.Generator().manual_seed(3), torch.device("cpu"), torch.float32,
                    copies=2)
    assert torch.equal(part, torch.cat([whole[6:10], whole[16:20]]))
    alone = draw(torch.randn, (8, 1, 4, 4), torch.Generator().manual_seed(3), torch.device("cpu"), torch.float32, copies=2)
    assert torch.equal(alone, whole[:8])  # one process: the plain draw, as before


def test_the_meta_generator_jobs_cover_the_default_generator():
    config = TrainConfig.from_dict(JOBS["meta-generator"][1])
    assert config.gen_arch == "recursive" and config.gen_final_steps >= 1 and config.co_guard


def test_worker_flags_are_checked():
    assert not WorkerSpec().uses_ray and WorkerSpec(1, 1.0).uses_ray and WorkerSpec(2).uses_ray
    for bad in ({"workers": 0}, {"workers": 2, "cpus_per_worker": 0}, {"workers": 2, "gpus_per_worker": -1},
                {"workers": 2, "gpus_per_worker": 1.5}):
        with pytest.raises(UserError):
            WorkerSpec(**bad)
    with pytest.raises(UserError, match="gpus-per-worker"):
        check_device_request("cuda", WorkerSpec(2))
    with pytest.raises(UserError, match="reserves GPUs"):
        check_device_request("cpu", WorkerSpec(2, 1.0))
    check_device_request("auto", WorkerSpec(2))


# -- two workers against one process -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", AVERAGED_ONE_STEP)
def test_the_workers_averaged_gradient_is_the_single_process_gradient(results, name):
    single, workers = results[f"{name}, first step"]
    assert any(g.abs().sum() > 0 for g in single["grads"].values()), "the step computed no gradient"
    for rank, got in enumerate(workers):
        assert relative_difference(got["grads"], single["grads"]) < GRAD_TOL, f"rank {rank}"
        if single["gen"] is not None:  # the generator is data-parallel too
            assert relative_difference(got["gen"], single["gen"]) < GRAD_TOL, f"rank {rank}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pgd-at", *GENERATOR_JOBS, "fast-at, uneven slices", "trades", "vat",
                                  "adml first-order", "reptile"])
def test_two_workers_train_the_single_process_parameters(results, name):
    single, workers = results[name]
    for rank, got in enumerate(workers):
        assert relative_difference(got["model"], single["model"]) < TOL, f"rank {rank}"
        if single["gen"] is not None:  # the generator is data-parallel too
            assert relative_difference(got["gen"], single["gen"]) < TOL, f"rank {rank}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pgd-at", "meta-generator", "adml first-order"])
def test_without_gradient_averaging_the_comparisons_fail(results, name):
    single, workers = results[f"{name}, no averaging"]
    assert relative_difference(workers[0]["model"], single["model"]) > 1e-3
    single, workers = results[f"{name}, no averaging, first step"]
    assert relative_difference(workers[0]["grads"], single["grads"]) > 100 * GRAD_TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pgd-at", *GENERATOR_JOBS, "fast-at, uneven slices", "adml first-order"])
def test_the_distributed_row_means_what_the_single_process_row_means(results, name):
    single, workers = results[name]
    for got in workers:  # every worker holds the same rows, so controllers decide the same
        assert same_rows(got["rows"], single["rows"]), (got["rows"], single["rows"])
    # The costs add up: every worker's share of the work, once (not once per worker, not one worker's).
    assert [r["cost/grad_evals"] for r in workers[0]["rows"]] == [r["cost/grad_evals"] for r in single["rows"]]
    assert all(r["cost/seconds"] > 0 for r in workers[0]["rows"])


@pytest.mark.slow
def test_second_order_maml_meta_gradient_is_the_single_process_one(results):
    single, workers = results["maml second-order meta-gradient"]
    for got in workers:
        assert relative_difference(got["grads"], single["grads"]) < 1e-5
    # 3 tasks on 2 workers: one worker alone would have a different (partial) gradient.
    assert any(g.abs().sum() > 0 for g in single["grads"].values())


def test_train_backed_trials_fit_once_per_segment_a_scheduler_can_act_on():
    from metaadv.distributed.tune_trial import segment_rounds
    from metaadv.tune.experiment import Experiment, Size
    from metaadv.tune.space import Grid

    size = Size(2, {"dataset": "digits", "rounds": 9})

    def exp(scheduler, **options):
        return Experiment(name="x", description="x", space={"lr": Grid(1e-3, 1e-2)}, sizes={"smoke": size, "full": size},
                          scheduler=scheduler, scheduler_options=options)

    assert segment_rounds(exp("pbt", perturbation_interval=3), "smoke") == 3  # PBT exploits at these reports
    assert segment_rounds(exp("pbt"), "smoke") == 2  # metaadv's PBT default interval
    assert segment_rounds(exp("asha"), "smoke") == 1  # any round may be a rung
    assert segment_rounds(exp("fifo"), "smoke") == 9  # nothing acts before the end


@pytest.mark.slow
def test_workers_splitting_their_slices_between_generator_and_pgd_stay_in_step(results):
    single, (first, second) = results["meta-generator, gen_fraction 0.5, slices of 2 and 1"]
    assert relative_difference(second["model"], first["model"]) < TOL
    assert relative_difference(second["gen"], first["gen"]) < TOL
    assert [list(r) for r in first["rows"]] == [list(r) for r in single["rows"]]
