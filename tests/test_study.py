"""``metaadv study``: the declared study is consistent, and a tiny study runs end to end under Ray,
leaves the contract's folder layout (STUDY_CONTRACT.md), and a --resume of it redoes nothing."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import math
import time
from pathlib import Path

import pytest

from metaadv.errors import UserError
from metaadv.tune.space import Grid
from metaadv.study.spec import ARM_KINDS, Arm, policy_grid_config
from tune_experiments.learned_vs_searched import EPS, LR, SPACE, STUDY
from tune_experiments.registry import STUDIES, load_study

from .conftest import local_ray

ARMS = ("fixed", "pgd-k", "las", "las-frozen", "policy", "random-policy", "searched", "replay-searched", "fixed-long")



def _tiny_alone():
    """The tiny size without its sub-spaces of the study's own tuned arms (``arm_space``): for a test
    that declares tuned arms of those names with other grids."""
    import dataclasses

    return {"tiny": dataclasses.replace(STUDY.sizes["tiny"], arm_space={})}

def test_the_study_declares_the_issue_arms_and_contrasts_over_existing_arms():
    assert tuple(a.name for a in STUDY.arms) == ARMS
    assert all(a.kind in ARM_KINDS for a in STUDY.arms)
    names = {a.name for a in STUDY.arms}
    assert {(a, b) for a, b, _ in STUDY.contrasts} == {
        ("las", "pgd-k"), ("policy", "pgd-k"), ("replay-searched", "pgd-k"),
        ("searched", "fixed-long"), ("pgd-k", "fixed")}
    # The aim is declared before any run, in study.json, over declared contrasts.
    aim = STUDY.declaration("smoke")["aim"]
    assert aim["min_effect"] == 0.03 and aim["planned_seeds"] == 10
    assert set(aim["contrasts"]) <= {f"{a} - {b}" for a, b, _ in STUDY.contrasts}
    assert all(a in names and b in names for a, b, _ in STUDY.contrasts)
    assert load_study("learned_vs_searched") is STUDY and "learned_vs_searched" in STUDIES


def test_one_space_serves_the_policy_grids_the_random_search_and_pbt():
    from metaadv.study.units import Runner, phase1_units

    for size in STUDY.sizes:
        for arm in ("policy", "random-policy"):
            config = STUDY.arm_config(arm, size)
            assert config["policy_eps"] == [round(v / EPS, 10) for v in SPACE["eps"].values]
            assert config["policy_lr_mult"] == [round(v / LR, 10) for v in SPACE["lr"].values]
            assert config["policy_steps"] == list(SPACE["steps"].values) and config["policy_adv_mix"] == []
        runner = Runner(STUDY, _Opts(size), None, None)
        searches = [u for u in phase1_units(STUDY, STUDY.sizes[size]) if u.space and u.arm.kind == "searched"]
        assert {u.arm.name for u in phase1_units(STUDY, STUDY.sizes[size]) if u.space} == {"searched", "pgd-k", "las"}
        assert all(runner.experiment(u).space == SPACE for u in searches)
        from metaadv.tune.schedulers import build_scheduler

        pbt = runner.experiment(next(u for u in searches if u.scheduler == "pbt"))
        scheduler = build_scheduler(pbt, size)  # PBT compares trials at equal training cost
        assert pbt.time_attr == scheduler._time_attr == "cost/grad_evals"
        assert 0 < scheduler._perturbation_interval <= STUDY.sizes[size].budget_grad_evals / 3
        declared = STUDY.declaration(size)["arms"]
        for u in phase1_units(STUDY, STUDY.sizes[size]):  # study.json names the folders phase 1 writes
            assert u.name in declared[u.arm.name]["experiments"]
        assert len(declared["searched"]["experiments"]) == STUDY.sizes[size].populations


def test_every_run_stops_at_the_same_per_model_budget_and_sizes_are_big_enough():
    for size, s in STUDY.sizes.items():
        budgets = {STUDY.arm_config(a, size)["budget_grad_evals"] for a in ARMS if a != "fixed-long"}
        assert budgets == {s.budget_grad_evals}
        # The budget is the size's rounds of the fixed schedule (PGD-10: 11 passes per example), and
        # the budget ends it, not its rounds: its eps ramp starts with a clean step (one pass).
        c = STUDY.arm_config("fixed", size)
        per_round = 11 * (c["batch_size"] * c["steps_per_round"] or 3500)  # an epoch: mnist5k's 3,500 examples
        assert s.budget_grad_evals == STUDY.fixed_rounds(size) * per_round < c["rounds"] * per_round
        # A cheaper attack buys more rounds: only the budget stops PGD-4.
        assert STUDY.arm_config("pgd-k", size)["rounds"] * 3 * per_round / 11 > s.budget_grad_evals  # PGD-2
    assert STUDY.sizes["medium"].seeds >= 5 and STUDY.sizes["medium"].populations >= 3


def test_fixed_long_trains_at_the_searched_arms_declared_cost_b_one_model_per_population():
    for size, s in STUDY.sizes.items():
        c = STUDY.arm_config("fixed-long", size)
        pbt = {**STUDY.pbt, **s.pbt}
        searched = STUDY.arm_config("searched", size)
        reads = 1 + s.budget_grad_evals // pbt["perturbation_interval"]  # each member: every interval, and the pick
        read = searched["val_size"] * (searched.get("val_apgd_iters", 20) + 1 if searched.get("val_attack", "pgd") != "pgd"
                                       else searched["val_pgd_steps"])
        assert c["budget_grad_evals"] == s.population * (s.budget_grad_evals + reads * read)
        assert c["controller"] == "schedule" and c["rounds"] * 11 * (c["batch_size"] * c["steps_per_round"] or 3500) \
            >= c["budget_grad_evals"]
        assert STUDY.planned("fixed-long", size) == (s.populations, s.populations)
        assert STUDY.declaration(size)["arms"]["fixed-long"]["budget_grad_evals"] == c["budget_grad_evals"]
    from metaadv.study.units import phase1_units

    (unit,) = [u for u in phase1_units(STUDY, STUDY.sizes["medium"]) if u.arm.name == "fixed-long"]
    assert unit.seeds == tuple(range(1, STUDY.sizes["medium"].populations + 1))  # paired with the populations


def test_pbt_at_medium_and_full_decides_often_one_dimension_at_a_time_on_apgd_ce():
    # Issue 21, faults 6 and 7: populations of 8 (2 clones a decision), a decision every tenth of the
    # budget or finer (also in rounds: PBT decides when a trial reports), one key explored at a time,
    # and the decisions read the reference APGD-CE on 200 digits. The smoke keeps a population of 4.
    from metaadv.study.units import Runner, phase1_units
    from metaadv.tune.schedulers import build_scheduler

    assert STUDY.sizes["smoke"].population == 4 and STUDY.sizes["smoke"].populations == 1
    for size in ("medium", "full"):
        s = STUDY.sizes[size]
        unit = next(u for u in phase1_units(STUDY, s) if u.scheduler == "pbt")
        scheduler = build_scheduler(Runner(STUDY, _Opts(size), None, None).experiment(unit), size)
        assert s.population == 8 and math.ceil(s.population * scheduler._quantile_fraction) == 2
        assert 0 < scheduler._perturbation_interval <= s.budget_grad_evals / 10
        assert s.pbt["burn_in_period"] <= s.budget_grad_evals / 10 and scheduler._one_dim_space == SPACE
        searched = STUDY.arm_config("searched", size)
        assert (searched["val_attack"], searched["val_apgd_iters"], searched["val_size"]) == ("apgd-ce", 20, 200)
        assert STUDY.arm_config("fixed", size).get("val_attack", "pgd") == "pgd"  # logging only elsewhere
        # A PGD-10 round (11 passes an example) reports within a tenth of the budget; a PGD-1 round
        # (2 passes) still reaches the budget within the round cap; the replay trains the same rounds.
        examples = searched["batch_size"] * searched["steps_per_round"] or 3500
        assert 11 * examples <= s.budget_grad_evals / 10 or 11 * examples <= scheduler._perturbation_interval
        assert searched["rounds"] * 2 * examples >= s.budget_grad_evals
        assert STUDY.arm_config("replay-searched", size)["steps_per_round"] == searched["steps_per_round"]


@pytest.mark.parametrize("changes, message", [
    ({"contrasts": (("las", "nobody", "?"),)}, "unknown arm 'nobody'"),
    ({"space": {**SPACE, "trades_beta": Grid(1.0, 6.0)}}, "cannot choose 'trades_beta'"),
    ({"arms": STUDY.arms[::-1]}, "must be declared before it"),
    ({"aim": {"min_effect": 3}}, "fraction in \\(0, 1\\)"),
    ({"aim": {"min_effect": 0.03, "contrasts": ["las - nobody"]}}, "undeclared contrast"),
])
def test_bad_declarations_fail_before_ray_starts(changes, message):
    with pytest.raises(UserError, match=message):
        STUDY.replace(**changes)


def test_policy_arms_pay_a_reward_check_of_about_a_tenth_of_a_round_and_count_it_in_cost_b():
    from metaadv.data import load_splits

    for size, s in STUDY.sizes.items():
        fixed = STUDY.arm_config("fixed", size)
        pgd10_round = 11 * (fixed["batch_size"] * fixed["steps_per_round"] or 3500)
        pool = {"digits": len(load_splits("digits").val_y), "mnist5k": 500}[fixed["dataset"]]
        for arm in ("policy", "random-policy"):
            c = STUDY.arm_config(arm, size)
            check = (2 * c["policy_reward_steps"] + 1) * c["policy_reward_size"]
            assert 0.05 <= check / pgd10_round <= 0.15, (size, arm, check, pgd10_round)
            assert c["policy_reward_size"] <= pool
            assert STUDY.cost_b_columns(arm, size) == ["cost/grad_evals", "cost/reward_grad_evals"]
        assert "policy_reward_size" not in fixed and "policy_reward_size" not in STUDY.arm_config("searched", size)
        assert STUDY.cost_b_columns("searched", size) == ["cost/grad_evals", "cost/eval_grad_evals"]
        assert STUDY.cost_b_columns("fixed", size) == ["cost/grad_evals"]


def test_policy_grids_leave_undeclared_dimensions_to_the_config():
    grids = policy_grid_config({"steps": Grid(1, 5)}, 0.3, 1e-3)
    assert grids["policy_steps"] == [1.0, 5.0] and grids["policy_eps"] == [] and grids["policy_lr_mult"] == []


# Arm kinds the engine keeps for other studies, though learned_vs_searched no longer declares them.
LEARNED = Arm("learned", "single", "the REINFORCE policy learning in the run",
              {"controller": "policy", "eps_ramp_rounds": 0, "lr_schedule": "constant"})
REPLAY_LEARNED = Arm("replay-learned", "replay", "a learned run's schedule, retrained on another seed",
                     {"controller": "replay", "eps_ramp_rounds": 0, "lr_schedule": "constant"}, source="learned")


class _Opts:
    def __init__(self, size):
        self.size, self.cpus_per_trial = size, None


# ----------------------------------------------------------------------------------------------
# End to end under Ray (slow: a few minutes on a shared 2-core machine)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    pytest.importorskip("ray")
    with local_ray("rs"):
        yield


def _trial_folders(root: Path) -> set[str]:
    return {str(p) for p in root.glob("arms/*/*/metaadv_trial_*")}


def _in_progress(root: Path) -> tuple[set, set]:
    """(finished, started and unfinished) experiments of a study folder, as ARM/EXPERIMENT."""
    done_file = root / "progress.json"
    try:
        finished = set(json.loads(done_file.read_text())["experiments"]) if done_file.is_file() else set()
    except ValueError:  # caught mid-write
        finished = set()
    started = {f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("arms/*/*/experiment_state-*.json")
               if any(r.stat().st_size for r in p.parent.glob("metaadv_trial_*/result.json"))}
    return finished, started - finished


def _start_and_kill_mid_experiment(root: Path, log: Path) -> tuple[set, set]:
    """``metaadv study ... --size tiny`` in its own process group (its own local Ray), killed with
    SIGKILL once one experiment is recorded as finished and another has a snapshot and a trial
    result: a driver killed in the middle of a Tune experiment. Which one depends on the machine's
    speed (a tiny experiment can finish between two looks), so the group is frozen, looked at
    again, and killed only while some experiment is really half-done. Returns (finished, killed)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A snapshot at every step, copied to storage every second: with the default 5 s copy, a tiny
    # experiment on a quiet machine finishes between two copies and is never seen half-done.
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               TUNE_GLOBAL_CHECKPOINT_S="0", METAADV_TUNE_SYNC_S="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "metaadv.cli", "study", "learned_vs_searched", "--size", "tiny",
                                 "--out", str(root)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while True:
            assert proc.poll() is None, "the study ended before it was killed:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the study never had a finished and a half-done experiment"
            finished, killed = _in_progress(root)
            if finished and killed:
                os.killpg(proc.pid, signal.SIGSTOP)
                finished, killed = _in_progress(root)
                if finished and killed:
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group already ended: the assertion above says why
            pass
        proc.wait()
    return finished, killed


@pytest.mark.slow
def test_a_tiny_study_killed_mid_experiment_resumes_to_the_end_and_resume_then_redoes_nothing(ray_local, tmp_path,
                                                                                              capfd):
    from metaadv.study import MODELS_COLUMNS, StudyOptions, run_study

    root = tmp_path / "study"
    finished, killed = _start_and_kill_mid_experiment(root, tmp_path / "killed.log")
    fixed = {p: p.stat().st_mtime for p in root.glob("arms/fixed/fixed/metaadv_trial_*/result.json")}
    assert "fixed/fixed" in finished  # the study's first experiment
    lines: list[str] = []
    log = lambda *a, **k: lines.append(" ".join(map(str, a)))  # noqa: E731
    capfd.readouterr()
    run_study(STUDY, StudyOptions(size="tiny", out=str(root), resume=True, log=log))
    captured = capfd.readouterr()
    # The finished experiment was skipped, the killed one continued (Tuner.restore: its trials kept
    # their folders, none started again from scratch), and everything after it ran.
    assert {p: p.stat().st_mtime for p in root.glob("arms/fixed/fixed/metaadv_trial_*/result.json")} == fixed
    for key in finished:
        assert any(f"{key}: finished before, skipped" in line for line in lines), key
    for key in killed:
        assert any(f"{key}: resuming" in line for line in lines), key
    assert "CheckpointConfig(num_to_keep)" not in captured.out + captured.err  # Ray's snapshot warning

    meta = json.loads((root / "study.json").read_text())
    assert (meta["study"], meta["size"], meta["precision"], meta["val_eps"]) == ("learned_vs_searched", "tiny", "fp32", 0.2)
    assert meta["evaluation"]["aa_version"] == "fast" and meta["budget_grad_evals"] == STUDY.sizes["tiny"].budget_grad_evals
    assert set(meta["arms"]) == set(ARMS) and meta["arms"]["searched"]["decision_validation"] is True
    assert meta["arms"]["fixed"]["decision_validation"] is False and meta["status"] == "done"
    assert meta["arms"]["policy"]["cost_b"] == ["cost/grad_evals", "cost/reward_grad_evals"]
    # The deployed policy was meta-trained in the study (meta/policy) and its models ran with that file.
    summary = json.loads((root / "meta" / "policy" / "summary.json").read_text())
    assert summary["episodes"] == STUDY.sizes["tiny"].episodes and summary["meta_cost"]["total_grad_evals"] > 0
    assert meta["pbt_time_attr"] == meta["pbt"]["time_attr"] == "cost/grad_evals"
    expected = set(ARMS)
    assert set(meta["phase_seconds_last_session"]) == {"1/4 train", "2/4 derive", "3/4 evaluate", "4/4 judge"}
    assert meta["judge"] == STUDY.sizes["tiny"].judge

    with open(root / "models.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == MODELS_COLUMNS
    assert {r["arm"] for r in rows} == expected
    assert sum(r["arm"] == "searched" for r in rows) == STUDY.sizes["tiny"].populations
    for r in rows:
        assert (root / r["checkpoint"] / "checkpoint.pt").is_file()
        verdict = json.loads((root / r["eval"]).read_text())
        assert 0.0 <= verdict["robust_acc"] <= verdict["clean_acc"] <= 1.0 and verdict["n"] == 20
        if r["arm"] != "searched":
            assert int(r["seed"]) in (1, 2)  # single-run, rerun, replay and transfer arms share seeds: paired
        # The paired unit: the seed, or a searched model's population (its replay and fixed-long train on p + 1).
        assert int(r["pair"]) == (int(r["model"].rsplit("-", 1)[-1]) + 1 if r["arm"] == "searched" else int(r["seed"]))
    assert {r["arm"]: int(r["seed"]) for r in rows if r["arm"] in ("fixed-long", "replay-searched")} == \
        {"fixed-long": 1, "replay-searched": 1}
    # Phase 4 judged each arm's best model (by its phase-3 verdict; ties to the first) once more.
    for arm in expected:
        mine = [r for r in rows if r["arm"] == arm]
        verdicts = [json.loads((root / r["eval"]).read_text()) for r in mine]
        robust = [v["robust_acc"] if v["trusted"] else -1.0 for v in verdicts]  # untrusted ones never judged
        judged = [r for r in mine if r["judge"]]
        if max(robust) < 0:
            assert not judged, arm
            continue
        assert len(judged) == 1 and judged[0] is mine[robust.index(max(robust))], arm
        again = json.loads((root / judged[0]["judge"]).read_text())
        assert again["n"] == STUDY.sizes["tiny"].judge["n"] and again["robust_acc"] <= again["clean_acc"]
    assert any(r["judge"] for r in rows)
    # The per-model budget (cost a) stopped every run at its first round that reached it.
    budget = meta["budget_grad_evals"]
    progress = json.loads((root / "progress.json").read_text())["experiments"]
    # study.json names every experiment folder that ran (the analysis finds them there).
    assert set(progress) == {f"{arm}/{exp}" for arm, entry in meta["arms"].items() for exp in entry["experiments"]}
    assert all((root / "arms" / key).is_dir() for key in progress)
    # Each finished experiment's trials kept their last checkpoint only (metaadv.study.disk), the
    # killed and resumed one's included, and everything below still reads them.
    from metaadv.study.disk import kept_checkpoints

    for key, trials in progress.items():
        for t in trials:
            assert set(Path(t["path"]).glob("checkpoint_*")) == kept_checkpoints(t) != set(), (key, t["trial"])
    for key, trials in progress.items():
        for t in trials:
            assert t["metrics"]["cost/grad_evals"] >= budget or key == "fixed/fixed", key
    assert any("ETA" in line for line in lines) and any("cuts:" in line for line in lines)

    # The best PBT trial's lineage, as analysis rebuilds it from Ray's logs, is the history its final
    # checkpoint carries (an exploit restores the donor's rows; the trial appends its own).
    from analysis.lineage import trial_schedule
    from metaadv.checkpoint import read_checkpoint
    from metaadv.study.units import best_trial

    best = best_trial(progress["searched/pbt-0"])
    lineage = trial_schedule(root / "arms" / "searched" / "pbt-0", best["trial"])
    rows = read_checkpoint(Path(best["checkpoint"]) / "checkpoint.pt")["rows"]
    assert lineage["round"].tolist() == list(range(1, len(rows) + 1))
    for col in ("hp/eps", "hp/steps", "hp/lr"):
        assert lineage[col].tolist() == pytest.approx([r[col] for r in rows]), col

    # Replays: the best PBT lineage and the learned runs' rows, written as schedules, and each replay
    # trial trained round by round under its schedule, from scratch on a paired seed.
    from metaadv.training.replay import read_schedule

    written = read_schedule(next((root / "schedules" / "replay-searched").glob("pbt-0-*.csv")))
    assert [r["round"] for r in written] == lineage["round"].tolist()
    for col in ("hp/eps", "hp/steps", "hp/lr"):
        assert [r[col] for r in written] == pytest.approx(lineage[col].tolist()), col
    for arm in ("replay-searched",):
        assert len(list((root / "schedules" / arm).glob("*.csv"))) >= 1
        for t in progress[f"{arm}/{arm}"]:
            schedule = read_schedule(t["config"]["schedule"])
            assert Path(t["config"]["schedule"]).parent == root / "schedules" / arm
            got = read_checkpoint(Path(t["checkpoint"]) / "checkpoint.pt")["rows"]
            assert len(got) == len(schedule) and t["config"]["controller"] == "replay"
            for want, row in zip(schedule, got):
                for col in ("hp/eps", "hp/steps", "hp/lr", "hp/step_ratio"):
                    assert row[col] == pytest.approx(want[col]), (arm, want["round"], col)

    # metaadv analyze reads the real study folder into a report.
    from metaadv.cli import main

    report = tmp_path / "report"
    assert main(["analyze", str(root), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert all(arm in text for arm in expected) and list(report.glob("*.png")) and list(report.glob("*.csv"))

    trials, evals = _trial_folders(root), {p: p.stat().st_mtime for p in root.glob("eval/*/*.json")}
    lines.clear()
    run_study(STUDY, StudyOptions(size="tiny", out=str(root), resume=True, log=log))
    assert _trial_folders(root) == trials
    assert {p: p.stat().st_mtime for p in root.glob("eval/*/*.json")} == evals
    deployed = sum(a.kind == "deployed" for a in STUDY.arms)  # each meta-training, finished before, is skipped too
    assert sum("finished before, skipped" in line for line in lines) == len(progress) + deployed
    assert any("every model was evaluated before" in line for line in lines)
    assert any("every arm's best model was judged before" in line for line in lines)

    sessions = json.loads((root / "study.json").read_text())["sessions"]  # the resume, then the no-op one
    assert len(sessions) == 2 and sessions[0]["seconds"] > sessions[1]["seconds"]
    assert sessions[0]["phases"]["1/4 train"] > sessions[1]["phases"]["1/4 train"]

    with pytest.raises(UserError, match="already holds a study"):
        run_study(STUDY, StudyOptions(size="tiny", out=str(root), log=log))


def test_untrusted_verdicts_are_flagged_counted_at_their_worst_case_and_never_lead():
    from metaadv.study.evaluate import verdict_of
    from metaadv.study.progress import summary_lines

    def v(robust, trusted="absent", square=False):
        r = {"robust_acc": robust, "clean_acc": 0.9, "per_attack": {"pgd": robust, **({"square": robust} if square else {})}}
        if trusted != "absent":
            r.update(trusted=trusted, untrusted_reasons=[] if trusted else ["fgsm_vs_pgd failed"])
        return verdict_of(r)

    # las's untrusted model would lead by far (no Square: it counts 0, not dropped); random-policy's
    # only model is untrusted but Square measured it; fixed's second verdict predates the trust key.
    verdicts = {("fixed", "seed1"): v(0.40, True), ("fixed", "seed2"): v(0.50),
                ("las", "seed1"): v(0.95, False), ("las", "seed2"): v(0.30, True),
                ("random-policy", "seed1"): v(0.20, False, square=True), ("pgd-k", "seed1"): v(0.44, True)}
    models = [{"arm": a, "model": m} for a, m in verdicts]
    lines = summary_lines(STUDY, "tiny", {"folder": "F", "seconds": 1.0, "models": models, "verdicts": verdicts})
    row = {line.split()[0]: line for line in lines[4:] if line.split()[0] in {a for a, _ in verdicts}}
    assert row["fixed"].split()[1:5] == ["2", "0.450", "0.900", "0"]  # the unknown-trust verdict counts
    assert row["las"].split()[1:5] == ["2", "0.150", "0.900", "1"] and "UNTRUSTED" in row["las"]
    assert row["random-policy"].split()[1:5] == ["1", "0.200", "0.900", "1"] and "UNTRUSTED" in row["random-policy"]
    lead = next(line for line in lines if "highest mean robust" in line)
    assert ": fixed (0.450)" in lead and "1 verdict(s) of unknown trust" in lead
    assert verdict_of({"robust_acc": 0.1, "clean_acc": 0.2})["trusted"] is None


def test_cost_b_counts_a_policy_arms_reward_checks_and_only_decision_validation():
    import pandas as pd

    from analysis.cost import add_round_costs, arm_cost

    # Two arms of two rounds each: a policy run (reward check 140 a round, val/* logging only) and a
    # search trial (its validation informs the pick).
    rows = [{"arm": arm, "experiment": arm, "trial": "t", "round": r, "report": r, "seed": 1, "model": "seed1",
             "final_model": True, "decision_validation": dv, "cost/grad_evals": 1000 * r,
             "cost/eval_grad_evals": 100 * r, "cost/reward_grad_evals": reward * r}
            for arm, dv, reward in (("learned", False, 140), ("tuned", True, 0)) for r in (1, 2)]
    costs = arm_cost(add_round_costs(pd.DataFrame(rows))).set_index("arm")
    assert costs.loc["learned", ["cost_b_train", "cost_b_validation", "cost_b_reward", "cost_b_total"]].tolist() == \
        [2000, 0, 280, 2280]
    assert costs.loc["tuned", ["cost_b_train", "cost_b_validation", "cost_b_reward", "cost_b_total"]].tolist() == \
        [2000, 200, 0, 2200]


def test_an_experiment_killed_before_its_first_snapshot_is_moved_aside_and_started_again(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from metaadv.study import units
    from metaadv.study.folder import Folder, StudyOptions
    from metaadv.study.progress import Progress

    leftover = tmp_path / "arms" / "fixed" / "fixed" / "metaadv_trial_dead_00000"
    leftover.mkdir(parents=True)
    (leftover / "result.json").write_text("")
    calls, lines = [], []
    monkeypatch.setattr(units, "run_experiment", lambda exp, opts, callbacks: calls.append(opts) or [])
    opts = StudyOptions(size="tiny", out=str(tmp_path), log=lambda *a, **k: lines.append(a[0]))
    runner = units.Runner(STUDY, opts, Folder(tmp_path, str(tmp_path)), Progress(opts.log, 2))
    fixed = next(u for u in units.phase1_units(STUDY, STUDY.sizes["tiny"]) if u.arm.name == "fixed")
    with pytest.raises(UserError, match="stopped before their end"):  # (this fake Tune returns no trials)
        runner.run(fixed)
    assert calls and calls[0].resume is False  # started again, not restored
    assert not (tmp_path / "arms" / "fixed" / "fixed").exists()
    aside = list((tmp_path / "arms" / "fixed").glob("fixed.unrestorable-*"))
    assert len(aside) == 1 and (aside[0] / "metaadv_trial_dead_00000").is_dir()
    assert any("no snapshot to resume from" in line for line in lines)


def test_an_interrupted_experiment_is_not_recorded_as_finished_so_resume_continues_it(tmp_path, monkeypatch):
    """Ctrl-C (or a lost cluster) makes Tune return the trials it had: they must not count as done."""
    pytest.importorskip("ray")
    from types import SimpleNamespace

    from metaadv.study import units
    from metaadv.study.folder import Folder, StudyOptions
    from metaadv.study.progress import Progress

    fixed = next(u for u in units.phase1_units(STUDY, STUDY.sizes["tiny"]) if u.arm.name == "fixed")
    def result(seed, **metrics):
        return SimpleNamespace(metrics={"round": 1, "val/robust_acc": 0.1, **metrics}, config={"seed": seed}, path=f"t{seed}",
                               checkpoint=SimpleNamespace(path=f"c{seed}"), error=None)

    ended = {"done": True}  # Tune's mark on a trial's last result once it ended (returned, or stopped)
    for grid, ok in (([result(1, **ended), result(2)], False),  # seed 2 was still running
                     ([result(1, **ended)], False),  # seed 2 never started
                     ([result(1, **ended), result(2, **ended, status="diverged")], True),
                     ([result(1, **ended), result(2, **ended)], True)):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        monkeypatch.setattr(units, "run_experiment", lambda exp, opts, callbacks, grid=grid: grid)
        opts = StudyOptions(size="tiny", out=str(root), log=lambda *a, **k: None)
        runner = units.Runner(STUDY, opts, Folder(root, str(root)), Progress(opts.log, 2))
        if ok:
            assert len(runner.run(fixed)) == 2 and runner.folder.finished("fixed", "fixed")
        else:
            with pytest.raises(UserError, match="stopped before their end"):
                runner.run(fixed)
            assert runner.folder.finished("fixed", "fixed") is None and not (root / "progress.json").exists()


def test_replay_trials_run_their_whole_schedule_when_seeds_schedules_differ_in_length(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from metaadv.tune.runner import stop_criteria
    from metaadv.study import derive, units

    # Two arms, so only the size whose arm_config names none of the others.
    study = STUDY.replace(arms=(LEARNED, REPLAY_LEARNED), contrasts=(), aim={}, sizes={"tiny": STUDY.sizes["tiny"]})
    row = {"hp/eps": 0.15, "hp/steps": 3, "hp/lr": 1e-3}
    sources = {1: ("learned-seed2", [{"round": r, **row} for r in range(1, 10)]),  # 9 rounds
               2: ("learned-seed1", [{"round": r, **row} for r in range(1, 11)])}  # 10 rounds
    monkeypatch.setattr(derive, "replay_sources", lambda *a: sources)
    (unit,) = derive.phase2_units(study, study.sizes["tiny"], tmp_path, {})
    assert unit.per_seed["rounds"] == {1: 9, 2: 10}
    assert unit.per_seed["schedule"] == {s: str(tmp_path / "schedules" / "replay-learned" / f"{n}.csv")
                                         for s, (n, _) in sources.items()}
    exp = units.Runner(study, _Opts("tiny"), None, None).experiment(unit)
    assert stop_criteria(exp, "tiny")["round"] == 10  # Tune stops no trial before its schedule ends


def test_a_study_runs_every_arm_in_one_precision(capsys):
    from metaadv.cli import main

    bf16 = STUDY.replace(base={**STUDY.base, "precision": "bf16"})
    assert bf16.declaration("tiny")["precision"] == "bf16"
    assert {bf16.arm_config(a, "tiny").get("precision") for a in bf16.arms} == {"bf16"}
    assert STUDY.declaration("tiny")["precision"] == "fp32"
    assert main(["study", "learned_vs_searched", "--size", "tiny", "--precision", "auto"]) == 2
    assert "one precision" in capsys.readouterr().err


def test_a_searched_arm_is_replayed_once_per_population_not_once_per_seed():
    """Pseudo-replication (issue 21): 5 replays of 3 PBT lineages counted as 5 independent models."""
    from metaadv.study.derive import replay_seeds
    from metaadv.study.units import derived_trials
    from tune_experiments.learned_vs_searched import STUDY

    size = STUDY.sizes["medium"] if "medium" in STUDY.sizes else STUDY.sizes["smoke"]
    replay = STUDY.arm("replay-searched")
    assert replay_seeds(STUDY, replay, size) == list(range(1, size.populations + 1))
    assert STUDY.planned(replay, "medium" if "medium" in STUDY.sizes else "smoke") == (size.populations,) * 2
    both = STUDY.replace(arms=(*STUDY.arms, LEARNED, REPLAY_LEARNED))
    assert replay_seeds(both, REPLAY_LEARNED, size) == list(range(1, size.seeds + 1))
    # Besides the one replay per population: the deployed policy, the tuned reruns and LAS's control, per seed.
    per_seed = size.seeds * sum(a.kind in ("deployed", "tuned") or bool(a.config_of) for a in STUDY.arms)
    assert derived_trials(STUDY, size) == size.populations + per_seed
    assert derived_trials(both, size) == size.populations + per_seed + size.seeds


def test_an_untrusted_model_is_judged_again_with_square_so_it_counts_at_a_measured_worst_case(tmp_path, monkeypatch):
    import metaadv.evaluation as evaluation
    from metaadv.study import evaluate as study_evaluate

    calls = []

    def fake(path, *, eps, **options):
        calls.append(options)
        square = "square" in (options.get("attacks") or [])
        trusted = path.name != "masked"
        per_attack = {"pgd": 0.9, **({"square": 0.2} if square else {})}
        return {"robust_acc": 0.2 if square else 0.9, "clean_acc": 0.95, "trusted": trusted, "per_attack": per_attack,
                "untrusted_reasons": [] if trusted else ["fgsm beats pgd"]}

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", fake)
    for name in ("masked", "honest"):
        (tmp_path / name).mkdir()
        verdict = study_evaluate._evaluate(str(tmp_path / name), str(tmp_path / f"{name}.json"), 0.3, {"aa_version": "fast"})
        report = json.loads((tmp_path / f"{name}.json").read_text())
        if name == "masked":
            assert len(calls) == 2 and calls[1]["attacks"][-1] == "square" and "attacks" not in calls[0]
            assert verdict["robust_acc"] == 0.2 and report["square_rejudged"]["first"]["robust_acc"] == 0.9
        else:
            assert len(calls) == 3 and verdict["robust_acc"] == 0.9 and "square_rejudged" not in report
    # A standard AutoAttack already ran Square: no second judge.
    assert not study_evaluate.needs_square({"trusted": False, "per_attack": {}}, {"aa_version": "standard"})


def test_a_pbt_lineage_is_the_rows_its_checkpoint_carries_and_the_log_parse_only_cross_checks(tmp_path, monkeypatch):
    import analysis.lineage
    from metaadv.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from metaadv.study.derive import lineage_rows

    rows = [{"round": r, "hp/eps": 0.1 * r, "hp/steps": 3, "hp/lr": 1e-3, "val/robust_acc": 0.5} for r in (1, 2, 3)]
    save_checkpoint({"kind": "train", "rows": rows}, tmp_path / CHECKPOINT_NAME)
    trial = {"trial": "t_00001", "checkpoint": str(tmp_path)}
    import pandas as pd

    agree = pd.DataFrame([{k: v for k, v in r.items() if k != "val/robust_acc"} for r in rows])
    monkeypatch.setattr(analysis.lineage, "trial_schedule", lambda folder, tid: agree)
    got = lineage_rows(str(tmp_path), trial)
    assert [r["hp/eps"] for r in got] == pytest.approx([0.1, 0.2, 0.3]) and "val/robust_acc" not in got[0]
    # The logs rebuild a different history (an exploit lost from them): a warning; the checkpoint's rows still win.
    monkeypatch.setattr(analysis.lineage, "trial_schedule", lambda folder, tid: agree.iloc[:2])
    with pytest.warns(UserWarning, match="differs from its checkpoint"):
        assert [r["round"] for r in lineage_rows(str(tmp_path), trial)] == [1, 2, 3]


def test_a_grid_searched_arm_tries_every_value_on_each_pilot_seed_and_reruns_the_best_mean():
    from metaadv.study.units import best_config, phase1_units
    from metaadv.tune.schedulers import param_space

    study = STUDY.replace(arms=(Arm("pgd-k", "tuned", "the best PGD-k", {"controller": "schedule", "step_ratio": 0.5},
                                    space={"steps": Grid(2, 3, 4, 5)}, search="grid"),), contrasts=(), aim={},
                          sizes=_tiny_alone())
    size = study.sizes["tiny"]
    (unit,) = phase1_units(study, size)
    assert unit.trials == 4 * size.search_samples == study.planned("pgd-k", "tiny")[0] - size.seeds
    assert unit.searcher == "grid" and len(unit.seeds) == size.search_samples
    space = param_space(_Runner(study).experiment(unit), "tiny")
    assert space["steps"] == {"grid_search": [2, 3, 4, 5]}
    # k = 5 has the single best trial, k = 4 the best mean over the pilot seeds: the mean decides.
    scores = {(2, 1): 0.30, (3, 1): 0.40, (4, 1): 0.50, (4, 2): 0.50, (5, 1): 0.60, (5, 2): 0.20, (2, 2): 0.3, (3, 2): 0.4}
    trials = [{"config": {"steps": k, "seed": s}, "metrics": {"val/robust_acc": v}, "checkpoint": "c", "error": None}
              for (k, s), v in scores.items()]
    assert best_config(trials, ["steps"]) == {"steps": 4}
    with pytest.raises(UserError, match="grid search needs Grid"):
        STUDY.replace(arms=(Arm("x", "tuned", "x", space={"lr": __import__("metaadv.tune.space", fromlist=["Range"]).Range(
            1e-4, 1e-3)}, search="grid"),), contrasts=(), aim={}, sizes={"tiny": STUDY.sizes["tiny"]})


def test_the_rows_shared_with_the_learner_study_have_equal_configs_so_one_can_reuse_the_other():
    from tune_experiments.learner import STUDY as LEARNER

    for arm in ("las", "las-frozen", "pgd-k"):
        assert STUDY.arm(arm) is LEARNER.arm(arm)
        assert STUDY.arm_config(arm, "medium") == LEARNER.arm_config(arm, "medium")
    assert STUDY.arm_config("fixed", "medium") == LEARNER.arm_config("fixed-pgd10", "medium")
    assert STUDY.arm_config("random-policy", "medium") == LEARNER.arm_config("policy-untrained", "medium")
    assert STUDY.sizes["medium"].search_samples == LEARNER.sizes["medium"].search_samples  # the same pilot seeds
    # The same table seeds: every model and its transfer surrogate (the next seed, wrapping) are the same.
    assert STUDY.sizes["medium"].seeds == LEARNER.sizes["medium"].seeds == 10
    assert STUDY.sizes["medium"].episodes == LEARNER.sizes["medium"].episodes
    ev = STUDY.evaluation("las", "medium")
    assert "square" in ev["attacks"] and ev["surrogates"] == ["arm:fixed"] and ev["square_queries"] >= 1000


def test_a_control_with_config_of_trains_the_tuned_arms_pick_under_its_own_config(tmp_path):
    from metaadv.study.derive import phase2_units
    from metaadv.study.units import derived_trials, phase1_units

    grids = ((0.5, 1.0), (0.75, 1.25))
    arms = (Arm("las", "tuned", "learned", {"controller": "las"}, space={"las_eps": Grid(*grids)}, search="grid"),
            Arm("las-frozen", "single", "frozen", {"controller": "las", "las_frozen": True}, config_of="las"))
    study = STUDY.replace(arms=arms, contrasts=(), aim={}, sizes=_tiny_alone())
    size = study.sizes["tiny"]
    # Phase 1 runs only the search; the control waits for its pick, on the table's seeds.
    assert [u.name for u in phase1_units(study, size)] == ["search"]
    assert derived_trials(study, size) == 2 * size.seeds and study.planned("las-frozen", "tiny") == (size.seeds, size.seeds)
    assert study.declaration("tiny")["arms"]["las-frozen"]["config_of"] == "las"
    # The search's configs came back through JSON (a grid's tuple is now a list): the best mean wins.
    trials = [{"config": {"las_eps": list(e), "seed": s}, "metrics": {"val/robust_acc": v}, "checkpoint": "c", "error": None}
              for e, s, v in ((grids[0], 1, 0.5), (grids[0], 2, 0.1), (grids[1], 1, 0.4), (grids[1], 2, 0.4))]
    units = {u.arm.name: u for u in phase2_units(study, size, tmp_path, {"las": {"search": trials}})}
    assert units["las"].base == units["las-frozen"].base == {"las_eps": grids[1]}
    # They train before any meta-training: only deployed arms wait for it (a second call).
    assert phase2_units(study, size, tmp_path, {"las": {"search": trials}}, deployed=True) == []
    frozen = _Runner(study).experiment(units["las-frozen"]).base
    assert frozen["las_frozen"] and frozen["las_eps"] == grids[1] and units["las-frozen"].seeds == tuple(range(1, size.seeds + 1))
    # A pilot of the control brings the arm it takes its configuration from.
    assert [a.name for a in study.pilot("tiny", arms=["las-frozen"]).arms] == ["las", "las-frozen"]
    for bad in (Arm("c", "single", "c", config_of="nobody"), Arm("c", "tuned", "c", config_of="las"),
                Arm("c", "single", "c", config_of="las-frozen")):
        with pytest.raises(UserError, match="config_of names a tuned arm"):
            STUDY.replace(arms=(*arms, bad), contrasts=(), aim={}, sizes=_tiny_alone())


def test_a_sizes_sub_grid_narrows_a_tuned_arms_search_there_only(tmp_path):
    import dataclasses

    from metaadv.study.derive import phase2_units
    from metaadv.study.units import phase1_units

    grids = ((0.5, 1.0), (0.75, 1.25), (0.5, 0.75))
    arms = (Arm("las", "tuned", "learned", {"controller": "las"}, space={"las_eps": Grid(*grids), "las_loss_weight": Grid(1.0, 0.25)},
                search="grid"),)
    tiny = _tiny_alone()["tiny"]
    narrow = dataclasses.replace(tiny, arm_space={"las": {"las_eps": Grid(grids[0], grids[1])}})
    study = STUDY.replace(arms=arms, contrasts=(), aim={}, sizes={"tiny": narrow, "smoke": tiny})
    # At the narrowed size: 2 eps grids at the config's loss weight per pilot seed; the other size all 3 x 2.
    assert study.search_trials("las", "tiny") == 2 * tiny.search_samples
    assert study.search_trials("las", "smoke") == 6 * tiny.search_samples
    (search,) = phase1_units(study, narrow)
    assert search.trials == 2 * tiny.search_samples and search.space == {"las_eps": Grid(grids[0], grids[1])}
    assert study.declaration("tiny")["arms"]["las"]["space"] == {"las_eps": [grids[0], grids[1]]}
    # The rerun takes the pick among the searched keys only: the loss weight stays the config's.
    trials = [{"config": {"las_eps": list(e), "seed": 20000}, "metrics": {"val/robust_acc": v}, "checkpoint": "c",
               "error": None} for e, v in ((grids[0], 0.2), (grids[1], 0.4))]
    (rerun,) = phase2_units(study, narrow, tmp_path, {"las": {"search": trials}})
    assert rerun.base == {"las_eps": grids[1]}
    # A sub-grid only: a value the arm does not search, a key it does not search, an arm that is not tuned.
    plain = Arm("plain", "single", "no search", {"controller": "schedule"})
    for bad in ({"las": {"las_eps": Grid(grids[0], (0.1, 0.2))}}, {"las": {"eps": Grid(0.2, 0.3)}},
                {"plain": {"steps": Grid(3, 5)}}):
        with pytest.raises(UserError, match="arm_space"):
            STUDY.replace(arms=(*arms, plain), contrasts=(), aim={}, sizes={"tiny": dataclasses.replace(tiny, arm_space=bad)})
    # A study with fewer arms (a pilot, a test's) keeps only its own arms' sub-spaces.
    assert STUDY.replace(arms=(plain,), contrasts=(), aim={}).sizes["smoke"].arm_space == {}


def test_a_contrast_row_may_run_on_more_paired_seeds_than_the_other_rows():
    import dataclasses

    from metaadv.study.units import phase1_units

    arms = (Arm("a", "single", "a", {"controller": "schedule"}), Arm("b", "single", "b", {"controller": "schedule"}),
            Arm("t", "tuned", "t", {"controller": "schedule"}, space={"steps": Grid(3, 5)}, search="grid"))
    tiny = dataclasses.replace(_tiny_alone()["tiny"], arm_seeds={"a": 4})
    study = STUDY.replace(arms=arms, contrasts=(), aim={}, sizes={"tiny": tiny})
    units = {u.arm.name: u for u in phase1_units(study, tiny)}
    # a on seeds 1-4 (it pairs with b on 1-2), b on the size's 2.
    assert units["a"].seeds == (1, 2, 3, 4) and units["a"].trials == 4 and units["b"].seeds == (1, 2)
    assert study.planned("a", "tiny") == (4, 4) and study.planned("b", "tiny") == (2, 2)
    assert study.declaration("tiny")["size_settings"]["arm_seeds"] == {"a": 4}
    assert study.declaration("tiny")["arms"]["a"]["planned_models"] == 4
    # A pilot on N seeds runs every arm on N; a pilot without the arm drops its entry.
    assert study.pilot("tiny", seeds=3).planned("a", "tiny") == (3, 3)
    assert study.pilot("tiny", arms=["b"]).sizes["tiny"].arm_seeds == {}
    for bad, message in (({"t": 4}, "not a single-run arm"), ({"a": 1}, "count >= 2"), ({"a": True}, "count >= 2")):
        with pytest.raises(UserError, match=message):
            STUDY.replace(arms=arms, contrasts=(), aim={}, sizes={"tiny": dataclasses.replace(tiny, arm_seeds=bad)})


def test_a_size_may_judge_one_arm_with_stronger_options():
    import dataclasses

    arms = (Arm("a", "single", "a", {"controller": "schedule"}, evaluation={"pgd_steps": 7}),
            Arm("b", "single", "b", {"controller": "schedule"}))
    tiny = dataclasses.replace(_tiny_alone()["tiny"], arm_evaluation={"a": {"square_queries": 500, "pgd_steps": 9}})
    study = STUDY.replace(arms=arms, contrasts=(), aim={}, sizes={"tiny": tiny, "smoke": STUDY.sizes["smoke"]})
    base = tiny.evaluation
    # The size's for the arm over the arm's own over the size's; the other arm and size as before.
    assert study.evaluation("a", "tiny") == {**base, "square_queries": 500, "pgd_steps": 9}
    assert study.evaluation("b", "tiny") == base and study.evaluation("a", "smoke")["pgd_steps"] == 7
    with pytest.raises(UserError, match="arm_evaluation names unknown arm"):  # a declaration's typo (not via replace)
        dataclasses.replace(study, sizes={"tiny": dataclasses.replace(tiny, arm_evaluation={"nobody": {"n": 5}})})


def test_the_smoke_study_searches_two_configurations_per_tuned_arm_and_medium_all():
    from tune_experiments.learned_vs_searched import STUDY as LVS

    assert LVS.search_trials("las", "smoke") == 2 and LVS.search_trials("pgd-k", "smoke") == 2
    assert LVS.search_trials("las", "medium") == 6 * LVS.sizes["medium"].search_samples
    assert LVS.search_trials("pgd-k", "medium") == 4 * LVS.sizes["medium"].search_samples


def _Runner(study):
    from metaadv.study.units import Runner

    return Runner(study, _Opts("tiny"), None, None)


def test_a_models_surrogates_are_another_arms_models_trained_on_other_seeds():
    from metaadv.study.evaluate import surrogate_options

    models = [{"arm": a, "model": f"seed{s}", "seed": s, "_checkpoint": f"{a}/{s}"} for a in ("pgd10", "las") for s in (1, 2, 3)]
    opts = {"n": 10, "surrogates": ["arm:pgd10", "/elsewhere/ckpt.pt"]}
    for m, want in ((models[3], "pgd10/2"), (models[5], "pgd10/1")):  # the next seed, wrapping; never its own
        assert surrogate_options(opts, m, models)["surrogates"] == [want, "/elsewhere/ckpt.pt"]
    # A pgd10 model is attacked from another pgd10 model, not itself.
    assert surrogate_options(opts, models[0], models)["surrogates"][0] == "pgd10/2"
    lonely = surrogate_options({"surrogates": ["arm:nobody"]}, models[0], models)
    assert lonely["surrogates"] == [] and lonely["surrogates_missing"] == ["arm:nobody"]
    assert surrogate_options({"n": 5}, models[0], models) == {"n": 5}


def test_a_pilot_runs_a_subset_of_arms_and_seeds_and_says_so():
    from analysis.headline import size_banner
    from tune_experiments.learner import STUDY as LEARNER

    pilot = LEARNER.pilot("medium", seeds=3, arms=["las", "las-frozen", "fixed-pgd10"])
    assert [a.name for a in pilot.arms] == ["las", "fixed-pgd10", "las-frozen"]  # the declared order
    assert [c[:2] for c in pilot.contrasts] == [("las", "las-frozen")] and pilot.aim["min_effect"] == 0.02
    assert pilot.sizes["medium"].seeds == 3 and LEARNER.sizes["medium"].seeds == 10
    said = pilot.declaration("medium")["pilot"]
    assert said["arms"] == ["las", "fixed-pgd10", "las-frozen"] and (said["seeds"], said["declared_seeds"]) == (3, 10)
    assert "Pilot of learner" in size_banner([pilot.declaration("medium")])[0]
    assert "pilot" not in LEARNER.declaration("medium") and LEARNER.pilot("medium") is LEARNER
    # An arm brings what it derives from; the size's per-arm settings follow the arms kept.
    replay = STUDY.pilot("medium", arms=["replay-searched"])
    assert [a.name for a in replay.arms] == ["searched", "replay-searched"]
    assert set(replay.sizes["medium"].arm_config) <= {"searched", "replay-searched"}
    with pytest.raises(UserError, match="has no arm"):
        LEARNER.pilot("medium", arms=["nobody"])
    with pytest.raises(UserError, match="--seeds must be >= 2"):
        LEARNER.pilot("medium", seeds=1)


def test_a_pilot_resumes_only_as_the_same_pilot(tmp_path):
    from metaadv.study.folder import StudyOptions, start_folder
    from tune_experiments.learner import STUDY as LEARNER

    pilot = LEARNER.pilot("tiny", seeds=2, arms=["las", "las-frozen"])
    start_folder(pilot, StudyOptions(size="tiny", out=str(tmp_path)), tmp_path, str(tmp_path), {})
    with pytest.raises(UserError, match="same --arms and --seeds"):
        start_folder(LEARNER, StudyOptions(size="tiny", out=str(tmp_path), resume=True), tmp_path, str(tmp_path), {})
    assert start_folder(pilot, StudyOptions(size="tiny", out=str(tmp_path), resume=True), tmp_path, str(tmp_path), {})["pilot"]
