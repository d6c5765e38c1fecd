"""The Tune adapter's Ray-free parts: restore rule, experiments, search spaces, CLI input errors.

The Ray runs (PBT exploits, ASHA, NaN trials, resume) are in test_tune_ray.py.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from metaadv.checkpoint import read_checkpoint, save_checkpoint
from metaadv.cli import main
from metaadv.errors import UserError
from metaadv.training.trainer import DivergedError
from metaadv.tune.experiment import REQUIRED_SIZES, Experiment, Size
from metaadv.tune.kinds import build_train_run, get_kind, restore_train_run
from metaadv.tune.report import pareto_front
from metaadv.tune.space import Grid, LogRange, Range, snap_to_grids
from tune_experiments.registry import AVAILABLE, load_experiment

TINY = {"method": "pgd-at", "dataset": "digits", "rounds": 4, "steps_per_round": 3, "val_size": 50,
        "val_pgd_steps": 2, "device": "cpu", "eps_ramp_rounds": 0}


def test_restore_keeps_the_trial_config_hyperparameters_and_the_checkpoint_state(tmp_path):
    donor = build_train_run({**TINY, "eps": 0.1, "steps": 1, "lr": 1e-3, "weight_decay": 0.0})
    donor_rows = [donor.step(), donor.step()]
    save_checkpoint(donor.state_dict(), tmp_path / "checkpoint.pt")

    # What PBT does on exploit: the donor's checkpoint, a mutated config.
    mutated = {**TINY, "eps": 0.3, "steps": 3, "step_ratio": 0.5, "lr": 5e-3, "weight_decay": 1e-4}
    run = build_train_run(mutated)
    restore_train_run(run, read_checkpoint(tmp_path / "checkpoint.pt"))

    assert run.round == 2 and run.rows == donor_rows  # the round counter continues from the checkpoint
    for a, b in zip(run.trainer.model.state_dict().values(), donor.trainer.model.state_dict().values()):
        assert torch.equal(a, b)
    row = run.step()
    assert row["round"] == 3 and row["step"] == donor_rows[-1]["step"] + TINY["steps_per_round"]
    assert (row["hp/eps"], row["hp/steps"], row["hp/step_ratio"]) == (0.3, 3, 0.5)
    assert row["hp/lr"] == 5e-3 and row["hp/weight_decay"] == 1e-4
    assert run.trainer.optimizer.param_groups[0]["lr"] == 5e-3  # the optimizer state did not bring lr back


def test_val_eps_fixes_the_threat_model_while_the_training_eps_is_searched():
    run = build_train_run({**TINY, "eps": 0.1, "val_eps": 0.25})
    row = run.step()
    assert row["hp/eps"] == 0.1 and row["val/eps"] == 0.25


def test_a_huge_sgd_learning_rate_really_diverges_on_digits():
    # The NaN trial of test_tune_ray relies on this: one finite (huge) round, then NaN in round 2.
    run = build_train_run({**TINY, "optimizer": "sgd", "lr": 1e4, "eps": 0.1})
    assert math.isfinite(run.step()["train/loss"])
    with pytest.raises(DivergedError, match="loss became"):
        run.step()


def test_unknown_kind_is_a_user_error():
    with pytest.raises(UserError, match="unknown run kind 'oracle'"):
        get_kind("oracle")


def test_meta_kind_keeps_the_trial_config_and_fixes_eps_to_the_threat_model():
    exp = load_experiment("pbt_adml")
    config = {**exp.fixed_config("smoke"), "dataset": "digits", "rounds": 2, "steps_per_round": 2, "val_tasks": 3,
              "beta1": 0.25, "beta2": 0.75, "inner_lr": 0.1, "meta_lr": 1e-3}
    kind = get_kind(config.pop("kind"))
    run = kind.build(config)
    first = run.step()
    assert first["hp/eps"] == 0.2 and first["hp/beta1"] == 0.25
    resumed = kind.build({**config, "meta_lr": 2e-3, "beta1": 0.5})  # as PBT would mutate them
    kind.restore(resumed, run.state_dict())
    assert resumed.round == 1 and resumed.rows == run.rows
    row = resumed.step()
    assert (row["round"], row["hp/meta_lr"], row["hp/beta1"]) == (2, 2e-3, 0.5)
    with pytest.raises(UserError, match="validate at their training eps"):
        kind.build({**config, "eps": 0.3})


@pytest.mark.parametrize("name, passes", [("pbt_adml", 3 + 15 + 2 * 3 * 3 + 2 * 15),  # FGSM, 2 inner loops, 2 queries
                                           ("pbt_aq", 3 * 3 + 7 * 15 + 15)])  # inner loop, PGD-7 queries, outer
def test_meta_experiments_train_a_round_on_mnist5k_rot(name, passes):
    exp = load_experiment(name)
    config = {**exp.fixed_config("smoke"), "rounds": 1, "steps_per_round": 1, "meta_batch": 1, "val_tasks": 2,
              "val_pgd_steps": 1, "inner_lr": 0.1, "meta_lr": 1e-3, "device": "cpu"}
    assert config["dataset"] == "mnist5k-rot"
    row = get_kind(config.pop("kind")).build(config).step()
    assert row["hp/eps"] == exp.threat_eps == row["val/eps"] and row["cost/grad_evals"] == passes
    assert 0 <= row["val/robust_acc"] <= row["val/clean_acc"] <= 1


@pytest.mark.parametrize("name", AVAILABLE)
def test_every_registered_experiment_is_valid(name):
    exp = load_experiment(name)  # __post_init__ builds a TrainConfig at the corners of the space
    assert exp.name == name and exp.sizes["smoke"].num_samples >= 2
    assert set(REQUIRED_SIZES) <= set(exp.sizes)


def _exp(**changes) -> Experiment:
    values = dict(name="t", description="t", space={"lr": LogRange(1e-4, 1e-2)},
                  sizes={"smoke": Size(2, TINY), "full": Size(2, TINY)})
    return Experiment(**{**values, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"scheduler": "pbt", "searcher": "optuna"}, "takes no searcher"),
    ({"scheduler": "pb2"}, "linear bounds only"),
    ({"metric": ("val/clean_acc", "val/robust_acc"), "mode": ("max", "max")}, "need searcher='optuna'"),
    ({"base": {"learning_rate": 1}}, "unknown config key"),
    ({"space": {"eps": Grid(0.1, 2.0)}}, "eps must be in"),
    ({"sizes": {"huge": Size(2, TINY)}}, "sizes must be among"),
])
def test_bad_experiments_fail_before_ray_starts(changes, message):
    with pytest.raises(UserError, match=message):
        _exp(**changes)


def test_a_searched_lr_is_trained_at_constant_lr_unless_the_base_says_otherwise():
    assert _exp().fixed_config("smoke")["lr_schedule"] == "constant"
    assert "lr_schedule" not in _exp(space={"eps": Grid(0.1, 0.2)}).fixed_config("smoke")
    assert _exp(base={"lr_schedule": "cosine"}).fixed_config("smoke")["lr_schedule"] == "cosine"


def test_pb2_proposals_are_snapped_back_onto_the_grids():
    grids = {"steps": Grid(1, 3, 10), "eps": Grid(0.1, 0.2, 0.3)}
    out = snap_to_grids({"steps": 5.9, "eps": 0.26, "lr": 0.0123}, grids)
    assert out == {"steps": 3, "eps": 0.3, "lr": 0.0123}
    assert Grid(1, 3, 10).bounds == (1.0, 10.0) and Range(0.0, 1.0).bounds == (0.0, 1.0)


def test_pareto_front_keeps_the_non_dominated_finite_trials():
    def row(i, clean, robust, status="ok"):
        return {"trial_id": i, "status": status, "metrics": {"val/clean_acc": clean, "val/robust_acc": robust}}

    rows = [row(0, 0.9, 0.1), row(1, 0.8, 0.3), row(2, 0.7, 0.2), row(3, math.nan, math.nan), row(4, 1.0, 1.0, "diverged")]
    front = pareto_front(rows, ("val/clean_acc", "val/robust_acc"), ("max", "max"))
    assert [r["trial_id"] for r in front] == [0, 1]


def test_list_shows_available_and_planned_experiments(capsys):
    assert main(["tune", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in AVAILABLE)


@pytest.mark.parametrize("argv, message", [
    (["tune", "no_such_experiment"], "unknown experiment 'no_such_experiment'"),
    (["tune", "pbt_pgd_at", "--samples", "many"], "--samples expects a number"),
    (["tune", "pbt_pgd_at", "--samples", "0"], "--samples must be >= 1"),
    (["tune", "pbt_pgd_at", "--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
    (["tune", "pbt_pgd_at", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["tune", "missing_file.py"], "not found"),
    (["tune"], "name an experiment"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("metaadv: error:")


def test_only_metaadv_tune_imports_ray():
    code = ("import sys, metaadv.cli, metaadv.training.run, metaadv.tune, metaadv.tune.kinds, tune_experiments.registry as r\n"
            "[r.load_experiment(n) for n in r.AVAILABLE]\n"
            "metaadv.cli.build_parser()\n"
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))[:5]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("name", AVAILABLE)
def test_every_experiment_builds_its_ray_scheduler_and_searcher(name):
    pytest.importorskip("ray")
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from metaadv.tune.schedulers import build_scheduler, build_searcher, param_space

    exp = load_experiment(name)
    for size in ("smoke", "full"):
        scheduler, searcher = build_scheduler(exp, size), build_searcher(exp, size)  # Ray checks the options
        expected = {"pbt": PopulationBasedTraining, "pb2": PopulationBasedTraining, "asha": ASHAScheduler,
                    "fifo": FIFOScheduler}[exp.scheduler]
        assert isinstance(scheduler, expected)
        assert isinstance(searcher, BasicVariantGenerator) == (exp.searcher == "random")
        space = param_space(exp, size)
        assert space["kind"] == exp.kind and set(exp.space) <= set(space)
        assert space["val_eps"] == exp.sizes[size].config.get("val_eps", exp.threat_eps)


def test_pb2_explores_on_the_grids():
    pytest.importorskip("ray")
    from metaadv.tune.schedulers import build_scheduler

    pb2 = build_scheduler(load_experiment("pb2_pgd_at"), "smoke")
    snapped = pb2._custom_explore_fn({"eps": 0.27, "steps": 6.2, "step_ratio": 0.3, "lr": 1e-3, "weight_decay": 0.0})
    assert (snapped["eps"], snapped["steps"], snapped["step_ratio"]) == (0.25, 7, 0.25)


def test_a_resumed_trial_drops_logged_rows_past_its_checkpoint(tmp_path):
    pytest.importorskip("ray")
    import json

    from metaadv.tune.callbacks import drop_rows_after

    result = tmp_path / "result.json"
    # rounds 3-4 came back after a PBT exploit (history is not monotonic); 5 and 6 were reported
    # after the last checkpoint the killed driver recorded, so the resumed trial runs them again
    result.write_text("".join(json.dumps({"round": r}) + "\n" for r in [1, 2, 3, 4, 3, 4, 5, 6]))
    drop_rows_after(result, 4)
    assert [json.loads(line)["round"] for line in result.read_text().splitlines()] == [1, 2, 3, 4, 3, 4]
    progress = tmp_path / "progress.csv"
    progress.write_text("loss,round\n0.5,1\n0.4,2\n0.3,3\n")
    drop_rows_after(progress, 2)
    assert progress.read_text() == "loss,round\n0.5,1\n0.4,2\n"
