"""``--loggers``: Ray Tune's TensorBoard and MLflow logger callbacks, offline, on ``metaadv tune``
and ``metaadv study``; a missing package is refused in one line naming the extra."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaadv.cli import main
from metaadv.errors import UserError
from metaadv.tune import loggers


def test_names_are_read_deduplicated_and_unknown_ones_refused():
    assert loggers.parse_loggers(None) == ()
    if all(map(loggers.installed, loggers.LOGGER_PACKAGES.values())):
        assert loggers.parse_loggers(" MLflow,tensorboard,mlflow ") == ("mlflow", "tensorboard")
    for bad in ("wandb", "", ",", "tensorboard,comet"):
        with pytest.raises(UserError, match="choose from tensorboard, mlflow"):
            loggers.parse_loggers(bad)


@pytest.mark.parametrize("command", [["tune", "pbt_pgd_at"], ["study", "learned_vs_searched", "--size", "tiny"]])
@pytest.mark.parametrize("name, package", sorted(loggers.LOGGER_PACKAGES.items()))
def test_a_missing_package_is_one_line_naming_the_extra_before_ray_starts(command, name, package, monkeypatch, capsys,
                                                                          tmp_path):
    monkeypatch.setattr(loggers, "installed", lambda p: p != package)
    monkeypatch.chdir(tmp_path)  # a study that wrongly got through would write here
    assert main([*command, "--loggers", name]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaadv: error: --loggers") and len(err.splitlines()) == 1
    assert package in err and "'.[loggers]'" in err
    assert not list(tmp_path.iterdir())


def test_the_callbacks_are_ray_tunes_own_and_mlflow_logs_parameters_at_the_end(tmp_path):
    pytest.importorskip("ray")
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.logger import TBXLoggerCallback

    uri = loggers.mlflow_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    if not all(map(loggers.installed, loggers.LOGGER_PACKAGES.values())):
        pytest.skip("the loggers extra is not installed")
    tb, mlf = loggers.logger_callbacks(("tensorboard", "mlflow"), uri, "exp")
    assert isinstance(tb, TBXLoggerCallback) and isinstance(mlf, MLflowLoggerCallback)
    # PBT restarts a trial with a mutated config; MLflow refuses to change a logged parameter.
    assert (mlf.tracking_uri, mlf.experiment_name, mlf.log_params_on_trial_end) == (uri, "exp", True)


@pytest.mark.slow
def test_a_tiny_tune_run_writes_tensorboard_events_and_an_mlflow_run(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    pytest.importorskip("tensorboardX")
    mlflow = pytest.importorskip("mlflow")
    from metaadv.tune.experiment import Experiment, Size
    from metaadv.tune.runner import RunOptions, logger_places, run_experiment
    from metaadv.tune.space import Grid
    from tests.conftest import local_ray

    # Without this Ray adds a TensorBoard logger by itself whenever tensorboardX is importable, and the
    # event files would prove nothing about --loggers.
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    config = {"method": "pgd-at", "dataset": "digits", "steps_per_round": 2, "batch_size": 50, "val_size": 50,
              "val_pgd_steps": 1, "device": "cpu", "eps_ramp_rounds": 0, "rounds": 2}
    exp = Experiment(name="tiny_loggers", description="tiny", sizes={"smoke": Size(1, config)}, threat_eps=0.2,
                     space={"eps": Grid(0.1, 0.2)})
    opts = RunOptions(size="smoke", storage=str(tmp_path / "results"), verbose=0, loggers=("tensorboard", "mlflow"))
    with local_ray("lg"):
        grid = run_experiment(exp, opts)
    assert not grid.errors
    (result,) = grid
    assert list(Path(result.path).glob("events.out.tfevents.*")), "no TensorBoard event file in the trial folder"
    logdir, uri, name = logger_places(exp, opts)
    assert (logdir, uri, name) == (str(tmp_path / "results" / "tiny_loggers-smoke"),
                                   f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", "tiny_loggers-smoke")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["eps"] in ("0.1", "0.2")
    history = client.get_metric_history(run.info.run_id, "val/robust_acc")
    assert [m.step for m in history] == [1, 2]
