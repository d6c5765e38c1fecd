"""Mixed precision: bf16 autocast in attack and training steps only, fp32 everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training import precision
from metaadv.training.precision import AutocastForward, resolve_precision
from metaadv.training.run import TrainingRun

CPU = torch.device("cpu")


def _force_native(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_auto_picks_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    _force_native(monkeypatch, avx512_bf16=False, amx=False)
    assert not precision.native_bf16(CPU)
    assert resolve_precision("auto", CPU) == "fp32"


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True)])
def test_auto_picks_bf16_where_the_cpu_computes_it(monkeypatch, avx512_bf16, amx):
    _force_native(monkeypatch, avx512_bf16, amx)
    assert resolve_precision("auto", CPU) == "bf16"


def test_explicit_precisions_are_kept_whatever_the_hardware(monkeypatch):
    _force_native(monkeypatch, avx512_bf16=False, amx=False)
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"


@pytest.mark.parametrize("native", [False, True])
def test_an_explicit_bf16_request_says_in_one_line_when_it_is_emulated(monkeypatch, native):
    _force_native(monkeypatch, avx512_bf16=native, amx=False)
    line = precision.emulated_bf16_warning("bf16", CPU)
    assert (line is None) == native
    if not native:
        assert "\n" not in line and "emulated" in line and "slower than fp32" in line
    assert precision.emulated_bf16_warning("fp32", CPU) is None
    assert precision.emulated_bf16_warning("auto", CPU) is None  # auto picks fp32 there: nothing to warn of


def test_train_and_study_warn_of_emulated_bf16_before_they_start(monkeypatch, capsys, tmp_path):
    import metaadv.study as study_engine
    from metaadv.cli import main

    _force_native(monkeypatch, avx512_bf16=False, amx=False)

    def no_study(*args, **kwargs):  # the warning must come before any trial starts
        assert "emulated" in capsys.readouterr().err
        raise SystemExit(0)

    monkeypatch.setattr(study_engine, "run_study", no_study)
    with pytest.raises(SystemExit):
        main(["study", "learned_vs_searched", "--size", "tiny", "--precision", "bf16", "--out", str(tmp_path / "s")])
    assert main(["train", "--dataset", "digits", "--rounds", "1", "--steps-per-round", "1", "--val-size", "20",
                 "--device", "cpu", "--precision", "bf16", "--quiet", "--out", str(tmp_path / "run")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "bf16" in ln]
    assert len(err) == 1 and "emulated" in err[0]


def test_unknown_precision_is_a_one_line_config_error():
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        TrainConfig.from_dict({"precision": "fp16"})


def test_autocast_forward_computes_in_bf16_and_returns_fp32_logits(digits_model, digits_splits):
    x, y = digits_splits.split("test")
    x, y = x[:64], y[:64]
    seen = []
    digits_model.net[1].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    wrapped = AutocastForward(digits_model, CPU)
    logits = wrapped(x)
    assert seen == [torch.bfloat16]  # the layer really ran in bf16
    assert logits.dtype == torch.float32
    assert {p.dtype for p in digits_model.parameters()} == {torch.float32}
    # The same function up to bf16 rounding: the predictions almost all agree.
    with torch.no_grad():
        agree = (logits.argmax(1) == digits_model(x).argmax(1)).float().mean().item()
    assert agree >= 0.9


def test_bf16_training_gradient_is_fp32_and_points_the_same_way(digits_model, digits_splits):
    x, y = digits_splits.split("train")
    x, y = x[:128], y[:128]
    model = digits_model.train()
    grads = {}
    for name, m in (("fp32", model), ("bf16", AutocastForward(model, CPU))):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        assert loss.dtype == torch.float32
        loss.backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grads["bf16"].dtype == torch.float32
    cos = F.cosine_similarity(grads["fp32"], grads["bf16"], dim=0).item()
    assert cos > 0.9, f"bf16 gradient cosine to fp32 only {cos:.3f}"


def _run(precision_name: str) -> TrainingRun:
    cfg = TrainConfig.from_dict({"dataset": "digits", "rounds": 2, "steps_per_round": 3, "batch_size": 32,
                                 "val_size": 64, "val_pgd_steps": 2, "steps": 2, "eps": 0.1,
                                 "device": "cpu", "precision": precision_name})
    run = TrainingRun(cfg)
    while not run.done:
        run.step()
    return run


def test_bf16_run_trains_in_bf16_and_keeps_model_state_and_validation_fp32():
    run = _run("bf16")
    t = run.trainer
    assert isinstance(t.step_model, AutocastForward) and t.step_model.model is t.model
    assert [r["run/precision"] for r in run.rows] == ["bf16", "bf16"]
    # Weights, optimizer state and the checkpoint stay fp32 and keep the plain model's keys.
    state = run.state_dict()["trainer"]
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float32}
    assert not any(k.startswith("model.") for k in state["model"])
    exp_avg = [s["exp_avg"] for s in state["optimizer"]["state"].values()]
    assert exp_avg and {v.dtype for v in exp_avg} == {torch.float32}
    # Training moved the weights, and the loss is finite.
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in run.rows)


def test_fp32_is_the_default_and_leaves_the_model_unwrapped():
    run = _run("fp32")
    assert run.trainer.step_model is run.trainer.model
    assert [r["run/precision"] for r in run.rows] == ["fp32", "fp32"]


def test_training_steps_run_under_autocast_and_validation_does_not():
    run = _run("bf16")
    t = run.trainer
    seen = []
    t.model.register_forward_pre_hook(lambda m, i: seen.append(torch.is_autocast_enabled("cpu")))
    t.train_round(run.controller.propose(run.round))
    assert seen and all(seen), "a training or attack forward ran outside autocast"
    seen.clear()
    t.validate()
    assert seen and not any(seen), "validation ran under autocast"


def test_meta_run_records_and_uses_its_precision():
    from metaadv.meta import MetaConfig
    from metaadv.meta.run import MetaRun

    cfg = MetaConfig.from_dict({"dataset": "digits", "method": "adml", "rounds": 1, "steps_per_round": 2,
                                "meta_batch": 2, "val_tasks": 2, "val_pgd_steps": 2, "device": "cpu",
                                "precision": "bf16"})
    run = MetaRun(cfg)
    row = run.step()
    assert row["run/precision"] == "bf16"
    assert torch.isfinite(torch.tensor(row["train/loss"]))
    assert {p.dtype for p in run.learner.model.parameters()} == {torch.float32}
