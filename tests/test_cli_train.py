"""`metaadv train` end to end, and bad input: one line, exit 2, nothing written."""

import json

import pytest

from metaadv.cli import main

TINY = ["--dataset", "digits", "--epochs", "2", "--steps-per-round", "3", "--val-size", "32", "--val-pgd-steps", "2", "--steps", "2"]


def test_train_writes_a_run_folder_and_prints_progress(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--method", "trades", "--trades-beta", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("round ") for line in lines) == 2
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.csv", "checkpoint.pt"}
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "trades" and config["trades_beta"] == 3.0


def test_config_file_is_read_and_flags_override_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: fast-at\nlr: 0.002\neps: 0.2\n")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--config", str(cfg), *TINY, "--eps", "0.1", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["lr"], config["eps"], config["step_ratio"]) == ("fast-at", 0.002, 0.1, 1.25)


def _bad(argv, tmp_path, capsys, needle):
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), *TINY, *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("metaadv: error:") and "Traceback" not in err
    assert needle in err
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--method", "magic"], "unknown method"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--eps", "8"], "eps must be in [0, 1]"),
    (["--steps", "0"], "steps must be"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/data"], "does not exist"),
    (["--dataset", "mnist"], "needs --data-dir"),
    (["--controller", "oracle"], "unknown controller"),
    (["--optimizer", "lion"], "unknown optimizer"),
])
def test_bad_flags(argv, needle, tmp_path, capsys):
    _bad(argv, tmp_path, capsys, needle)


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epsilon": 0.3}))
    _bad(["--config", str(cfg)], tmp_path, capsys, "unknown config key(s) epsilon")


def test_unparseable_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: [unclosed\n")
    _bad(["--config", str(cfg)], tmp_path, capsys, "cannot parse config file")


def test_resume_of_a_corrupt_checkpoint_loses_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x00garbage")
    (out / "metrics.csv").write_text("round\n1\n")
    rc = main(["train", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read checkpoint" in err and "Traceback" not in err
    assert (out / "metrics.csv").read_text() == "round\n1\n"


def test_resume_continues_to_the_stored_number_of_rounds(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--quiet"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0  # already complete: nothing to do
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 2


def test_resume_reads_the_config_file_given_again(tmp_path, capsys):
    # --resume with the --config file the run started from: the file is read, not taken for a key,
    # and its values agree with the stored run; a value that disagrees is refused.
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: fast-at\neps: 0.2\n")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--config", str(cfg), *TINY, "--quiet"]) == 0
    assert main(["train", "--out", str(out), "--config", str(cfg), "--resume", "--quiet"]) == 0
    cfg.write_text("method: fast-at\neps: 0.25\n")
    rc = main(["train", "--out", str(out), "--config", str(cfg), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "eps" in err and "Traceback" not in err


def test_l2_eps_beyond_the_all_white_image_norm_is_refused(tmp_path, capsys):
    # digits are 8x8: the L2 bound is sqrt(64) = 8; within it, eps > 1 is an ordinary L2 radius
    _bad(["--norm", "l2", "--eps", "8.5"], tmp_path, capsys, "eps must be in [0, 8] for --norm l2 on digits (sqrt(C*H*W)")
