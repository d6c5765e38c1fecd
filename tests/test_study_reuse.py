"""``metaadv study --reuse DIR``: a unit whose every trial has a finished twin (same config, same
seed) in a donor study is copied in, not trained; anything else runs. Checked without Ray: a
reused unit never reaches Tune, and the tests ask the runner's reuse step directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaadv.errors import UserError
from metaadv.study.folder import Folder, StudyOptions
from metaadv.study.progress import Progress
from metaadv.study.reuse import Donors, check_donors, evaluation_request, expected_configs, normal
from metaadv.study.spec import Arm
from metaadv.study.units import Runner, Unit, phase1_units
from metaadv.tune.space import Grid
from tune_experiments.learner import STUDY as LEARNER


def _study():
    arms = (Arm("las", "tuned", "learned", {"controller": "las"}, space={"las_eps": Grid((0.5, 1.0), (0.75, 1.25))},
                search="grid"),
            Arm("fixed", "single", "fixed", {"controller": "schedule"}))
    return LEARNER.replace(arms=arms, contrasts=(), aim={}, sizes={"tiny": LEARNER.sizes["tiny"]})


def _runner(study, root: Path, donors=()):
    lines = []
    opts = StudyOptions(size="tiny", out=str(root), reuse=tuple(str(d) for d in donors), log=lambda *a, **k: lines.append(a[0]))
    return Runner(study, opts, Folder(root, str(root)), Progress(lambda *a, **k: None, 100)), lines


def _donor(tmp_path: Path, runner: Runner, unit: Unit, name="donor", drop=None, error_on=None) -> Path:
    """A donor study folder holding one finished trial (a folder with a checkpoint) per config."""
    root = tmp_path / name
    trials = []
    for i, config in enumerate(expected_configs(runner, unit)):
        if i == drop:
            continue
        path = root / "arms" / unit.arm.name / unit.name / f"trial_{i}"
        (path / "checkpoint_000002").mkdir(parents=True)
        (path / "checkpoint_000002" / "checkpoint.pt").write_bytes(b"w")
        (path / "progress.csv").write_text("round\n1\n")
        trials.append({"trial": f"t{i}", "seed": config["seed"], "config": json.loads(json.dumps(config)),
                       "metrics": {"val/robust_acc": 0.5}, "checkpoint": str(path / "checkpoint_000002"),
                       "path": str(path), "error": "boom" if i == error_on else None})
    (root / "study.json").write_text("{}")
    (root / "progress.json").write_text(json.dumps({"experiments": {f"{unit.arm.name}/{unit.name}": trials}}))
    return root


def test_a_grid_searchs_every_trial_found_in_a_donor_is_copied_in_and_nothing_trains(tmp_path):
    study = _study()
    probe, _ = _runner(study, tmp_path / "probe")
    search = next(u for u in phase1_units(study, study.sizes["tiny"]) if u.name == "search")
    configs = expected_configs(probe, search)
    seeds = study.sizes["tiny"].search_samples
    assert len(configs) == 2 * seeds and {tuple(c["las_eps"]) for c in configs} == {(0.5, 1.0), (0.75, 1.25)}
    donor = _donor(tmp_path, probe, search)
    runner, lines = _runner(study, tmp_path / "study", [donor])
    trials = runner.reuse(search)
    assert trials is not None and len(trials) == len(configs) and "reused from" in lines[-1]
    for t in trials:
        assert Path(t["checkpoint"]).is_dir() and str(tmp_path / "study") in t["path"]
        assert t["reused_from"].startswith(str(donor))
    assert runner.folder.finished("las", "search") == trials  # recorded: a --resume skips it
    assert runner.run(search) == trials and "finished before" in lines[-1]
    assert len(list((tmp_path / "study" / "arms" / "las" / "search").iterdir())) == len(configs)


@pytest.mark.parametrize("flaw", ["missing", "errored", "other_config"])
def test_a_unit_is_reused_whole_or_not_at_all(tmp_path, flaw):
    study = _study()
    probe, _ = _runner(study, tmp_path / "probe")
    unit = next(u for u in phase1_units(study, study.sizes["tiny"]) if u.arm.name == "fixed")
    donor = _donor(tmp_path, probe, unit, drop=0 if flaw == "missing" else None, error_on=0 if flaw == "errored" else None)
    if flaw == "other_config":  # one key differs: another experiment, not a twin
        other = study.replace(base={**study.base, "lr": 3e-3})
        runner, _ = _runner(other, tmp_path / "study", [donor])
    else:
        runner, _ = _runner(study, tmp_path / "study", [donor])
    assert runner.reuse(unit) is None
    assert not (tmp_path / "study" / "arms" / "fixed").exists()


def test_a_config_compares_tuples_as_lists_and_files_by_their_bytes(tmp_path):
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    a.write_bytes(b"policy")
    b.write_bytes(b"policy")
    c.write_bytes(b"other")
    assert normal({"las_eps": (0.5, 1.0), "policy_file": str(a)}) == normal({"policy_file": str(b), "las_eps": [0.5, 1.0]})
    assert normal({"policy_file": str(a)}) != normal({"policy_file": str(c)})
    assert normal({"seed": 1}) != normal({"seed": 2})


def test_searchers_that_draw_their_values_are_never_matched(tmp_path):
    study = _study().replace(arms=(Arm("tuned", "tuned", "random search", {"controller": "schedule"}),))
    runner, _ = _runner(study, tmp_path)
    (unit,) = phase1_units(study, study.sizes["tiny"])
    assert expected_configs(runner, unit) is None and Donors([]).match(None) is None


def test_a_donor_must_be_a_study_folder_refused_in_one_line_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="not a study folder"):
        check_donors([str(tmp_path)])
    out = tmp_path / "new"
    proc = subprocess.run([sys.executable, "-m", "metaadv.cli", "study", "learner", "--size", "tiny", "--out", str(out),
                           "--reuse", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().count("\n") == 0 and "--reuse" in proc.stderr


def test_a_meta_training_is_reused_only_with_the_same_config_and_settings(tmp_path):
    from metaadv.checkpoint import save_checkpoint
    from metaadv.config import TrainConfig
    from metaadv.training.policy_train import FILES, MetaSettings
    from dataclasses import asdict

    config, settings = TrainConfig.from_dict({"controller": "policy", "seed": 0}), MetaSettings(episodes=4, parallel=2)
    meta = tmp_path / "donor" / "meta" / "policy"
    meta.mkdir(parents=True)
    save_checkpoint({"config": config.to_dict(), "settings": asdict(settings)}, meta / FILES["state"])
    (meta / FILES["summary"]).write_text("{}")
    donors = Donors([tmp_path / "donor"])
    assert donors.meta_folder(config, settings) == meta
    assert donors.meta_folder(config, MetaSettings(episodes=6, parallel=2)) is None
    assert donors.meta_folder(TrainConfig.from_dict({"controller": "policy", "seed": 0, "lr": 3e-3}), settings) is None
    (meta / FILES["summary"]).unlink()  # unfinished: resumed where it runs, never copied half done
    assert donors.meta_folder(config, settings) is None


def test_a_reused_models_verdict_is_reused_only_for_the_same_request_and_new_ones_record_theirs(tmp_path, monkeypatch):
    from metaadv.study import evaluate

    donor = tmp_path / "donor"
    (donor / "eval" / "las").mkdir(parents=True)
    (donor / "study.json").write_text("{}")
    (donor / "progress.json").write_text('{"experiments": {}}')
    # Here: two reused models (las trained in the donor as d/las1, d/las2) and the fixed models they transfer from.
    models = [{"arm": "las", "model": f"seed{s}", "seed": s, "eval": f"eval/las/seed{s}.json", "_checkpoint": f"h/las{s}",
               "_origin": f"d/las{s}"} for s in (1, 2)]
    models += [{"arm": "fixed", "model": f"seed{s}", "seed": s, "eval": f"eval/fixed/seed{s}.json",
                "_checkpoint": f"h/fixed{s}", "_origin": f"d/fixed{s}"} for s in (1, 2, 3)]
    origins = {m["_checkpoint"]: m["_origin"] for m in models}
    options = {"n": 10, "surrogates": ["arm:fixed"]}
    per_model = lambda m: evaluate.surrogate_options(options, m, models)  # noqa: E731
    # The donor judged las1 with the transfer from d/fixed2 (as this study will) and las2 from d/fixed9.
    said = {1: evaluation_request(models[0], 0.3, per_model(models[0]), origins),
            2: {**evaluation_request(models[1], 0.3, per_model(models[1]), origins),
                "options": {"n": 10, "surrogates": ["d/fixed9"]}}}
    assert said[1] == {"checkpoint": "d/las1", "eps": 0.3, "options": {"n": 10, "surrogates": ["d/fixed2"]}}
    for s, request in said.items():
        (donor / "eval" / "las" / f"seed{s}.json").write_text(json.dumps(
            {"robust_acc": 0.4 + s / 100, "clean_acc": 0.9, "trusted": True, "request": request}))
    asked = {}

    def tasks(judge, jobs):  # stands in for Ray: writes a verdict for each model really judged
        for k, (ckpt, out, eps, own) in jobs.items():
            asked[k] = own
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps({"robust_acc": 0.1, "clean_acc": 0.5, "trusted": True}))
            yield k, evaluate.verdict_of(json.loads(Path(out).read_text()))

    monkeypatch.setattr(evaluate, "run_as_tasks", tasks)
    opts = StudyOptions(size="tiny", out=str(tmp_path / "here"), reuse=(str(donor),), log=lambda *a, **k: None)
    verdicts = evaluate.evaluate_into(tmp_path / "here", models[:2], "eval", 0.3, per_model, opts,
                                      Progress(lambda *a, **k: None, 2), none_left="", starting=str,
                                      describe=lambda m, v: "", everyone=models)
    assert verdicts[("las", "seed1")]["robust_acc"] == pytest.approx(0.41) and ("las", "seed1") not in asked  # copied, not judged
    assert ("las", "seed2") in asked and verdicts[("las", "seed2")]["robust_acc"] == 0.1  # its surrogate differs
    copied = json.loads((tmp_path / "here" / "eval" / "las" / "seed1.json").read_text())
    assert copied["reused_from"].endswith("seed1.json")
    judged = json.loads((tmp_path / "here" / "eval" / "las" / "seed2.json").read_text())
    assert judged["request"] == {"checkpoint": "d/las2", "eps": 0.3, "options": {"n": 10, "surrogates": ["d/fixed3"]}}
