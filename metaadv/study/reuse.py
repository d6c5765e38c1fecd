"""Reuse another study's finished runs (``metaadv study NAME --reuse DIR``).

Two studies on one budget share arms: the learned-vs-searched study's fixed schedule, LAS and its
control, the deployed policy, are the learner study's rows. Retraining them would spend hours to
get the same numbers, so a study can take a unit's trials from a donor study folder instead, when
and only when **every trial the unit would run has a finished twin there**: the same trial config,
key for key (the seed included; a file a key names, a policy or a schedule, compared by its bytes,
not its path). A unit is reused whole or not at all: a Tune experiment folder holds one run's
trials, and the analysis reads it as one.

Reused trials are copied into this study's folder (``arms/ARM/EXPERIMENT/TRIAL``: their rows and
last checkpoint), so the folder stands alone, and ``progress.json`` says where each came from
(``reused_from``). A deployed arm's meta-training is reused the same way (``meta/ARM`` copied) when
its config and settings equal the donor's. Random searches and PBT populations are never reused:
their trials' values come from a searcher's state, not from the declaration alone.

A reused model's verdict is reused too when the donor judged it with exactly the request this
study makes (``request`` in each eval JSON: the model's origin, eps, the options with each
transfer surrogate named by its origin): a surrogate that is another model here (the next seed of
five, not of ten) makes another request, and that model is judged again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from pathlib import Path

from ..errors import UserError
from .ranking import score

__all__ = ["Donors", "check_donors", "evaluation_request", "expected_configs", "normal"]

# Config keys that name a file: equal when the files' bytes are (two study folders, two paths).
FILE_KEYS = ("policy_file", "schedule")


def check_donors(paths) -> list[Path]:
    """The donor folders, each a study folder (refused in one line otherwise, before anything is written)."""
    out = []
    for p in paths or ():
        folder = Path(p).expanduser().resolve()
        if not (folder / "study.json").is_file() or not (folder / "progress.json").is_file():
            raise UserError(f"--reuse {p}: not a study folder with finished runs (no study.json and progress.json)")
        out.append(folder)
    return out


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def normal(config: dict) -> str:
    """A trial config as one comparable string: JSON's view of it (a tuple is a list), the files
    its keys name by content."""
    values = json.loads(json.dumps(config, default=str))
    for key in FILE_KEYS:
        if isinstance(values.get(key), str) and values[key] and os.path.isfile(values[key]):
            values[key] = {"sha256": _digest(values[key])}
    return json.dumps(values, sort_keys=True)


def _finished(trial: dict) -> bool:
    """A donor trial worth taking: what the study itself would rank (:func:`.ranking.score`), with its
    checkpoint on this machine's disk to copy."""
    local = "://" not in str(trial.get("path", "")) and os.path.isdir(str(trial.get("checkpoint")))
    return local and score({"error": None, **trial, "metrics": trial.get("metrics", {})}) > -math.inf


class Donors:
    def __init__(self, folders: list[Path]):
        self.folders = folders
        self._trials = self._evaluations = None

    def trials(self) -> dict[str, tuple[Path, dict]]:
        """Normal config -> (donor folder, trial) over every finished trial of every donor."""
        if self._trials is None:
            self._trials = {}
            for folder in self.folders:
                state = json.loads((folder / "progress.json").read_text())
                for trials in state.get("experiments", {}).values():
                    for t in trials:
                        if _finished(t):
                            self._trials.setdefault(normal(t["config"]), (folder, t))
        return self._trials

    def match(self, expected: list[dict] | None) -> list[tuple[Path, dict]] | None:
        """One donor trial per expected config, or None if any is missing."""
        if not expected or not self.folders:
            return None
        found = [self.trials().get(normal(c)) for c in expected]
        return None if any(f is None for f in found) else found

    def take(self, matches: list[tuple[Path, dict]], experiment_dir: Path) -> list[dict]:
        """Copy the matched trials' folders into ``experiment_dir``; their summaries, pointed there."""
        experiment_dir.mkdir(parents=True, exist_ok=True)
        out = []
        for donor, trial in matches:
            source = Path(trial["path"])
            target = experiment_dir / source.name
            if not target.exists():
                shutil.copytree(source, target)
            ckpt = target / os.path.relpath(trial["checkpoint"], source)
            out.append({**trial, "path": str(target), "checkpoint": str(ckpt),
                        "reused_from": str(Path(trial["checkpoint"]))})
        return out

    def evaluations(self) -> dict[str, Path]:
        """Normal request -> eval JSON, over every donor's ``eval/`` and ``judge/`` verdicts that say
        what was asked (``request``; verdicts written before 46bfaf0 do not, and are never taken)."""
        if self._evaluations is None:
            self._evaluations = {}
            for folder in self.folders:
                for path in sorted([*folder.glob("eval/*/*.json"), *folder.glob("judge/*/*.json")]):
                    request = json.loads(path.read_text()).get("request")
                    if request:
                        self._evaluations.setdefault(json.dumps(request, sort_keys=True), path)
        return self._evaluations

    def take_evaluation(self, request: dict, out: Path) -> bool:
        """Copy a donor's verdict made for exactly ``request`` to ``out``; whether there was one."""
        if not self.folders:
            return False
        path = self.evaluations().get(json.dumps(request, sort_keys=True))
        if path is None:
            return False
        from .folder import write_json

        write_json(out, {**json.loads(path.read_text()), "reused_from": str(path)})
        return True

    def meta_folder(self, config, settings) -> Path | None:
        """A donor's finished meta-training (``meta/*``) of this TrainConfig with these MetaSettings:
        the check a resume of it makes (its state's config and settings), its summary written."""
        from dataclasses import asdict

        from ..checkpoint import read_checkpoint
        from ..training.policy_train import FILES

        for folder in self.folders:
            for meta in sorted((folder / "meta").glob("*")):
                if not ((meta / FILES["summary"]).is_file() and (meta / FILES["state"]).is_file()):
                    continue
                state = read_checkpoint(meta / FILES["state"])
                if state.get("config") == config.to_dict() and state.get("settings") == asdict(settings):
                    return meta
        return None


def evaluation_request(model: dict, eps: float, options: dict, origins: dict) -> dict:
    """What judging ``model`` asks, in terms that hold across study folders: the checkpoint it was
    trained into (a reused model's donor checkpoint), the eps, and the options with each surrogate
    model likewise named by where it was trained."""
    def origin(path):
        return str(origins.get(path, path))

    own = json.loads(json.dumps(options, default=str))
    if own.get("surrogates"):
        own["surrogates"] = [origin(p) for p in own["surrogates"]]
    return {"checkpoint": origin(model["_checkpoint"]), "eps": float(eps), "options": own}


def expected_configs(runner, unit) -> list[dict] | None:
    """Every trial config ``unit`` would run (seeds, grid combinations, per-seed values), or None where
    a searcher draws them (a random search, PBT)."""
    exp = runner.experiment(unit)
    if unit.scheduler != "fifo" or (unit.space and unit.searcher != "grid") or not unit.seeds:
        return None
    fixed = exp.fixed_config(runner.opts.size)
    keys = list(unit.space)
    combos = list(itertools.product(*(unit.space[k].values for k in keys))) if keys else [()]
    out = []
    for values in combos:
        for seed in unit.seeds:
            config = {**fixed, **dict(zip(keys, values)), "seed": seed}
            for key, by_seed in (unit.per_seed or {}).items():
                config[key] = by_seed[seed]
            out.append(config)
    return out
