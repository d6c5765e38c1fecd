"""The registry of named experiments (see the package docstring)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from metaadv.errors import UserError
from metaadv.tune.experiment import Experiment

__all__ = ["AVAILABLE", "NOT_YET_AVAILABLE", "STUDIES", "load_experiment", "list_experiments", "load_study"]

AVAILABLE = ("pbt_pgd_at", "pb2_pgd_at", "random_pgd_at", "asha_optuna_trades", "optuna_multiobjective", "pbt_meta_generator",
             "pbt_adml", "pbt_aq")

# Studies (``metaadv study``): modules defining ``STUDY``, a metaadv.study.spec.Study.
STUDIES = ("learned_vs_searched", "learner", "generator", "few_shot")

# Planned, waiting for their trainers; listed so nobody mistakes them for missing by accident.
NOT_YET_AVAILABLE: dict[str, str] = {}


def load_experiment(name: str) -> Experiment:
    """A registered experiment by name, or the ``EXPERIMENT`` of a .py file."""
    if name.endswith(".py"):
        return _from_file(Path(name))
    if name in NOT_YET_AVAILABLE:
        raise UserError(f"experiment {name!r} is not available yet: {NOT_YET_AVAILABLE[name]}")
    if name not in AVAILABLE:
        raise UserError(f"unknown experiment {name!r}; choose one of {', '.join(AVAILABLE)} (see metaadv tune --list)")
    return importlib.import_module(f"tune_experiments.{name}").EXPERIMENT


def _from_file(path: Path) -> Experiment:
    if not path.is_file():
        raise UserError(f"experiment file {str(path)!r} not found")
    spec = importlib.util.spec_from_file_location(f"_metaadv_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except UserError as exc:  # an Experiment(...) that refused its own settings
        raise UserError(f"experiment file {str(path)!r}: {exc}") from None
    except Exception as exc:  # the user's own Python: name the error and the line, not a traceback
        line = getattr(exc, "lineno", None) or _failing_line(exc, path)
        where = f", line {line}" if line else ""
        text = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        detail = text.splitlines()[0] if text.strip() else ""
        raise UserError(f"cannot load experiment file {str(path)!r}{where}: {type(exc).__name__}"
                        f"{': ' + detail if detail else ''}") from None
    exp = getattr(module, "EXPERIMENT", None)
    if not isinstance(exp, Experiment):
        raise UserError(f"{str(path)!r} must define EXPERIMENT = metaadv.tune.Experiment(...)")
    return exp


def _failing_line(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` where ``exc`` was raised, from its traceback."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def list_experiments() -> list[tuple[str, str]]:
    """(name, one-line description) for every experiment, available ones first."""
    rows = [(name, load_experiment(name).description) for name in AVAILABLE]
    return rows + [(name, f"not yet available: {why}") for name, why in NOT_YET_AVAILABLE.items()]


def load_study(name: str):
    """A registered study by name, or the ``STUDY`` of a .py file."""
    from metaadv.study.spec import Study

    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"study file {name!r} not found")
        spec = importlib.util.spec_from_file_location(f"_metaadv_study_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    elif name in STUDIES:
        module = importlib.import_module(f"tune_experiments.{name}")
    else:
        raise UserError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)} (see metaadv study --list)")
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise UserError(f"{name!r} must define STUDY = metaadv.study.spec.Study(...)")
    return study
