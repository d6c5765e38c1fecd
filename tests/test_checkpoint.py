"""Checkpoints: safe loading, clear refusals, and the public load_model / load_dataset API."""

import pytest
import torch

import metaadv
from metaadv.checkpoint import read_checkpoint, save_checkpoint
from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training.run import run_training


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    config = TrainConfig.from_dict({"dataset": "digits", "rounds": 1, "steps_per_round": 3, "val_size": 32,
                                    "val_pgd_steps": 2, "steps": 2})
    run = run_training(config, out)
    return out, run


def test_load_model_gives_the_trained_classifier_in_eval_mode(run_dir):
    out, run = run_dir
    model = metaadv.load_model(out)  # a run folder works as well as the file
    assert not model.training
    x, y = metaadv.load_dataset("digits", "test")
    with torch.no_grad():
        logits = model(x[:20])
        expected = run.trainer.model.eval()(x[:20])
    assert logits.shape == (20, 10)
    assert torch.allclose(logits, expected)
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))  # logits, not probabilities


def test_checkpoint_loads_with_weights_only(run_dir):
    out, _ = run_dir
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["format"] == "metaadv-checkpoint" and payload["arch"] == "digits-net"


def test_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        metaadv.load_model(bad)


class Evil:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "metaadv-checkpoint", "version": 1, "obj": Evil()}, path)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_checkpoint(path)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(UserError, match="not a metaadv checkpoint"):
        read_checkpoint(path)


def test_weights_of_another_architecture_are_refused(run_dir, tmp_path):
    out, _ = run_dir
    payload = read_checkpoint(out)
    payload["arch"] = "small-cnn"
    payload["model_kwargs"] = {**payload["model_kwargs"], "image_size": 28}
    save_checkpoint({k: v for k, v in payload.items() if k not in ("format", "version")}, tmp_path / "c.pt")
    with pytest.raises(UserError, match="do not fit"):
        metaadv.load_model(tmp_path / "c.pt")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        metaadv.load_model(tmp_path / "nowhere")
