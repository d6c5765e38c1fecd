"""The CLI's edges: ``--version``, eps flags as fractions, checkpoint paths that are Tune folders."""

from __future__ import annotations

import shutil

import pytest

from metaadv.checkpoint import resolve_checkpoint_path, save_checkpoint
from metaadv.cli import build_parser, main, package_version
from metaadv.errors import UserError


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"metaadv {package_version()}"
    import metaadv

    assert package_version() == metaadv.__version__  # pyproject's version and the package's agree


@pytest.mark.parametrize("argv, field, expected", [
    (["train", "--out", "x", "--eps", "8/255"], "eps", 8 / 255),
    (["train", "--out", "x", "--eps", "0.3"], "eps", 0.3),
    (["meta", "--out", "x", "--eps", " 1 / 5 "], "eps", 0.2),
    (["evaluate", "x", "--eps", "8/255"], "eps", 8 / 255),
    (["evaluate", "x", "--pgd-step-size", "2/255"], "pgd_step_size", 2 / 255),
    (["meta-evaluate", "x", "--eps", "8/255", "0.1"], "eps", [8 / 255, 0.1]),
    (["meta-evaluate", "x", "--autoattack-eps", "8/255"], "autoattack_eps", 8 / 255),
])
def test_eps_flags_take_numbers_and_fractions(argv, field, expected):
    assert getattr(build_parser().parse_args(argv), field) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["8/0", "abc", "8/x", "1/2/3", "nan", "inf", "-inf"])
@pytest.mark.parametrize("argv", [["train", "--out", "{tmp}/run"], ["meta", "--out", "{tmp}/run"], ["evaluate", "x"],
                                  ["meta-evaluate", "x"]])
def test_a_bad_eps_is_one_line_naming_the_flag_not_a_usage_block(argv, value, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, f"--eps={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"metaadv: error: --eps {value!r}: give a finite number or a fraction, e.g. 0.03 or 8/255"
    assert not (tmp_path / "run").exists()


def _tune_trial(folder, rounds):
    for r in range(rounds):
        save_checkpoint({"kind": "train"}, folder / f"checkpoint_{r:06d}" / "checkpoint.pt")
    (folder / "result.json").write_text("{}\n")


def test_tune_trial_experiment_and_study_folders_are_refused_naming_what_to_pass(tmp_path):
    experiment = tmp_path / "study" / "arms" / "fixed" / "fixed"
    _tune_trial(experiment / "metaadv_trial_a_00000", 2)
    _tune_trial(experiment / "metaadv_trial_a_00001", 7)
    (tmp_path / "study" / "study.json").write_text("{}")
    trial = experiment / "metaadv_trial_a_00001"
    with pytest.raises(UserError) as exc:
        resolve_checkpoint_path(trial)
    assert str(exc.value) == (f"{str(trial)!r} is a Ray Tune trial folder holding checkpoints checkpoint_000000, "
                              f"checkpoint_000001, ..., checkpoint_000006 (7); pass one of them (the last is "
                              f"{trial / 'checkpoint_000006'})")
    with pytest.raises(UserError, match="Ray Tune trial folder holding checkpoints checkpoint_000000, checkpoint_000001;"):
        resolve_checkpoint_path(experiment / "metaadv_trial_a_00000")
    with pytest.raises(UserError) as exc:
        resolve_checkpoint_path(experiment)
    assert "is a Ray Tune experiment folder of trials metaadv_trial_a_00000, metaadv_trial_a_00001; " in str(exc.value)
    assert str(experiment / "metaadv_trial_a_00000" / "checkpoint_000001") in str(exc.value)
    with pytest.raises(UserError, match="is a study folder; its models.csv names each final model's checkpoint"):
        resolve_checkpoint_path(tmp_path / "study")
    # A checkpoint folder itself is a run folder as any other.
    assert resolve_checkpoint_path(trial / "checkpoint_000003") == trial / "checkpoint_000003" / "checkpoint.pt"
    shutil.rmtree(trial / "checkpoint_000003")
    with pytest.raises(UserError, match="no checkpoint at"):
        resolve_checkpoint_path(tmp_path / "empty-folder-that-does-not-exist")
