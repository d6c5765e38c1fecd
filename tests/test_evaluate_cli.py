"""``metaadv evaluate`` end to end on a tiny digits checkpoint."""

from __future__ import annotations

import json
import os

import pytest
import torch

from metaadv.cli import main
from metaadv.config import TrainConfig
from metaadv.evaluation import DEFAULT_N, pyautoattack_available, robust
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
    attacks = "fgsm,pgd,autoattack" if pyautoattack_available() else "fgsm,pgd"
    rc, out, _ = _evaluate(capsys, checkpoint, *FAST, "--attacks", attacks, "--aa-version", "fast", "--json")
    assert rc == 0
    r = json.loads(out)
    assert {"clean_acc", "robust_acc", "per_attack", "eps", "norm", "n", "checks", "seconds", "checkpoint", "dataset"} <= set(r)
    assert set(r["per_attack"]) == set(attacks.split(","))
    for value in [r["clean_acc"], r["robust_acc"], *r["per_attack"].values()]:
        assert 0.0 <= value <= 1.0
    assert r["robust_acc"] <= min(r["per_attack"].values()) <= r["clean_acc"]
    assert (r["eps"], r["norm"], r["n"], r["dataset"]) == (0.3, "linf", 40, "digits")  # from the checkpoint's config
    assert all(set(c) == {"status", "detail"} and c["status"] in ("passed", "failed", "skipped") for c in r["checks"].values())
    assert isinstance(r["trusted"], bool) and r["untrusted_reasons"] == [] and r["n_default"] is False
    assert r["autoattack"] == ("ran" if "autoattack" in attacks else "not requested")
    assert r["attacks"]["pgd"] == {"steps": 5, "restarts": 2, "step_size": pytest.approx(2.5 * 0.3 / 5), "broken_if": "any iterate"}


def test_flags_override_the_checkpoint_and_out_matches_stdout(checkpoint, capsys, tmp_path):
    report = tmp_path / "report.json"
    rc, out, _ = _evaluate(capsys, checkpoint / "checkpoint.pt", *FAST, "--attacks", "pgd", "--eps", "0.05",
                           "--norm", "l2", "--no-checks", "--json", "--out", report)
    assert rc == 0
    r = json.loads(out)
    assert (r["eps"], r["norm"], list(r["per_attack"])) == (0.05, "l2", ["pgd"])
    assert {c["status"] for c in r["checks"].values()} == {"skipped"} and r["trusted"]
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
    (lambda ck, tmp: [ck, "--n", "many"], "--n must be >= 1 or 'all'"),
    (lambda ck, tmp: [ck, "--aa-version", "plus", "--aa-impl", "art"], "version 'plus' for --aa-impl art"),
    (lambda ck, tmp: [ck, "--aa-impl", "foolbox"], "unknown AutoAttack implementation"),
])
def test_bad_input_exits_2_with_one_line(checkpoint, capsys, tmp_path, make_args, message):
    rc, out, err = _evaluate(capsys, *make_args(checkpoint, tmp_path), "--device", "cpu")
    assert rc == 2 and out == ""
    assert err.startswith("metaadv: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_autoattack_asked_for_without_the_extra_names_the_extra(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(robust, "aa_available", lambda impl="pyautoattack": False)
    rc, _, err = _evaluate(capsys, checkpoint, "--attacks", "autoattack", "--device", "cpu")
    assert rc == 2 and "pip install -e '.[eval]'" in err and len(err.strip().splitlines()) == 1


def test_default_autoattack_missing_is_in_the_verdict_and_exits_3(checkpoint, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(robust, "aa_available", lambda impl="pyautoattack": False)
    with pytest.warns(UserWarning, match="AutoAttack missing"):
        rc, out, err = _evaluate(capsys, checkpoint, *FAST)
    assert rc == 3
    robust_line = next(line for line in out.splitlines() if line.startswith("robust"))
    assert "UNTRUSTED" in robust_line and "autoattack missing" in robust_line and "MISSING" in robust_line
    report = tmp_path / "r.json"
    with pytest.warns(UserWarning, match="AutoAttack missing"):
        rc, out, _ = _evaluate(capsys, checkpoint, *FAST, "--json", "--out", report)
    r = json.loads(out)
    assert rc == 3 and r["autoattack"] == "missing" and r["trusted"] is False and json.loads(report.read_text()) == r


class _NoiseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.randn(grad.shape, generator=torch.Generator().manual_seed(0), dtype=grad.dtype)


class _NoiseGradient(torch.nn.Module):
    """The checkpoint's predictions, with an input gradient that is pure noise."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_NoiseGrad.apply(x))


def test_masked_gradients_make_the_verdict_untrusted_and_exit_3(checkpoint, capsys, monkeypatch):
    import metaadv.checkpoint as ck

    build = ck.build_checkpoint_model
    monkeypatch.setattr(ck, "build_checkpoint_model", lambda payload: _NoiseGradient(build(payload)))
    with pytest.warns(UserWarning, match="check unbounded_attack_succeeds failed"):
        rc, out, err = _evaluate(capsys, checkpoint, *FAST, "--attacks", "fgsm,pgd")
    assert rc == 3
    assert "UNTRUSTED: check unbounded_attack_succeeds failed" in next(l for l in out.splitlines() if l.startswith("robust"))
    assert "FAIL  unbounded_attack_succeeds" in out and "verdict     UNTRUSTED" in out


def test_skipped_check_is_counted_apart_and_default_n_is_stated(checkpoint, capsys):
    rc, out, _ = _evaluate(capsys, checkpoint, "--attacks", "pgd", "--pgd-steps", "3", "--pgd-restarts", "1",
                           "--device", "cpu")
    assert rc == 0
    assert "checks      5/5 passed, 1 skipped" in out and "skip  pgd_not_weaker_than_fgsm" in out
    threat = next(l for l in out.splitlines() if l.startswith("threat"))
    assert "(default" in threat and "verdict     trusted" in out
    rc, out, _ = _evaluate(capsys, checkpoint, "--attacks", "fgsm", "--no-checks", "--device", "cpu", "--json")
    r = json.loads(out)
    assert r["n_default"] is True and r["n"] == min(DEFAULT_N, r["split_size"])
    rc, out, _ = _evaluate(capsys, checkpoint, "--attacks", "fgsm", "--no-checks", "--device", "cpu", "--json", "--n", "all")
    r = json.loads(out)
    assert r["n_default"] is False and r["n"] == r["split_size"]


def test_progress_bars_show_on_a_terminal_and_not_with_no_progress(checkpoint, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    rc, _, err = _evaluate(capsys, checkpoint, *FAST, "--attacks", "fgsm,pgd", "--no-checks", "--batch-size", "8")
    assert rc == 0 and "fgsm" in err and "pgd" in err and "100%" in err
    rc, _, err = _evaluate(capsys, checkpoint, *FAST, "--attacks", "fgsm,pgd", "--no-checks", "--no-progress")
    assert rc == 0 and "100%" not in err
