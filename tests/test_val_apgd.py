"""Validation with the reference APGD-CE (issue 21, fault 7): ``val_attack: apgd-ce`` rates a model
no higher than PGD from one fixed start, counts its passes, and is a pure function of (seed, round)."""

from __future__ import annotations

import pytest
import torch

from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training.run import TrainingRun
from metaadv.training.validation import pgd_accuracy

pytest.importorskip("pyautoattack")

EPS, N, ITERS = 0.12, 100, 10
CONFIG = {"dataset": "digits", "method": "pgd-at", "rounds": 1, "steps_per_round": 1, "batch_size": 20, "eps": EPS,
          "val_size": N, "val_attack": "apgd-ce", "val_apgd_iters": ITERS, "device": "cpu"}


@pytest.fixture
def trainer(digits_splits, trained_digits_state):
    run = TrainingRun(TrainConfig.from_dict(CONFIG), splits=digits_splits)
    run.trainer.model.load_state_dict(trained_digits_state)  # a clean-trained net: PGD-1 overrates it
    return run.trainer


def test_apgd_validation_rates_lower_than_pgd_and_counts_its_passes(trainer):
    x, y, model = trainer.val_x, trainer.val_y, trainer.model
    pgd1 = pgd_accuracy(model, x, y, eps=EPS, steps=1)
    pgd10 = pgd_accuracy(model, x, y, eps=EPS, steps=10)
    before = trainer.eval_grad_evals
    row = trainer.validate(3)
    # PGD from one fixed start overrates the model; APGD-CE finds what it missed.
    assert row["val/robust_acc"] <= pgd10 and row["val/robust_acc"] < pgd1 - 0.05
    # One gradient at the random start and one per iteration, for each example classified correctly.
    correct = round(row["val/clean_acc"] * N)
    assert correct > N // 2 and trainer.eval_grad_evals - before == (ITERS + 1) * correct


def test_apgd_validation_is_a_function_of_seed_and_round_and_leaves_the_global_rng_alone(trainer):
    state = torch.get_rng_state()
    first = trainer.validate(3)
    assert torch.equal(torch.get_rng_state(), state)  # the reference reseeds torch's generator: restored
    assert trainer.validate(3) == first
    assert trainer.eval_grad_evals == 2 * (ITERS + 1) * round(first["val/clean_acc"] * N)


def test_apgd_validation_without_the_eval_extra_is_one_line(monkeypatch, digits_splits):
    import metaadv.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "apgd_available", lambda: False)
    with pytest.raises(UserError, match=r"val_attack apgd-ce .*pip install -e '\.\[eval\]'"):
        TrainingRun(TrainConfig.from_dict(CONFIG), splits=digits_splits)
    with pytest.raises(UserError, match="unknown val_attack"):
        TrainConfig.from_dict({**CONFIG, "val_attack": "aa"})
