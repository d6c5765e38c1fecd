"""Where a study stands: per arm, trials trained and models evaluated of those planned.

Read from the study folder alone (no Ray): ``study.json`` (the arms, their experiments, the size's
``size_settings``), ``progress.json`` (the experiments finished, with their trials), the trial
folders under ``arms/ARM/EXPERIMENT/`` and ``models.csv`` with the ``eval/`` and ``judge/`` JSONs it
names. The planned counts follow the study engine (``metaadv.study.units.phase1_units``,
``derive.phase2_units`` and ``derive.final_models``): a ``tuned`` arm's ``search`` runs
``search_samples`` trials and its ``rerun`` one per seed; each PBT population (a ``searched`` arm's
``pbt-P``) runs ``population`` trials and yields one model; every other experiment runs one trial
per seed, and every arm but a ``searched`` one yields one model per seed.
"""

from __future__ import annotations

import math

import json
from pathlib import Path

import pandas as pd

__all__ = ["study_status", "is_partial", "status_lines", "read_csv"]

STATUS_COLUMNS = ["study", "arm", "kind", "trials_done", "trials_started", "trials_planned", "models",
                  "models_evaluated", "models_planned", "judged", "judged_planned"]


def read_csv(path: str | Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` that reads an empty file, or one holding only a newline (a table written with
    no columns), as an empty frame instead of raising ``EmptyDataError``."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _planned(spec: dict, arm: dict, experiment: str) -> float:
    size = spec.get("size_settings") or {}
    key = {"search": "search_samples"}.get(experiment) if arm.get("kind") == "tuned" else (
        "population" if arm.get("kind") == "searched" else None)
    value = size.get(key or "seeds")
    if value is not None and key == "search_samples" and arm.get("search") == "grid":  # every combination per pilot seed
        value = value * math.prod(len(v) for v in (arm.get("space") or {}).values())
    return float(value) if value is not None else float("nan")


def _trials_with_rows(folder: Path) -> int:
    """Trial folders (``params.json``) that reported at least one round (a ``progress.csv`` row)."""
    return sum(1 for params in folder.glob("*/params.json")
               if (params.parent / "progress.csv").is_file() and len(read_csv(params.parent / "progress.csv")))


def study_status(folder: str | Path) -> pd.DataFrame:
    """One row per declared arm of the study in ``folder``: ``study, arm, kind``; ``trials_done``
    (trials of the arm's finished experiments, as ``progress.json`` records them; without one,
    every trial folder that reported a round), ``trials_started`` (trials of unfinished experiments
    that reported a round: training now, or killed), ``trials_planned``; ``models`` (listed in
    models.csv), ``models_evaluated`` (their ``eval/`` verdict is on disk), ``models_planned``;
    ``judged`` and ``judged_planned`` (each arm's best model judged again, for sizes with a judge).
    Planned counts are NaN where study.json does not record the size (``size_settings``)."""
    folder = Path(folder)
    spec = json.loads((folder / "study.json").read_text())
    progress = folder / "progress.json"
    finished = json.loads(progress.read_text()).get("experiments", {}) if progress.is_file() else None
    models = read_csv(folder / "models.csv", dtype=str) if (folder / "models.csv").is_file() else pd.DataFrame()
    size = spec.get("size_settings") or {}
    rows = []
    for name, arm in (spec.get("arms") or {}).items():
        done = started = planned = 0.0
        for exp in arm.get("experiments", []):
            planned += _planned(spec, arm, exp)
        planned = float(arm.get("planned_trials", planned))  # the engine's own count, where study.json has it
        for exp in arm.get("experiments", []):
            path = folder / "arms" / name / exp
            if finished is not None and f"{name}/{exp}" in finished:
                done += len(finished[f"{name}/{exp}"])
            elif path.is_dir():
                n = _trials_with_rows(path)
                done, started = (done + n, started) if finished is None else (done, started + n)
        mine = models[models["arm"] == name] if "arm" in models else models.iloc[0:0]

        def on_disk(column: str) -> int:
            return int(sum(isinstance(p, str) and bool(p) and (folder / p).is_file() for p in mine.get(column, [])))

        n_models = float(len(arm.get("experiments", []))) if arm.get("kind") == "searched" else float(size.get("seeds", "nan"))
        n_models = float(arm.get("planned_models", n_models))
        rows.append({"study": spec.get("study", folder.name), "arm": name, "kind": arm.get("kind"), "trials_done": int(done),
                     "trials_started": int(started), "trials_planned": planned, "models": len(mine),
                     "models_evaluated": on_disk("eval"), "models_planned": n_models, "judged": on_disk("judge"),
                     "judged_planned": 1.0 if spec.get("judge") else 0.0})
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def is_partial(folder: str | Path, status: pd.DataFrame | None = None) -> bool:
    """The study has not finished: study.json says ``running`` (training now, or killed before its
    end), it has no models.csv yet, or an arm has fewer evaluated models than planned."""
    spec = json.loads((Path(folder) / "study.json").read_text())
    status = study_status(folder) if status is None else status
    short = (status["models_evaluated"] < status["models_planned"]).any()  # NaN planned compares False
    return spec.get("status") == "running" or not (Path(folder) / "models.csv").is_file() or bool(short)


def _of(n, planned) -> str:
    return f"{int(n)}/{'?' if pd.isna(planned) else int(planned)}"


def status_lines(folder: str | Path, status: pd.DataFrame | None = None) -> list[str]:
    """Plain lines: the study, whether it is done, and per arm what is done and what is left."""
    folder = Path(folder)
    spec = json.loads((folder / "study.json").read_text())
    status = study_status(folder) if status is None else status
    trials = _of(status["trials_done"].sum(), status["trials_planned"].sum(min_count=len(status)))
    evaluated = _of(status["models_evaluated"].sum(), status["models_planned"].sum(min_count=len(status)))
    state = "still running or stopped before its end" if is_partial(folder, status) else "done"
    lines = [f"study {spec.get('study', folder.name)} ({spec.get('size', '?')}) in {folder}: {state}; "
             f"{trials} trials trained, {evaluated} models evaluated",
             f"  {'arm':<18}{'kind':<10}{'trials':>9}{'started':>9}{'models':>8}{'evaluated':>11}"
             + (f"{'judged':>8}" if spec.get("judge") else "")]
    for _, r in status.iterrows():
        lines.append(f"  {r['arm']:<18}{str(r['kind']):<10}{_of(r['trials_done'], r['trials_planned']):>9}"
                     f"{r['trials_started']:>9}{_of(r['models'], r['models_planned']):>8}"
                     f"{_of(r['models_evaluated'], r['models_planned']):>11}"
                     + (f"{_of(r['judged'], r['judged_planned']):>8}" if spec.get("judge") else ""))
    if state != "done":
        lines.append(f"  if it was stopped: metaadv study {spec.get('study')} --size {spec.get('size')} --out {folder} --resume")
    return lines
