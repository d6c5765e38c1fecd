"""One study folder as two frames a notebook can use directly: one row per final model, one row per
reported round (:func:`load_study`).

The tidy frame of :func:`analysis.load_results` repeats a model's ``eval/*`` verdict on every round
row of the model, so ``frame.groupby("arm")["eval/robust_acc"].mean()`` weights each model by its
number of rows (a PBT lineage counts more than a replay). Here the verdict lives on the model's one
row in ``models``, and ``rounds`` carries no ``eval/*`` column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metaadv.errors import UserError

from .cost import model_cost
from .load import load_results, read_eval
from .status import read_csv

__all__ = ["StudyFrames", "load_study"]

MODEL_ID = ["study", "arm", "model", "seed", "experiment", "trial", "method", "controller"]
VERDICT = ["eval/robust_acc", "eval/clean_acc", "eval/trusted", "eval/n", "eval/eps", "eval/norm", "eval/aa_version",
           "eval/checks_failed", "eval/untrusted_reasons", "eval/path"]
# Text, not numbers: identities, status, the verdict's threat model and provenance.
TEXT = {"study", "arm", "experiment", "trial", "model", "method", "controller", "kind", "source", "status", "error",
        "pbt/donor", "pbt/source_trial", "checkpoint", "eval/norm", "eval/aa_version", "eval/untrusted_reasons",
        "eval/path", "judge/norm", "judge/aa_version", "judge/untrusted_reasons", "judge/path"}


@dataclass(frozen=True)
class StudyFrames:
    """``models``: one row per final model (models.csv): ``study, arm, model, seed, experiment, trial,
    method, controller``, ``rounds`` (rows it reported), ``cost_a`` and ``cost_a_validation`` (see
    :mod:`analysis.cost`), its verdict ``eval/*`` (numbers as float; ``eval/trusted`` a nullable
    boolean; NaN while not evaluated) and, for the judged model of each arm, ``judge/*`` (same
    fields). ``rounds``: one row per reported round of every trial the study ran (searches and PBT
    populations included; ``final_model`` marks the models' own rows), with the columns of
    :func:`analysis.load_results` except ``eval/*``; metrics, ``hp/*`` and ``cost/*`` as numbers."""

    models: pd.DataFrame
    rounds: pd.DataFrame


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for c in frame.columns:
        if c in TEXT or frame[c].dtype != object:
            continue
        values = frame[c].dropna()
        if len(values) and values.map(lambda v: isinstance(v, (bool, np.bool_))).all():
            frame[c] = frame[c].astype("boolean")
            continue
        try:
            frame[c] = pd.to_numeric(frame[c])
        except (TypeError, ValueError):
            pass  # a column of text the table above does not know: left as it is
    return frame


def _verdict(folder: Path, path, prefix: str) -> dict:
    if not isinstance(path, str) or not path or not (folder / path).is_file():
        return {}
    return {prefix + k[len("eval/"):]: v for k, v in read_eval(folder / path).items()}


def load_study(folder: str | Path) -> StudyFrames:
    """The study in ``folder`` (a ``metaadv study`` folder: study.json, arms/, models.csv) as
    :class:`StudyFrames`. A study still running gives what it has: rounds reported so far, the
    models models.csv lists (none before training ends), NaN verdicts for models not evaluated yet;
    ``analysis.status.study_status(folder)`` says what is left."""
    folder = Path(folder)
    if not (folder / "study.json").is_file():
        raise UserError(f"{str(folder)!r} is not a study folder (no study.json); load_results reads any results folder")
    name = json.loads((folder / "study.json").read_text()).get("study", folder.name)
    frame = load_results(folder)
    rounds = _numeric(frame.drop(columns=[c for c in frame if c.startswith("eval/")]))
    table = read_csv(folder / "models.csv", dtype={"trial": str, "experiment": str}) \
        if (folder / "models.csv").is_file() else pd.DataFrame()
    rows = [{"study": name, "arm": m["arm"], "model": m["model"], "seed": m["seed"], "experiment": m["experiment"],
             "trial": m["trial"], **_verdict(folder, m.get("eval"), "eval/"), **_verdict(folder, m.get("judge"), "judge/")}
            for _, m in table.iterrows()]
    models = pd.DataFrame(rows, columns=["study", "arm", "model", "seed", "experiment", "trial"]) if not rows \
        else pd.DataFrame(rows)
    own = rounds[rounds["final_model"].astype(bool)]
    if len(own):
        ident = own.groupby(["arm", "model"], sort=False)[["method", "controller"]].first()
        ident["rounds"] = own.groupby(["arm", "model"], sort=False).size()
        models = models.merge(ident.reset_index(), on=["arm", "model"], how="left")
        models = models.merge(model_cost(own).drop(columns="seed"), on=["arm", "model"], how="left")
    # The verdict's columns are there before any model is evaluated (NaN), so code written for a
    # finished study runs on one in progress.
    for c in ("method", "controller", "rounds", "cost_a", "cost_a_validation", *VERDICT):
        if c not in models:
            models[c] = pd.Series(index=models.index, dtype="boolean" if c == "eval/trusted" else
                                  object if c in TEXT else float)
    first = MODEL_ID + ["rounds", "cost_a", "cost_a_validation", *VERDICT]
    models = _numeric(models[first + [c for c in models if c not in first]])
    return StudyFrames(models=models.reset_index(drop=True), rounds=rounds.reset_index(drop=True))
