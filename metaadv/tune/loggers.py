"""Ray Tune's own logger callbacks, offline, behind ``--loggers`` (``metaadv tune`` and ``study``).

- ``tensorboard``: ``ray.tune.logger.TBXLoggerCallback``, TensorBoard event files in each trial
  folder (``tensorboardX``). Ray adds this logger by itself whenever tensorboardX is importable;
  naming it makes it required (refused when missing) and says where the files are.
- ``mlflow``: ``ray.air.integrations.mlflow.MLflowLoggerCallback`` into a local MLflow store, one
  MLflow run per trial, no server: an SQLite file, ``mlflow.db`` (``tracking_uri=sqlite:///...``).
  Not the ``file:`` folder store: MLflow 3 put it in maintenance mode and refuses it unless
  ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite is what it recommends instead, equally offline.

Both packages are the ``loggers`` extra (``pip install -e '.[loggers]'``). The names are checked,
and the packages looked up without importing them, before Ray starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import UserError

__all__ = ["LOGGER_PACKAGES", "parse_loggers", "logger_callbacks", "mlflow_uri", "where_lines"]

# --loggers name -> the package it needs (the loggers extra of pyproject.toml).
LOGGER_PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}


def parse_loggers(text: str | None) -> tuple[str, ...]:
    """``--loggers tensorboard,mlflow`` as names, refused in one line if unknown or not installed."""
    if text is None:
        return ()
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in LOGGER_PACKAGES]
    if unknown or not names:
        raise UserError(f"--loggers {text!r}: choose from {', '.join(LOGGER_PACKAGES)} (comma-separated)")
    for name in names:
        package = LOGGER_PACKAGES[name]
        if not installed(package):
            raise UserError(f"--loggers {name} needs the {package} package, which is not installed: "
                            "pip install -e '.[loggers]' (or pip install " + package + ")")
    return names


def installed(package: str) -> bool:
    """Whether ``package`` can be imported, without importing it (mlflow takes seconds)."""
    return importlib.util.find_spec(package) is not None


def mlflow_uri(folder: str | Path) -> str:
    """The local MLflow store in ``folder`` (``mlflow.db``), as a tracking URI."""
    return f"sqlite:///{Path(folder).expanduser().resolve() / 'mlflow.db'}"


def logger_callbacks(names: tuple[str, ...], tracking_uri: str, experiment_name: str) -> list:
    """Fresh callbacks for ``RunConfig(callbacks=...)``: one per name, in the order given."""
    callbacks = []
    for name in names:
        if name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            callbacks.append(TBXLoggerCallback())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            # Parameters at the trial's end, not its start: PBT restarts a trial with a mutated config,
            # and MLflow refuses to change a parameter already logged on a run.
            callbacks.append(MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=experiment_name,
                                                  log_params_on_trial_end=True))
    return callbacks


def where_lines(names: tuple[str, ...], logdir: str, tracking_uri: str) -> list[str]:
    """How to open what the loggers wrote."""
    lines = []
    if "tensorboard" in names:
        lines.append(f"TensorBoard event files in each trial folder: tensorboard --logdir {logdir}")
    if "mlflow" in names:
        lines.append(f"MLflow runs (one per trial): mlflow ui --backend-store-uri {tracking_uri}")
    return lines
