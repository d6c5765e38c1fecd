"""``metaadv evaluate`` end to end on a tiny digits checkpoint."""

from __future__ import annotations

import json
import os

import pytest
import torch

from metaadv.cli import main
from metaadv.config import TrainConfig
from metaadv.evaluation import art_available, robust
from metaadv.training.run import run_training

FAST = ["--n", "40", "--pgd-steps", "5", "--pgd-restarts", "2", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    # two shared cores: extra threads only spin (the kernel sweep sets METAADV_TEST_THREADS=2)
    torch.set_num_threads(int(os.environ.get("METAADV_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-run")
    config = TrainConfig.from_dict({"dataset": "digits", "rounds": 1, "steps_per_round": 2, "val_size": 50,
                                    "val_pgd_steps": 2, "device": "cpu"})
    run_training(config, out)
    return out


def _evaluate(capsys, *argv):
    rc = main(["evaluate", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_json_report_has_the_required_keys(checkpoint, capsys):
    attacks = "fgsm,pgd,autoattack" if art_available() else "fgsm,pgd"
    rc, out, _ = _evaluate(capsys, checkpoint, *FAST, "--attacks", attacks, "--aa-version", "fast", "--json")
    assert rc == 0
    r = json.loads(out)
    assert {"clean_acc", "robust_acc", "per_attack", "eps", "norm", "n", "checks", "seconds", "checkpoint", "dataset"} <= set(r)
    assert set(r["per_attack"]) == set(attacks.split(","))
    for value in [r["clean_acc"], r["robust_acc"], *r["per_attack"].values()]:
        assert 0.0 <= value <= 1.0
    assert r["robust_acc"] <= min(r["per_attack"].values()) <= r["clean_acc"]
    assert (r["eps"], r["norm"], r["n"], r["dataset"]) == (0.3, "linf", 40, "digits")  # from the checkpoint's config
    assert all(set(c) == {"passed", "detail"} and isinstance(c["passed"], bool) for c in r["checks"].values())
    assert r["attacks"]["pgd"] == {"steps": 5, "restarts": 2, "step_size": pytest.approx(2.5 * 0.3 / 5)}


def test_flags_override_the_checkpoint_and_out_matches_stdout(checkpoint, capsys, tmp_path):
    report = tmp_path / "report.json"
    rc, out, _ = _evaluate(capsys, checkpoint / "checkpoint.pt", *FAST, "--attacks", "pgd", "--eps", "0.05",
                           "--norm", "l2", "--no-checks", "--json", "--out", report)
    assert rc == 0
    r = json.loads(out)
    assert (r["eps"], r["norm"], r["checks"], list(r["per_attack"])) == (0.05, "l2", {}, ["pgd"])
    assert json.loads(report.read_text()) == r


def test_table_and_examples_png(checkpoint, capsys, tmp_path):
    png = tmp_path / "examples.png"
    rc, out, _ = _evaluate(capsys, checkpoint, *FAST, "--attacks", "fgsm,pgd", "--examples", png)
    assert rc == 0
    assert "robust" in out and "clean" in out and "checks" in out and str(png) in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _corrupt(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    return bad


@pytest.mark.parametrize("make_args, message", [
    (lambda ck, tmp: [ck, "--attacks", "pgd,cw"], "unknown attack 'cw'"),
    (lambda ck, tmp: [ck, "--eps", "1.5"], "eps must be in [0, 1]"),
    (lambda ck, tmp: [ck, "--eps", "-0.1"], "eps must be in [0, 1]"),
    (lambda ck, tmp: [ck, "--norm", "l1"], "unknown norm"),
    (lambda ck, tmp: [tmp / "nowhere"], "no checkpoint at"),
    (lambda ck, tmp: [_corrupt(tmp)], "cannot read checkpoint"),
    (lambda ck, tmp: [ck, "--n", "0"], "--n must be >= 1"),
])
def test_bad_input_exits_2_with_one_line(checkpoint, capsys, tmp_path, make_args, message):
    rc, out, err = _evaluate(capsys, *make_args(checkpoint, tmp_path), "--device", "cpu")
    assert rc == 2 and out == ""
    assert err.startswith("metaadv: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_autoattack_asked_for_without_art_names_the_extra(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(robust, "art_available", lambda: False)
    rc, _, err = _evaluate(capsys, checkpoint, "--attacks", "autoattack", "--device", "cpu")
    assert rc == 2 and "pip install -e '.[eval]'" in err and len(err.strip().splitlines()) == 1
