"""Guard-rails of the generator methods: the catastrophic-overfitting guard, train/grad_align, schedules
that carry the generator's hyperparameters, and the generator's transfer attack."""

import csv

import pytest
import torch

from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.evaluation.transfer import transfer_attacks
from metaadv.training.run import TrainingRun, run_training
from metaadv.training.trainer import GRAD_ALIGN_SIZE
from metaadv.training.validation import grad_alignment

TINY = {"dataset": "digits", "rounds": 6, "steps_per_round": 2, "batch_size": 32, "val_size": 32, "val_pgd_steps": 1,
        "steps": 2, "gen_width": 8, "gen_unroll": 2, "eps_ramp_rounds": 0}


def tiny(**changes):
    return TrainConfig.from_dict({**TINY, **changes})


def _weights(run) -> dict:
    return {k: v.clone() for k, v in run.trainer.model.state_dict().items()}


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["meta-generator", "advgan", "meta-adv"])
def test_the_guard_is_on_for_generator_methods_and_reverts_to_the_best_round(digits_splits, monkeypatch, method):
    config = tiny(method=method, co_threshold=0.2)
    assert config.co_guard
    run = TrainingRun(config, splits=digits_splits)
    values = iter([0.4, 0.6, 0.5, 0.3])  # round 4 falls 0.3 below round 2's 0.6
    real = run.trainer.validate
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real(*a), "val/robust_acc": next(values)})
    snapshots = []
    for _ in range(3):
        row = run.step()
        assert row["train/co_detected"] == 0 and -1.0 <= row["train/grad_align"] <= 1.0
        snapshots.append(_weights(run))
    assert not _same(snapshots[1], snapshots[2])  # round 3 trained on: reverting to it would differ
    with pytest.warns(UserWarning, match="reverted to round 2"):
        row = run.step()
    assert row["train/co_detected"] == 1 and run.done
    assert _same(_weights(run), snapshots[1])


def test_the_guard_also_catches_a_generator_run_that_never_became_robust(digits_splits, monkeypatch):
    run = TrainingRun(tiny(method="meta-generator", co_gap=0.5), splits=digits_splits)
    real_round, real_validate = run.trainer.train_round, run.trainer.validate
    monkeypatch.setattr(run.trainer, "train_round", lambda *a, **k: {**real_round(*a, **k), "train/adv_acc": 0.9})
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real_validate(*a), "val/robust_acc": 0.05})
    with pytest.warns(UserWarning, match="accuracy on its training examples 0.900 exceeds val PGD accuracy"):
        row = run.step()
    assert row["train/co_detected"] == 1 and run.done


def test_no_co_guard_turns_it_off(digits_splits, monkeypatch):
    run = TrainingRun(tiny(method="meta-generator", co_guard=False), splits=digits_splits)
    values = iter([0.6, 0.1])
    real = run.trainer.validate
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real(*a), "val/robust_acc": next(values)})
    rows = [run.step(), run.step()]
    assert not run.stopped_reason and all("train/co_detected" not in r and "train/grad_align" not in r for r in rows)
    assert not tiny(method="pgd-at").co_guard and tiny(method="pgd-at", co_guard=True).co_guard


def test_grad_align_is_a_cosine_counted_as_monitoring_and_seeded_by_round(digits_splits, digits_model):
    run = TrainingRun(tiny(method="meta-generator", rounds=2), splits=digits_splits)
    rows = [run.step() for _ in range(2)]
    val_cost = 32 * 1  # PGD-1 on 32 validation examples
    assert [r["cost/eval_grad_evals"] for r in rows] == [(val_cost + 2 * GRAD_ALIGN_SIZE) * t for t in (1, 2)]
    assert all(-1.0 <= r["train/grad_align"] <= 1.0 for r in rows)
    assert run.trainer.grad_align(1) == run.trainer.grad_align(1)  # a function of (seed, round)
    # Two points almost at x: almost the same gradient; two far-apart points of a wide ball: less aligned.
    x, y = digits_splits.test_x[:100], digits_splits.test_y[:100]
    g = torch.Generator().manual_seed(0)
    near = grad_alignment(digits_model, x, y, eps=1e-4, norm="linf", generator=g)
    far = grad_alignment(digits_model, x, y, eps=0.3, norm="linf", generator=g)
    assert near > 0.99 and far < near - 0.05, (near, far)
    assert all(p.grad is None for p in digits_model.parameters()) and not digits_model.training


def test_a_schedule_carries_the_generators_hyperparameters(tmp_path, digits_splits):
    path = tmp_path / "s.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["round", "hp/gen_unroll", "hp/gen_final_steps", "hp/gen_step_ratio", "hp/gen_final_ratio"],
                                 [1, 1, 0, 0.7, 0.5], [2, 3, 2, 0.3, 0.25]])
    run = TrainingRun(tiny(method="meta-generator", rounds=2, controller="replay", schedule=str(path), co_guard=False),
                      splits=digits_splits)
    rows = [run.step() for _ in range(2)]
    assert [(r["hp/gen_unroll"], r["hp/gen_final_steps"], r["hp/gen_step_ratio"], r["hp/gen_final_ratio"]) for r in rows] == \
        [(1, 0, 0.7, 0.5), (3, 2, 0.3, 0.25)]
    # per example: round 1 = first read + 1 loss term + update; round 2 = first read + 2 reads + the last step's
    # loss term + 1 paid final step + update
    per_round = [2 * 32 * (1 + 1 + 1), 2 * 32 * (1 + 2 + 1 + 1 + 1)]
    assert [r["cost/grad_evals"] for r in rows] == [per_round[0], per_round[0] + per_round[1]]
    with pytest.raises(UserError, match="gen_unroll must be an integer >= 1"):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([["round", "hp/gen_unroll"], [1, 0], [2, 1]])
        tiny(method="meta-generator", rounds=2, controller="replay", schedule=str(path))


def test_a_recursive_generator_transfers_and_the_noise_control_has_none(tmp_path, digits_splits, digits_model):
    from metaadv.evaluation import evaluate_model

    run_training(tiny(method="meta-generator", rounds=1, gen_noise=True), tmp_path / "rec")
    run_training(tiny(method="meta-generator", rounds=1, gen_arch="noise"), tmp_path / "noise")
    attacks = transfer_attacks(str(tmp_path / "rec"), tmp_path / "rec")
    x, y = digits_splits.test_x[:60], digits_splits.test_y[:60]
    report = evaluate_model(digits_model, x, y, eps=0.2, attacks="fgsm", checks=False, transfer=attacks)
    (acc,) = report["transfer"].values()
    assert 0 <= acc < report["clean_acc"]  # K = 2 steps of a (briefly trained) soft-sign attack hurt an undefended model
    with pytest.raises(UserError, match="uniform-noise control"):
        transfer_attacks(str(tmp_path / "noise"), tmp_path / "noise")
