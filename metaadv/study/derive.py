"""Phase 2: the arms built from phase 1's results (the tuned rerun, replays of learned schedules
and PBT lineages, transferred policies), and the final models of every arm."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from ..checkpoint import read_checkpoint
from ..config import TrainConfig
from ..errors import UserError
from .spec import Arm, Study, arm_seeds
from .folder import Folder
from .units import Unit, best_config, best_trial, local_checkpoint, score

__all__ = ["phase2_units", "final_models", "schedule_rows", "write_schedule", "lineage_rows",
           "save_policy", "rotated", "replay_seeds"]


def schedule_rows(rows: list[dict]) -> list[dict]:
    """``round`` and every ``hp/*`` column of a run's rows: a replay schedule (the contract's format)."""
    out = []
    for i, row in enumerate(rows, start=1):
        out.append({"round": i, **{k: v for k, v in row.items() if k.startswith("hp/")}})
    return out


def write_schedule(rows: list[dict], path: Path) -> None:
    """``rows`` (metrics rows or a lineage's) as a replay schedule at ``path`` (checked, atomic)."""
    from ..training.replay import write_schedule as replay_write

    path.parent.mkdir(parents=True, exist_ok=True)
    replay_write(rows, path)


def lineage_rows(experiment_dir: str, trial: dict) -> list[dict]:
    """The hyperparameters in force every round of a PBT trial across its exploits: the rows its
    final checkpoint carries (an exploit restores the donor's rows, the trial appends its own), the
    history itself rather than a reconstruction. Where the folder is local, Ray's logs rebuild it
    too (``analysis.lineage.trial_schedule``): a disagreement is a warning, the checkpoint wins."""
    rows = schedule_rows(read_checkpoint(local_checkpoint(trial["checkpoint"]))["rows"])
    if "://" not in experiment_dir:
        from analysis.lineage import trial_schedule

        rebuilt = trial_schedule(experiment_dir, trial["trial"]).to_dict("records")
        if not _same_schedule(rows, rebuilt):
            warnings.warn(f"trial {trial['trial']}: Ray's PBT logs rebuild a lineage of {len(rebuilt)} rounds that differs "
                          f"from its checkpoint's {len(rows)}; the checkpoint's rows are replayed", stacklevel=2)
    return rows


def _same_schedule(a: list[dict], b: list[dict], keys=("hp/eps", "hp/steps", "hp/lr")) -> bool:
    return len(a) == len(b) and all(math.isclose(float(x[k]), float(y[k]), rel_tol=1e-9, abs_tol=1e-12)
                                    for x, y in zip(a, b) for k in keys if k in x and k in y)


def save_policy(trial: dict, path: Path) -> None:
    """The learned policy network of a finished policy trial, as a ``--policy-file``."""
    from ..training.policy import PolicyController, save_policy_file

    values = {k: v for k, v in trial["config"].items() if k not in ("kind", "val_eps")}
    controller = PolicyController(TrainConfig.from_dict(values))
    controller.load_state_dict(read_checkpoint(local_checkpoint(trial["checkpoint"]))["controller"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_policy_file(controller, path)


def rotated(trials: list[dict], seeds: list[int]) -> dict[int, dict]:
    """Seed s -> the source trial of the next seed (wrapping): never the seed that made it."""
    by_seed = {int(t["seed"]): t for t in trials if score(t) > -math.inf}
    if not by_seed:
        raise UserError("the source arm has no finished run to derive from")
    order = sorted(by_seed)
    return {s: by_seed[order[(order.index(s) + 1) % len(order)] if s in by_seed else order[i % len(order)]]
            for i, s in enumerate(seeds)}


def phase2_units(study: Study, size, root: Path, results: dict, *, deployed: bool = False) -> list[Unit]:
    """The derived units: with ``deployed`` only the deployed arms' (they need their meta-training,
    which runs in between), else every other's, so the reruns and controls train first."""
    seeds = arm_seeds(size)
    units = []
    for arm in study.arms:
        if (arm.kind == "deployed") != deployed:
            continue
        if arm.kind == "tuned":
            units.append(Unit(arm, "rerun", size.seeds, base=picked_config(study, arm, size, results), seeds=tuple(seeds)))
        elif arm.config_of:  # the tuned arm's pick under this arm's own config (e.g. the same strategy frozen)
            picked = picked_config(study, study.arm(arm.config_of), size, results)
            units.append(Unit(arm, arm.name, size.seeds, base=picked, seeds=tuple(seeds)))
        elif arm.kind == "replay":
            schedules, rounds = {}, {}
            seeds_r = replay_seeds(study, arm, size)
            for s, (name, rows) in replay_sources(study, arm, size, root, results, seeds_r).items():
                path = root / "schedules" / arm.name / f"{name}.csv"
                if not path.is_file():
                    write_schedule(rows, path)
                schedules[s], rounds[s] = str(path), len(rows)
            # Every seed gets its own schedule and its length as rounds. The base names the longest
            # (the config checks before Ray need a real one, and its rounds are where Tune stops
            # every trial: a shorter base would cut the longer schedules short).
            longest = max(seeds_r, key=lambda s: rounds[s])
            units.append(Unit(arm, arm.name, len(seeds_r), seeds=tuple(seeds_r),
                              base={"schedule": schedules[longest], "rounds": rounds[longest]},
                              per_seed={"schedule": schedules, "rounds": rounds}))
        elif arm.kind == "deployed":
            from .meta_train import policy_path

            policy = policy_path(root, arm)
            if not policy.is_file():
                raise UserError(f"arm {arm.name}: no meta-trained policy at {policy}")
            units.append(Unit(arm, arm.name, size.seeds, seeds=tuple(seeds), base={"policy_file": str(policy)}))
        elif arm.kind == "transfer":
            files = {}
            for s, trial in rotated(source_trials(results, arm.source), seeds).items():
                path = root / "policies" / f"{arm.source}-seed{trial['seed']}.pt"
                if not path.is_file():
                    save_policy(trial, path)
                files[s] = str(path)
            units.append(Unit(arm, arm.name, size.seeds, seeds=tuple(seeds), per_seed={"policy_file": files}))
    return units


def picked_config(study: Study, arm: Arm, size, results: dict) -> dict:
    """A tuned arm's searched values (at ``size``: its sub-space there) with the best mean validation
    over its pilot seeds."""
    return best_config(results[arm.name]["search"], list(study.search_space(arm, size)))


def source_trials(results: dict, arm: str) -> list[dict]:
    return [t for trials in results[arm].values() for t in trials]


def replay_seeds(study: Study, arm: Arm, size) -> list[int]:
    """The seeds a replay arm trains on. A searched source yields one lineage per population, and the
    population is the unit: its lineage is replayed once, on seed p + 1 (replaying one schedule on
    several seeds and counting them as independent models would be pseudo-replication). Any other
    source: the arm's seeds, each following the source's run on the next seed."""
    if study.arm(arm.source).kind == "searched":
        return list(range(1, size.populations + 1))
    return arm_seeds(size)


def replay_sources(study: Study, arm: Arm, size, root: Path, results: dict, seeds: list[int]) -> dict:
    """Seed -> (schedule name, rows) for a replay arm (``seeds`` from :func:`replay_seeds`)."""
    source = study.arm(arm.source)
    if source.kind == "searched":
        pops = sorted(results[source.name])
        if len(pops) != len(seeds):
            raise UserError(f"arm {arm.name}: {len(pops)} populations of {source.name} for {len(seeds)} replay seeds")
        out = {}
        for pop, s in zip(pops, seeds):
            best = best_trial(results[source.name][pop])
            exp_dir = os.path.dirname(best["path"]) if "://" not in best["path"] else best["path"].rsplit("/", 1)[0]
            rows = lineage_rows(exp_dir, best)
            out[s] = (f"{pop}-{best['trial']}", rows)
        return out
    return {s: (f"{source.name}-seed{t['seed']}", schedule_rows(read_checkpoint(local_checkpoint(t["checkpoint"]))["rows"]))
            for s, t in rotated(source_trials(results, source.name), seeds).items()}


def final_models(study: Study, size, results: dict, folder: Folder) -> list[dict]:
    models = []
    for arm in study.arms:
        if arm.name not in results:
            continue
        if arm.kind == "searched":
            for pop, trials in sorted(results[arm.name].items()):
                best = best_trial(trials)
                models.append(model_row(arm, pop, best, pop, folder, pair=int(pop.rsplit("-", 1)[-1]) + 1))
            continue
        experiment = "rerun" if arm.kind == "tuned" else arm.name
        for trial in sorted(results[arm.name].get(experiment, []), key=lambda t: t["seed"] or 0):
            if trial["checkpoint"]:
                models.append(model_row(arm, f"seed{trial['seed']}", trial, experiment, folder))
    return models


def model_row(arm: Arm, model: str, trial: dict, experiment: str, folder: Folder, pair: int | None = None) -> dict:
    return {"arm": arm.name, "model": model, "seed": trial["seed"], "pair": trial["seed"] if pair is None else pair,
            "experiment": experiment, "trial": trial["trial"],
            "checkpoint": folder.rel(trial["checkpoint"]), "eval": f"eval/{arm.name}/{model}.json",
            "_checkpoint": trial["checkpoint"], "_metrics": trial["metrics"],
            "_origin": trial.get("reused_from") or trial["checkpoint"]}  # where it was trained (--reuse)
