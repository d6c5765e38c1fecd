"""The round loop's contract: controllers, per-method steps and costs, rows, resume, checkpoints."""

import math

import pytest
import torch

from metaadv.config import TrainConfig
from metaadv.data import load_splits
from metaadv.errors import UserError
from metaadv.models import DigitsNet
from metaadv.training import HParams, ScheduleController
from metaadv.training.methods import METHOD_STEPS, StepContext
from metaadv.training.metrics import read_metrics_csv
from metaadv.training.run import TrainingRun, run_training

from .resume_helpers import interrupted_and_full, without_seconds

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels

TINY = {"dataset": "digits", "rounds": 3, "steps_per_round": 4, "batch_size": 32, "val_size": 64, "val_pgd_steps": 3, "steps": 3}


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits")


def tiny(**changes):
    return TrainConfig.from_dict({**TINY, **changes})


# --- controllers -------------------------------------------------------------------------------

def test_eps_ramps_linearly_then_holds():
    c = ScheduleController(tiny(rounds=6, eps=0.3, eps_ramp_rounds=3))
    assert [round(c.propose(r).eps, 6) for r in range(5)] == [0.1, 0.2, 0.3, 0.3, 0.3]


def test_no_ramp_means_constant_eps():
    c = ScheduleController(tiny(eps=0.2, eps_ramp_rounds=0))
    assert {c.propose(r).eps for r in range(3)} == {0.2}


def test_step_and_cosine_lr():
    step = ScheduleController(tiny(rounds=8, lr=0.1, lr_schedule="step", lr_milestones=[0.5, 0.75], lr_gamma=0.1))
    assert [step.propose(r).lr for r in (0, 3, 4, 5, 6, 7)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cos = ScheduleController(tiny(rounds=4, lr=0.1, lr_schedule="cosine"))
    assert [cos.propose(r).lr for r in range(4)] == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * r / 4)) for r in range(4)])


def test_hparams_reject_out_of_range():
    with pytest.raises(UserError, match="eps must be >= 0"):
        HParams(eps=-0.1)
    with pytest.raises(UserError, match="steps"):
        HParams(steps=0)


def test_eps_bound_is_one_for_linf_and_the_image_norm_for_l2():
    assert tiny(dataset="mnist5k", norm="l2", eps=2.0).eps == 2.0  # Miyato et al.'s VAT radius on MNIST
    assert tiny(dataset="mnist5k", norm="l2", eps=28.0).eps == 28.0  # sqrt(1 * 28 * 28): the edge is allowed
    with pytest.raises(UserError, match=r"eps must be in \[0, 28\] for --norm l2 on mnist5k"):
        tiny(dataset="mnist5k", norm="l2", eps=28.01)
    with pytest.raises(UserError, match=r"eps must be in \[0, 55.43\] for --norm l2 on cifar10"):
        tiny(dataset="cifar10", norm="l2", eps=56.0)
    assert tiny(norm="linf", eps=1.0).eps == 1.0
    with pytest.raises(UserError, match=r"eps must be in \[0, 1\] for --norm linf"):
        tiny(dataset="mnist5k", norm="linf", eps=1.5)
    with pytest.raises(UserError, match="eps must be >= 0"):
        tiny(norm="l2", eps=-0.5)
    with pytest.raises(UserError, match=r"bad value 2 in the --policy-eps grid: eps must be in \[0, 1\]"):
        tiny(norm="linf", eps=0.6, policy_eps=[0.5, 2.0])
    assert tiny(dataset="mnist5k", norm="l2", eps=2.0, policy_eps=[0.5, 2.0]).policy_eps == (0.5, 2.0)


def test_config_rejects_unknown_keys_and_fills_method_defaults():
    with pytest.raises(UserError, match="unknown config key"):
        TrainConfig.from_dict({"epsilon": 0.3})
    assert TrainConfig.from_dict({"method": "fast-at"}).step_ratio == 1.25
    assert TrainConfig.from_dict({"method": "fast-at", "step_ratio": 1.0}).step_ratio == 1.0


# --- per-method steps: loss and cost accounting ------------------------------------------------

@pytest.mark.parametrize("method, adv_mix, expected", [
    ("standard", 1.0, 1), ("pgd-at", 1.0, 3 + 1), ("pgd-at", 0.5, 3 + 2), ("fast-at", 1.0, 1 + 1),
    ("trades", 1.0, 3 + 2), ("vat", 1.0, 3 + 2),
])
def test_step_passes_per_example(method, adv_mix, expected, digits):
    torch.manual_seed(0)
    model = DigitsNet()
    x, y = digits.train_x[:16], digits.train_y[:16]
    ctx = StepContext(norm="linf", generator=torch.Generator().manual_seed(0))
    out = METHOD_STEPS[method](model, x, y, HParams(eps=0.1, steps=3, adv_mix=adv_mix), ctx)
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    assert out.passes == expected
    assert out.adv_logits.shape == (16, 10)


def test_zero_eps_spends_no_attack_passes(digits):
    model = DigitsNet()
    ctx = StepContext(norm="linf", generator=torch.Generator().manual_seed(0))
    out = METHOD_STEPS["pgd-at"](model, digits.train_x[:8], digits.train_y[:8], HParams(eps=0.0, steps=7), ctx)
    assert out.passes == 1


def test_adversarial_examples_raise_training_loss(digits):
    torch.manual_seed(0)
    run = TrainingRun(tiny(method="standard", rounds=3, steps_per_round=30), splits=digits)
    for _ in range(3):
        run.step()
    model, x, y = run.trainer.model, digits.train_x[:64], digits.train_y[:64]
    ctx = StepContext(norm="linf", generator=torch.Generator().manual_seed(0))
    clean = METHOD_STEPS["standard"](model, x, y, HParams(), ctx).loss.item()
    adv = METHOD_STEPS["pgd-at"](model, x, y, HParams(eps=0.2, steps=5), ctx).loss.item()
    assert adv > clean + 0.1


def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4, momentum=0.5), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))


def _capture_attack(monkeypatch) -> list:
    """Record the adversarial examples each step's PGD returns."""
    import metaadv.training.methods as methods

    made, real = [], methods.pgd
    monkeypatch.setattr(methods, "pgd", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    return made


def test_trades_keeps_clean_and_adversarial_batchnorm_statistics_apart(digits, monkeypatch):
    """Running statistics after a TRADES step = a clean pass, then an adversarial pass; not one
    concatenated batch, nor the other order (the paper's code: clean first)."""
    import copy

    model, x, y = _bn_net().train(), digits.train_x[:32], digits.train_y[:32]
    before = copy.deepcopy(model)
    made = _capture_attack(monkeypatch)
    ctx = StepContext(norm="linf", generator=torch.Generator().manual_seed(0))
    METHOD_STEPS["trades"](model, x, y, HParams(eps=0.3, steps=3), ctx)
    (x_adv,) = made

    def stats_after(*batches):
        ref = copy.deepcopy(before)
        with torch.no_grad():
            for b in batches:
                ref(b)
        return torch.cat([ref[1].running_mean, ref[1].running_var])

    got = torch.cat([model[1].running_mean, model[1].running_var])
    assert torch.allclose(got, stats_after(x, x_adv), rtol=0, atol=1e-6)
    for wrong in (stats_after(torch.cat([x, x_adv])), stats_after(x_adv, x)):
        assert (got - wrong).abs().max() > 1e-3  # measured 0.25 and 0.011: far beyond float rounding (1e-7)
    assert model[1].num_batches_tracked.item() == 2


def test_trades_attack_starts_from_x_plus_a_thousandth_of_gaussian_noise(monkeypatch):
    import importlib

    pgd_module = importlib.import_module("metaadv.attacks.pgd")  # the module; the package's name `pgd` is the function
    starts, real = [], pgd_module.input_grad
    monkeypatch.setattr(pgd_module, "input_grad", lambda m, x, *a: starts.append(x.detach().clone()) or real(m, x, *a))
    torch.manual_seed(0)
    model = DigitsNet()
    x = 0.25 + 0.5 * torch.rand((64, 1, 8, 8), generator=torch.Generator().manual_seed(1))  # no range clamp
    ctx = StepContext(norm="linf", generator=torch.Generator().manual_seed(0))
    METHOD_STEPS["trades"](model, x, torch.zeros(64, dtype=torch.long), HParams(eps=0.3, steps=3), ctx)
    noise = starts[0] - x  # where the first attack step's gradient is taken
    assert 0.00095 < noise.std().item() < 0.00105  # 4,096 draws: the estimate's own spread is 1%
    assert abs(noise.mean().item()) < 1e-4  # uniform in the eps-ball would be std 0.17


# --- the round and its row ---------------------------------------------------------------------

ROW_KEYS = {"round", "step", "epoch", "train/loss", "train/adv_acc", "val/clean_acc", "val/robust_acc", "val/eps",
            "hp/eps", "hp/step_ratio", "hp/step_size", "hp/steps", "hp/lr", "hp/weight_decay", "hp/trades_beta",
            "hp/adv_mix", "cost/grad_evals", "cost/eval_grad_evals", "cost/reward_grad_evals", "cost/seconds"}


def test_row_has_the_contract_columns_and_costs_add_up(digits):
    run = TrainingRun(tiny(method="pgd-at", steps=3), splits=digits)
    rows = [run.step() for _ in range(2)]
    assert ROW_KEYS <= set(rows[0])
    assert [r["round"] for r in rows] == [1, 2]
    # round 1 ramps eps from 0 over the first 0.2 of the 3 rounds (its steps start at 0, 1/12, 2/12 and
    # 3/12 of the run: eps 0, 0.125, 0.25, 0.3); 4 steps of 32 examples, 3 attack steps + 1 update each
    assert (rows[0]["hp/eps_start"], rows[0]["hp/eps"]) == pytest.approx((0.0, 0.3))
    # (the first step, at eps 0, trains on clean examples: one pass each)
    assert rows[0]["cost/grad_evals"] == 32 * 1 + 3 * 32 * (3 + 1)
    assert rows[1]["cost/grad_evals"] == rows[0]["cost/grad_evals"] + 4 * 32 * (3 + 1)
    assert rows[1]["cost/reward_grad_evals"] == 0  # only the policy controller checks a reward
    assert rows[1]["cost/seconds"] > rows[0]["cost/seconds"] > 0
    assert rows[0]["val/eps"] == 0.3 and 0 <= rows[1]["val/robust_acc"] <= rows[1]["val/clean_acc"] <= 1


def test_standard_training_learns(digits):
    run = TrainingRun(tiny(method="standard", rounds=4, steps_per_round=20, lr=3e-3), splits=digits)
    rows = [run.step() for _ in range(4)]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert rows[-1]["val/clean_acc"] > 0.8


def test_epoch_rounds_cover_the_training_set(digits):
    run = TrainingRun(tiny(method="standard", steps_per_round=0, rounds=1, batch_size=128), splits=digits)
    row = run.step()
    assert row["epoch"] == pytest.approx(1.0)
    assert row["step"] == -(-len(digits.train_y) // 128)


def test_semi_supervised_vat_hides_the_requested_fraction(digits):
    run = TrainingRun(tiny(method="vat", unlabeled_fraction=0.75), splits=digits)
    hidden = (~run.trainer.labeled).float().mean().item()
    assert hidden == pytest.approx(0.75, abs=0.01)
    assert math.isfinite(run.step()["train/loss"])
    with pytest.raises(UserError, match="needs --method vat"):
        tiny(method="pgd-at", unlabeled_fraction=0.5)


def test_semi_supervised_vat_keeps_exactly_n_labels_class_balanced(digits):
    run = TrainingRun(tiny(method="vat", labels=25), splits=digits)
    kept = digits.train_y[run.trainer.labeled.cpu()]
    assert len(kept) == 25
    assert torch.bincount(kept, minlength=10).tolist() == [3] * 5 + [2] * 5
    again = TrainingRun(tiny(method="vat", labels=25), splits=digits).trainer.labeled
    assert torch.equal(again, run.trainer.labeled)  # seeded
    with pytest.raises(UserError, match="needs 201 labelled examples of class 0"):
        TrainingRun(tiny(method="vat", labels=2010), splits=digits)
    for bad in ({"method": "pgd-at", "labels": 10}, {"method": "vat", "labels": 10, "unlabeled_fraction": 0.5}):
        with pytest.raises(UserError, match="labels needs --method vat"):
            tiny(**bad)


def test_fast_at_reverts_and_stops_on_catastrophic_overfitting(digits, monkeypatch):
    run = TrainingRun(tiny(method="fast-at", rounds=5), splits=digits)
    robust = iter([0.6, 0.2])
    real_validate = run.trainer.validate
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real_validate(*a), "val/robust_acc": next(robust)})
    run.step()
    weights = {k: v.clone() for k, v in run.trainer.model.state_dict().items()}
    with pytest.warns(UserWarning, match="catastrophic overfitting"):
        row = run.step()
    assert row["train/co_detected"] == 1 and run.done and run.round == 2
    assert all(torch.equal(weights[k], v) for k, v in run.trainer.model.state_dict().items())


def _weights(run) -> dict:
    return {k: v.clone() for k, v in run.trainer.model.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _fast_at_with_robust_acc(digits, monkeypatch, robust: list[float]):
    run = TrainingRun(tiny(method="fast-at", rounds=6, co_threshold=0.2), splits=digits)
    values = iter(robust)
    real_validate = run.trainer.validate
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real_validate(*a), "val/robust_acc": next(values)})
    return run


def test_fast_at_guard_reverts_to_the_best_round_not_the_previous_one(digits, monkeypatch):
    run = _fast_at_with_robust_acc(digits, monkeypatch, [0.4, 0.6, 0.5, 0.3])  # round 4: 0.3 fell 0.3 below 0.6
    snapshots = []
    for _ in range(3):
        run.step()
        snapshots.append(_weights(run))
    assert not _same_weights(snapshots[1], snapshots[2])  # round 3 trained on: reverting to it would differ
    with pytest.warns(UserWarning, match="reverted to round 2"):
        row = run.step()
    assert row["train/co_detected"] == 1 and run.done
    assert _same_weights(_weights(run), snapshots[1])


def test_fast_at_guard_best_round_survives_a_resume(digits, monkeypatch, tmp_path):
    from metaadv.checkpoint import read_checkpoint

    run = _fast_at_with_robust_acc(digits, monkeypatch, [0.6, 0.5])
    run.step()
    best = _weights(run)
    run.step()
    run.save(tmp_path / "checkpoint.pt")
    resumed = _fast_at_with_robust_acc(digits, monkeypatch, [0.2])  # the third round collapses
    resumed.load_state_dict(read_checkpoint(tmp_path / "checkpoint.pt"))
    with pytest.warns(UserWarning, match="reverted to round 1"):
        resumed.step()
    assert _same_weights(_weights(resumed), best)


def test_fast_at_guard_catches_a_run_that_never_became_robust(digits, monkeypatch):
    # No best to fall from: FGSM training accuracy far above validation PGD accuracy is the sign,
    # and only once eps has reached its target (during the ramp the two eps differ).
    run = TrainingRun(tiny(method="fast-at", rounds=6, eps_ramp_rounds=2, co_gap=0.5), splits=digits)
    real_round, real_validate = run.trainer.train_round, run.trainer.validate
    monkeypatch.setattr(run.trainer, "train_round", lambda *a, **k: {**real_round(*a, **k), "train/adv_acc": 0.9})
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real_validate(*a), "val/robust_acc": 0.05})
    rows = [run.step()]
    with pytest.warns(UserWarning, match="catastrophic overfitting"):
        rows.append(run.step())
    assert [r["train/co_detected"] for r in rows] == [0, 1]  # round 1 ramps (eps 0.15), round 2 is at 0.3
    assert run.done and "exceeds val PGD accuracy" in run.stopped_reason


def test_fast_at_guard_leaves_a_small_gap_alone(digits, monkeypatch):
    run = TrainingRun(tiny(method="fast-at", rounds=3, eps_ramp_rounds=0, co_gap=0.5), splits=digits)
    real_round, real_validate = run.trainer.train_round, run.trainer.validate
    monkeypatch.setattr(run.trainer, "train_round", lambda *a, **k: {**real_round(*a, **k), "train/adv_acc": 0.7})
    monkeypatch.setattr(run.trainer, "validate", lambda *a: {**real_validate(*a), "val/robust_acc": 0.4})
    assert [run.step()["train/co_detected"] for _ in range(3)] == [0, 0, 0] and not run.stopped_reason


def test_nan_loss_raises_diverged(digits, monkeypatch):
    from metaadv.training import DivergedError

    run = TrainingRun(tiny(method="standard"), splits=digits)
    real = run.trainer.method.step
    run.trainer.method.step = lambda *a: type(real(*a))(torch.tensor(float("nan")), real(*a).adv_logits, 1)
    with pytest.raises(DivergedError, match="NaN|nan"):
        run.step()


# --- checkpoints and resume --------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pgd-at", "trades"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, method):
    config = tiny(method=method, rounds=3, optimizer="sgd", lr=0.05)
    full, resumed, written = interrupted_and_full(config, tmp_path)
    assert len(written) == 2
    assert without_seconds(resumed.rows) == without_seconds(full.rows)
    assert without_seconds(read_metrics_csv(tmp_path / "part" / "metrics.csv")) == without_seconds(full.rows)
    for a, b in zip(full.trainer.model.parameters(), resumed.trainer.model.parameters()):
        assert torch.equal(a, b)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    config = tiny(rounds=1)
    run_training(config, tmp_path / "r")
    before = (tmp_path / "r" / "metrics.csv").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        run_training(config, tmp_path / "r")
    assert (tmp_path / "r" / "metrics.csv").read_bytes() == before


def test_resume_with_changed_settings_is_refused(tmp_path):
    run_training(tiny(rounds=1), tmp_path / "r")
    with pytest.raises(UserError, match="differ"):
        run_training(tiny(rounds=1, lr=0.5), tmp_path / "r", resume=True)


def test_smooth_ramp_rises_within_each_ramp_round(digits):
    c = ScheduleController(tiny(rounds=5, eps=0.3, eps_ramp_rounds=3, eps_ramp_by="step"))
    hps = [c.propose(r) for r in range(4)]
    assert [(round(h.eps_start, 6), round(h.eps, 6)) for h in hps[:3]] == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]
    assert hps[3].eps_start is None and hps[3].as_row()["hp/eps_start"] == 0.3
    assert hps[0].at_fraction(0.5).eps == pytest.approx(0.05)
    assert ScheduleController(tiny(eps_ramp_rounds=3, eps_ramp_by="round")).propose(0).eps_start is None


def test_trainer_uses_the_within_round_eps(digits, monkeypatch):
    run = TrainingRun(tiny(method="pgd-at", rounds=1, steps_per_round=4, eps_ramp_rounds=1), splits=digits)
    seen = []
    real = run.trainer.method.step
    monkeypatch.setattr(run.trainer.method, "step", lambda m, x, y, hp, ctx: seen.append(hp.eps) or real(m, x, y, hp, ctx))
    run.step()
    assert seen == pytest.approx([0.075, 0.15, 0.225, 0.3])
