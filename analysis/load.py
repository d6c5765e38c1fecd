"""Results on disk -> one tidy pandas frame: one row per reported round of a run or trial.

Accepts, in any mix (:func:`load_results`):

- ``metaadv train`` / ``metaadv meta`` run folders (``config.json`` + ``metrics.csv``);
- ``metaadv tune`` experiment folders (Ray Tune: ``experiment_state-*.json``, trial folders with
  ``params.json`` + ``progress.csv``), PBT ones with ``pbt_global.txt`` / ``pbt_policy_*.txt``;
- study folders (``study.json``, ``arms/ARM/EXPERIMENT/``, ``models.csv``, ``eval/ARM/MODEL.json``);
- any folder holding such folders (searched up to three levels down);
- a ``ray.tune.ResultGrid`` (``Tuner.fit()``'s return value), read from its experiment folder.

Columns (all documented in docs/analysis.md):

- identity: ``study`` (study name, NaN outside a study), ``arm`` (study arm; outside a study the
  experiment name for a tune experiment and ``"<method>/<controller>"`` for a run folder),
  ``experiment`` (tune experiment folder name; a run folder's parent folder name), ``trial``
  (Tune trial id; a run folder's name), ``model`` (models.csv name in a study, else ``trial``),
  ``seed``, ``method``, ``controller`` (``schedule``, ``policy``, ``replay``, ...; ``pbt`` for a
  trial of a PBT/PB2 experiment: PBT logs, or a population scheduler named in ``tuner.pkl``), ``kind`` (``train`` or ``meta``), ``source`` (the folder read),
  ``report`` (0-based report order within the trial);
- ``round`` and every metric of the row (``train/*``, ``val/*``, ``step``, ``epoch``, ...),
  ``status``/``error`` for a diverged trial's last row, ``tune/iteration`` (Tune's counter);
- ``hp/*`` (in force that round), ``cost/*`` (cumulative, as logged) and the per-round costs added by
  :func:`analysis.cost.add_round_costs` (``cost/round_grad_evals``, ``cost/round_eval_grad_evals``,
  ``cost/inherited_grad_evals``, ``cost/inherited_eval_grad_evals``);
- PBT: ``pbt/segment`` (0 = before any exploit; k = after the trial's k-th exploit),
  ``pbt/after_exploit`` (segment > 0), ``pbt/donor`` (trial id the segment was cloned from),
  ``pbt/donor_segment`` (the donor's segment then); NaN / 0 / False outside PBT;
- ``final_model`` (the trial is a final model: listed in models.csv in a study; outside a study a
  PBT experiment's best trial by last ``val/robust_acc``, and every other run and trial),
  ``decision_validation`` (its validation informs a decision, so counts in cost (b));
- ``eval/*``: the model's ``metaadv evaluate --json`` verdict on every row of that model
  (``eval/robust_acc``, ``eval/clean_acc``, ``eval/trusted``, ``eval/n``, ``eval/eps``, ``eval/norm``,
  ``eval/aa_version``, ``eval/checks_failed``, ``eval/untrusted_reasons``, ``eval/per_attack/<attack>``,
  ``eval/path``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from metaadv.errors import UserError

from .cost import add_round_costs, decision_reads
from ._lineage import assign_segments, read_exploits, tag_index
from .status import read_csv

__all__ = ["load_results", "read_eval", "discover", "load_judged"]

# Tune's bookkeeping fields in progress.csv: not metrics.
TUNE_FIELDS = {"timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "trial_id", "date",
               "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
               "iterations_since_restore", "experiment_tag", "episodes_total", "timesteps_total"}
JUDGED_COLUMNS = ["study", "arm", "model", "seed", "eval/robust_acc", "eval/clean_acc", "eval/trusted",
                  "judge/robust_acc", "judge/clean_acc", "judge/trusted", "judge/aa_version"]
ID_COLUMNS = ["study", "arm", "experiment", "trial", "model", "seed", "method", "controller", "kind", "round"]


def discover(path: Path, depth: int = 3) -> list[tuple[str, Path]]:
    """``(kind, folder)`` for every result folder at or under ``path``: study, experiment, run."""
    if (path / "study.json").is_file():
        return [("study", path)]
    if list(path.glob("experiment_state-*.json")) or list(path.glob("*/params.json")):
        return [("experiment", path)]
    if (path / "config.json").is_file() and (path / "metrics.csv").is_file():
        return [("run", path)]
    if depth == 0:
        return []
    return [hit for sub in sorted(p for p in path.iterdir() if p.is_dir()) for hit in discover(sub, depth - 1)]


def load_results(*paths) -> pd.DataFrame:
    """One tidy frame from any mix of run, experiment and study folders (see the module doc)."""
    if not paths:
        raise UserError("give at least one results folder")
    frames, seen, studies = [], set(), {}
    for raw in paths:
        # A ray.tune.ResultGrid (what Tuner.fit returns in a notebook) stands for its experiment folder.
        path = Path(getattr(raw, "experiment_path", raw))
        if not path.is_dir():
            raise UserError(f"{str(path)!r} is not a folder")
        found = discover(path)
        if not found:
            raise UserError(f"no results found in {str(path)!r} (no study.json, Tune experiment or run folder)")
        for kind, folder in found:
            if folder.resolve() in seen:  # the same folder named twice (or inside a study also given)
                continue
            seen.add(folder.resolve())
            if kind == "study":
                _one_folder_per_study(folder, studies)
            frames.append({"study": _load_study, "experiment": _load_experiment, "run": _load_run}[kind](folder))
    frames = [f for f in frames if not f.empty]
    if not frames:
        if studies:  # a study that has reported nothing yet: no rows, not an error (see analysis.status)
            return pd.DataFrame(columns=[*ID_COLUMNS, "source", "report", "final_model", "decision_validation"])
        raise UserError("no result rows found in " + ", ".join(map(str, paths)))
    return _order(pd.concat(frames, ignore_index=True))


def _one_folder_per_study(folder: Path, studies: dict) -> None:
    """Refuse a second folder holding a study of the same name (a copy, or another size of it):
    rows are keyed by study and arm, so the two would merge into one arm each (cost (b) doubled,
    every contrast's seeds paired across folders)."""
    name = json.loads((folder / "study.json").read_text()).get("study", folder.name)
    if name in studies:
        raise UserError(f"{str(studies[name])!r} and {str(folder)!r} both hold study {name!r}; their arms would merge: "
                        "analyze one folder of a study at a time")
    studies[name] = folder


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in ID_COLUMNS if c in frame]
    groups = [lambda c: c not in first and "/" not in c, lambda c: c.split("/")[0] in ("train", "val"),
              lambda c: c.startswith("hp/"), lambda c: c.startswith("cost/"), lambda c: c.startswith("eval/")]
    rest, ordered = [c for c in frame.columns if c not in first], list(first)
    for test in groups:
        ordered += [c for c in rest if test(c) and c not in ordered]
    return frame[ordered + [c for c in rest if c not in ordered]]


def _identity(config: dict, **values) -> dict:
    kind = config.get("kind", "meta" if "inner_lr" in config else "train")
    # TrainConfig and MetaConfig both default to seed 0 and say so in their dataclasses.
    return {"seed": config.get("seed", 0), "method": config.get("method", "maml" if kind == "meta" else "pgd-at"),
            "controller": config.get("controller", "schedule"), "kind": kind, **values}


def _load_run(folder: Path) -> pd.DataFrame:
    config = json.loads((folder / "config.json").read_text())
    rows = read_csv(folder / "metrics.csv")
    ident = _identity(config, experiment=folder.parent.name, trial=folder.name, model=folder.name, source=str(folder))
    ident["arm"] = f"{ident['method']}/{ident['controller']}"
    rows = rows.assign(**ident, report=range(len(rows)), final_model=True,
                       decision_validation=False)  # a policy reads its own reward check (cost/reward_grad_evals), not val/*
    if (folder / "eval.json").is_file():
        rows = rows.assign(**read_eval(folder / "eval.json"))
    return add_round_costs(rows)


def _trials(folder: Path) -> list[tuple[str, Path, dict, pd.DataFrame]]:
    """(trial id, folder, initial config, rows in report order) per trial: through Ray's
    ExperimentAnalysis where the experiment state is there, else from the trial folders."""
    out = []
    if list(folder.glob("experiment_state-*.json")):
        from ray.tune import ExperimentAnalysis

        analysis = ExperimentAnalysis(str(folder.resolve()))  # pyarrow wants an absolute path
        frames = analysis.trial_dataframes
        for trial in analysis.trials:
            path = Path(trial.path)
            params = path / "params.json"
            config = json.loads(params.read_text()) if params.is_file() else dict(trial.config)
            out.append((trial.trial_id, path, config, frames.get(trial.trial_id, pd.DataFrame())))
        return out
    for params in sorted(folder.glob("*/params.json")):
        progress = params.parent / "progress.csv"
        rows = read_csv(progress) if progress.is_file() else pd.DataFrame()
        tid = str(rows["trial_id"].iloc[0]) if "trial_id" in rows and len(rows) else params.parent.name.split("_", 2)[-1]
        out.append((tid, params.parent, json.loads(params.read_text()), rows))
    return out


# Class names of the population schedulers as they appear in tuner.pkl's bytes (read, never unpickled).
PBT_MARKERS = re.compile(rb"PopulationBasedTraining|SeededPB|schedulers\.pb2")


def _exploits(folder: Path):
    """All exploits in log order (pbt_global.txt, or the union of the policy files), and whether
    the experiment is PBT/PB2: it logged exploits, or its tuner.pkl names a population scheduler
    (a population that has not exploited yet)."""
    pkl = folder / "tuner.pkl"
    marked = pkl.is_file() and bool(PBT_MARKERS.search(pkl.read_bytes()))
    if (folder / "pbt_global.txt").is_file():
        return read_exploits(folder / "pbt_global.txt"), True
    seen, union = set(), []
    for policy in sorted(folder.glob("pbt_policy_*.txt")):
        for ex in read_exploits(policy):
            key = json.dumps([ex.target, ex.donor, ex.target_iteration, ex.donor_iteration], sort_keys=True)
            if key not in seen:
                seen.add(key)
                union.append(ex)
    return sorted(union, key=lambda ex: ex.target_iteration), marked or bool(union) or bool(list(folder.glob("pbt_policy_*")))


def _load_experiment(folder: Path) -> pd.DataFrame:
    trials = _trials(folder)
    exploits, is_pbt = _exploits(folder)
    by_index = {int(tid.rsplit("_", 1)[-1]): tid for tid, *_ in trials if tid.rsplit("_", 1)[-1].isdigit()}
    # A search (configs differing beyond the seed) picks among its trials: its validation decides.
    searched = len({json.dumps({k: v for k, v in c.items() if k != "seed"}, sort_keys=True, default=str)
                    for _, _, c, _ in trials}) > 1
    frames = []
    for tid, path, config, rows in trials:
        if rows.empty:
            continue
        rows = rows.drop(columns=[c for c in rows if c in TUNE_FIELDS or c.startswith("config/")])
        rows = rows.rename(columns={"training_iteration": "tune/iteration"}).reset_index(drop=True)
        ident = _identity(config, experiment=folder.name, arm=folder.name, trial=tid, model=tid, source=str(path))
        if is_pbt:
            ident["controller"] = "pbt"
        rows = rows.assign(**ident, report=range(len(rows)), final_model=True,
                           decision_validation=ident["controller"] == "pbt" or searched)
        frames.append(_mark_segments(rows, tid, exploits, by_index))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    if is_pbt:
        frame["final_model"] = frame["trial"] == _best_trial(frame, folder)
    return add_round_costs(frame)


def _best_trial(frame: pd.DataFrame, folder: Path | None = None) -> str | None:
    """A PBT population's pick outside a study: the trial with the best last ``val/robust_acc``
    (what ``metaadv tune`` reports as the best trial), as Ray's ``ExperimentAnalysis.get_best_trial``
    says where the experiment's state is on disk; else (trial folders only) the same rule on the rows."""
    if folder is not None and list(folder.glob("experiment_state-*.json")):
        from ray.tune import ExperimentAnalysis

        best = ExperimentAnalysis(str(folder.resolve())).get_best_trial("val/robust_acc", "max", scope="last")
        if best is not None:
            return best.trial_id
    last = frame.sort_values("report", kind="stable").groupby("trial", sort=False).tail(1)
    scores = pd.to_numeric(last.get("val/robust_acc"), errors="coerce")
    return None if scores is None or scores.isna().all() else last.loc[scores.idxmax(), "trial"]


def _mark_segments(rows: pd.DataFrame, tid: str, exploits, by_index: dict) -> pd.DataFrame:
    index = int(tid.rsplit("_", 1)[-1]) if tid.rsplit("_", 1)[-1].isdigit() else -1
    own = [(i, ex) for i, ex in enumerate(exploits) if ex.target_index == index]
    segments, origin = assign_segments(rows, [ex for _, ex in own]) if own else ([0] * len(rows), {})
    donors, donor_segments = [], []
    for seg in segments:
        if seg == 0 or origin.get(seg) is None:  # no exploit, or one lost from the logs
            donors.append(None)
            donor_segments.append(float("nan"))
            continue
        position, ex = own[origin[seg]]
        donors.append(by_index.get(ex.donor_index))
        donor_segments.append(sum(1 for e in exploits[:position] if e.target_index == ex.donor_index))
    return rows.assign(**{"pbt/segment": segments, "pbt/after_exploit": [s > 0 for s in segments],
                          "pbt/donor": donors, "pbt/donor_segment": donor_segments})


def read_eval(path: str | Path) -> dict:
    """A ``metaadv evaluate --json`` report as flat ``eval/*`` values.

    ``eval/trusted`` is the report's own ``trusted`` field where it has one; otherwise True when
    no gradient-masking check failed, False when one did, NaN when none ran (all skipped or absent).
    ``eval/checks_failed`` counts failed checks (skipped ones are not failed).
    """
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the evaluation report {path}: {exc}") from None
    # A check is {"status": "passed" | "failed" | "skipped", ...} (or, in older reports, {"passed": bool}).
    status = [c.get("status", "passed" if c.get("passed") else "failed") for c in (r.get("checks") or {}).values()]
    failed = status.count("failed")
    ran = len(status) - status.count("skipped")
    trusted = r["trusted"] if "trusted" in r else (failed == 0 if ran else float("nan"))
    aa = (r.get("attacks") or {}).get("autoattack") or {}
    out = {"eval/robust_acc": r.get("robust_acc"), "eval/clean_acc": r.get("clean_acc"), "eval/trusted": trusted,
           # a meta-test verdict (metaadv.study.meta_judge) counts tasks and sweeps eps: its headline eps
           "eval/n": r.get("n", r.get("tasks")), "eval/eps": r.get("headline_eps", r.get("eps")), "eval/norm": r.get("norm"),
           "eval/aa_version": aa.get("version", r.get("aa_version")), "eval/checks_failed": failed,
           "eval/untrusted_reasons": "; ".join(r.get("untrusted_reasons") or []), "eval/path": str(path)}
    out.update({f"eval/per_attack/{k}": v for k, v in (r.get("per_attack") or {}).items()})
    return out


def _load_study(folder: Path) -> pd.DataFrame:
    spec = json.loads((folder / "study.json").read_text())
    frames = []
    for arm, entry in (spec.get("arms") or {}).items():
        for exp in entry.get("experiments", []):
            path = folder / "arms" / arm / exp
            if not path.is_dir():
                continue  # an arm not run yet (a study in progress): its models are simply absent
            frame = _load_experiment(path)
            if not frame.empty:
                # A tuned arm's rerun validates for the log only: its search's validation made the pick.
                decides = bool(entry.get("decision_validation", False)) and not (entry.get("kind") == "tuned"
                                                                                 and exp == "rerun")
                frame = frame.assign(arm=arm, decision_validation=decides, cost_source=entry.get("source"),
                                     **_meta_training_cost(folder, entry))
                mode = {"searched": "pbt", "tuned": "last"}.get(entry.get("kind"), "every")
                frames.append(_mark_decision_reads(frame, spec, mode))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True).assign(study=spec.get("study", folder.name), final_model=False)
    models = folder / "models.csv"
    if models.is_file():
        table = read_csv(models, dtype={"trial": str, "experiment": str})
        if len(table):
            frame = _join_models(frame, table, folder)
    return frame


def _meta_training_cost(folder: Path, entry: dict) -> dict:
    """A deployed arm's meta-training cost (its ``summary.json``, all episodes' grad evals), as the
    constant column ``cost/meta_training`` (NaN while the meta-training has not finished)."""
    if not entry.get("meta_training"):
        return {}
    summary = folder / entry["meta_training"] / "summary.json"
    total = json.loads(summary.read_text())["meta_cost"]["total_grad_evals"] if summary.is_file() else float("nan")
    return {"cost/meta_training": float(total)}


def _mark_decision_reads(frame: pd.DataFrame, spec: dict, mode: str) -> pd.DataFrame:
    """``decision_read``: the rows whose validation a decision read (none without ``decision_validation``).
    ``mode``: ``pbt`` (a searched arm: :func:`analysis.cost.decision_reads` with the study's PBT interval
    in its time attribute), ``last`` (a random search picks at the end), ``every`` (a controller that
    reads its validation every round)."""
    frame = frame.assign(decision_read=frame["decision_validation"].astype(bool))
    if mode == "every" or not frame["decision_validation"].any():
        return frame
    settings = spec.get("pbt") or {}
    attr = settings.get("time_attr", "cost/grad_evals")
    interval = settings.get("perturbation_interval") if mode == "pbt" else None
    for _, rows in frame.sort_values("report", kind="stable").groupby(["experiment", "trial"], sort=False):
        time = rows[attr] if attr in rows else pd.Series(range(1, len(rows) + 1), index=rows.index, dtype=float)
        frame.loc[rows.index, "decision_read"] = decision_reads(time.fillna(0.0), interval,
                                                                float(settings.get("burn_in_period") or 0.0))
    return frame.assign(decision_read=frame["decision_read"] & frame["decision_validation"].astype(bool))


def load_judged(*paths) -> pd.DataFrame:
    """The judge phase of every study at or under ``paths``: one row per judged model (each arm's best
    by its evaluation, evaluated again with the size's ``judge`` options, e.g. the standard
    AutoAttack). Columns: ``study``, ``arm``, ``model``, ``seed``, ``eval/*`` (the first verdict, as
    :func:`read_eval` names it) and the same fields of the second verdict as ``judge/*``. Empty (no
    rows) where no study was judged."""
    rows = []
    for p in paths:
        for kind, folder in discover(Path(p)):
            models = folder / "models.csv"
            if kind != "study" or not models.is_file():
                continue
            name = json.loads((folder / "study.json").read_text()).get("study", folder.name)
            table = read_csv(models, dtype={"trial": str, "experiment": str, "judge": str})
            for _, m in table.iterrows():
                judge = m.get("judge")
                if not isinstance(judge, str) or not (folder / judge).is_file():
                    continue
                first = read_eval(folder / m["eval"]) if (folder / m["eval"]).is_file() else {}
                again = {"judge/" + k[len("eval/"):]: v for k, v in read_eval(folder / judge).items()}
                rows.append({"study": name, "arm": m["arm"], "model": m["model"], "seed": m["seed"], **first, **again})
    # No judged model: still the columns, so the report's judged.csv is a header, not a lone newline.
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=JUDGED_COLUMNS)


def _join_models(frame: pd.DataFrame, models: pd.DataFrame, folder: Path) -> pd.DataFrame:
    frame = frame.copy()
    for _, m in models.iterrows():
        hit = (frame["arm"] == m["arm"]) & (frame["experiment"] == m["experiment"]) & (frame["trial"] == m["trial"])
        frame.loc[hit, ["final_model", "model"]] = [True, m["model"]]
        if "seed" in m and not pd.isna(m["seed"]):
            frame.loc[hit, "seed"] = int(m["seed"])
        # The paired unit (models.csv ``pair``: a searched model's population); folders written before it: the seed.
        pair = m.get("pair")
        if pair is None or pd.isna(pair):  # written before the column: a searched model's population, else its seed
            population = re.fullmatch(r"pbt-(\d+)", str(m["model"]))
            pair = int(population.group(1)) + 1 if population else frame.loc[hit, "seed"]
        frame.loc[hit, "pair"] = pair
        if isinstance(m.get("eval"), str) and (folder / m["eval"]).is_file():
            for key, value in read_eval(folder / m["eval"]).items():
                if key not in frame:
                    frame[key] = pd.Series([None] * len(frame), dtype=object)
                frame.loc[hit, key] = value
    return numeric_columns(frame, [c for c in frame if c.startswith("eval/")])


def numeric_columns(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """``columns`` of ``frame`` as numbers where every value is a number or missing (the ``eval/*``
    columns are filled model by model into object columns); booleans (``eval/trusted``) and text
    (``eval/norm``, ``eval/path``) stay as they are."""
    for c in columns:
        values = frame[c].dropna()
        if frame[c].dtype == object and not values.map(lambda v: isinstance(v, (bool, str))).any():
            frame[c] = pd.to_numeric(frame[c])
    return frame
