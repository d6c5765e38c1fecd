"""Checkpoints: safe loading, clear refusals, and the public load_model / load_dataset API."""

import pytest
import torch

import metaadv
from metaadv.checkpoint import read_checkpoint, save_checkpoint
from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.training.run import run_training

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels


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


def test_staging_folders_of_killed_processes_are_removed_by_the_next_one(tmp_path, monkeypatch):
    """Ray stops a trial inside ``report``; the staging folder it held must not outlive it for good."""
    import os
    import subprocess
    import sys
    import time

    from metaadv import checkpoint

    monkeypatch.setattr(checkpoint.tempfile, "tempdir", str(tmp_path))
    code = ("import os\nfrom metaadv.checkpoint import staging_folder\n"
            "with staging_folder() as f:\n    (f / 'checkpoint.pt').write_text('x')\n    print(f, flush=True)\n"
            "    os._exit(0)  # killed mid-report: no cleanup runs\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
              .stdout.strip() for _ in range(2)]
    assert all(os.path.isdir(f) for f in killed)
    old = time.time() - 2 * checkpoint.STAGING_STALE_S
    os.utime(killed[0], (old, old))  # the other is recent: a process this one cannot see may still use it
    alive = tmp_path / f"{checkpoint.STAGING_PREFIX}{os.getppid()}-live"
    alive.mkdir()
    os.utime(alive, (old, old))
    with checkpoint.staging_folder() as folder:
        assert folder.parent == tmp_path and folder.name.startswith(f"{checkpoint.STAGING_PREFIX}{os.getpid()}-")
        assert not os.path.exists(killed[0]) and os.path.isdir(killed[1]) and alive.is_dir()
        (folder / "checkpoint.pt").write_text("x")
    assert not folder.exists()
