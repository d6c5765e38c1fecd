"""analysis: loading a real PBT experiment, rebuilding lineages, and per-round cost without double counting.

The fixture tests/fixtures/pbt_tiny is a real Ray 2.60 PBT run (see its README) with known exploits;
checkpoint_lineage.json holds the rows of each trial's final checkpoint, the ground truth.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis import load_results
from analysis.cost import arm_cost, model_cost
from analysis.lineage import lineage_rows, policy_chain, policy_schedule, read_exploits, save_schedule, trial_schedule
from metaadv.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "pbt_tiny"
TRUTH = json.loads((FIXTURE / "checkpoint_lineage.json").read_text())
HPS = ("hp/eps", "hp/steps", "hp/step_ratio", "hp/lr", "hp/weight_decay")


@pytest.fixture(scope="module")
def frame():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return load_results(FIXTURE)


def test_every_reported_row_is_kept_once_in_report_order_with_its_segment(frame):
    t0 = frame[frame["trial"] == "e92ca_00000"]
    assert t0["round"].tolist() == [1, 2, 3, 4, 3, 4, 5, 6, 5, 6, 7, 8]  # counters jump back after exploits
    assert t0["report"].tolist() == list(range(12))
    assert t0["pbt/segment"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert t0["pbt/after_exploit"].tolist() == [False] * 4 + [True] * 8
    assert t0.loc[t0["pbt/segment"] == 2, "pbt/donor"].unique().tolist() == ["e92ca_00002"]
    # trial 2 had been exploited once (from trial 3) when trial 0 cloned it: its segment 1.
    assert t0.loc[t0["pbt/segment"] == 2, "pbt/donor_segment"].unique().tolist() == [1]
    assert len(frame) == sum(len((FIXTURE / p / "progress.csv").read_text().splitlines()) - 1
                             for p in os.listdir(FIXTURE) if p.startswith("metaadv_trial_"))
    assert set(frame["controller"]) == {"pbt"} and set(frame["method"]) == {"pgd-at"}
    assert {"hp/eps", "cost/grad_evals", "val/robust_acc", "tune/iteration"} <= set(frame.columns)
    assert not any(c in frame for c in ("pid", "hostname", "date", "trial_id"))


@pytest.mark.parametrize("trial", sorted(TRUTH))
def test_rebuilt_lineage_equals_the_rows_in_the_final_checkpoint(frame, trial):
    rows = lineage_rows(frame, "pbt_tiny", trial)
    truth = pd.DataFrame(TRUTH[trial])
    assert rows["round"].tolist() == truth["round"].tolist() == list(range(1, 9))
    for col in (*HPS, "cost/grad_evals", "cost/eval_grad_evals"):
        assert rows[col].astype(float).tolist() == pytest.approx(truth[col].astype(float).tolist()), col


def test_trial_schedule_names_its_sources_and_is_a_replay_schedule(tmp_path):
    sched = trial_schedule(FIXTURE, "0_eps=0.3000,lr=0.0001,step_ratio=0.5000,steps=2,weight_decay=0.0000")
    assert sched["pbt/source_trial"].tolist() == ["e92ca_00003"] * 2 + ["e92ca_00002"] * 2 + ["e92ca_00000"] * 4
    assert sched["hp/eps"].tolist() == [0.2, 0.2, 0.3, 0.3, 0.2, 0.2, 0.2, 0.2]
    same = trial_schedule(FIXTURE, "e92ca_00000")
    pd.testing.assert_frame_equal(sched, same)
    written = pd.read_csv(save_schedule(sched, tmp_path / "s.csv"))
    assert written["round"].tolist() == list(range(1, 9)) and "hp/lr" in written
    assert written["hp/lr"].tolist() == pytest.approx(sched["hp/lr"].tolist())
    try:  # the replay controller's own reader, where it is installed
        from metaadv.training.replay import read_schedule
    except ImportError:
        read_schedule = None
    if read_schedule is not None:
        rows = read_schedule(tmp_path / "s.csv")
        assert [r["round"] for r in rows] == list(range(1, 9))
        assert [r["hp/eps"] for r in rows] == pytest.approx(sched["hp/eps"].tolist())
    with pytest.raises(UserError):
        trial_schedule(FIXTURE, "e92ca_00099")


@pytest.mark.parametrize("policy", sorted(p.name for p in FIXTURE.glob("pbt_policy_*.txt")))
def test_policy_parse_agrees_with_rays_own_replay_scheduler(policy):
    from ray.tune.schedulers import PopulationBasedTrainingReplay

    replay = PopulationBasedTrainingReplay(str(FIXTURE / policy))
    initial, changes = policy_chain(FIXTURE / policy)
    assert initial == replay.config
    assert changes == [(step, conf) for step, conf in replay._policy]
    # The chain starts from an ancestor never exploited before: its config is its params.json.
    first = read_exploits(FIXTURE / policy)[0]
    params = json.loads(next(FIXTURE.glob(f"*_{int(first.donor.split('_')[0]):05d}/params.json")).read_text())
    assert initial == params


def test_policy_schedule_matches_the_checkpoint_where_the_logged_iteration_is_exact():
    sched = policy_schedule(FIXTURE / "pbt_policy_e92ca_00000.txt", 8)
    truth = pd.DataFrame(TRUTH["e92ca_00000"])
    for col in HPS:
        assert sched[col].astype(float).tolist() == pytest.approx(truth[col].astype(float).tolist())


def test_round_costs_never_count_a_donors_rows_twice(frame):
    # Every full round of 3 batches of 100 costs 300 * (steps + 1); the epoch's last batch is smaller.
    full = frame["cost/round_grad_evals"] == 300 * (frame["hp/steps"] + 1)
    assert full.mean() > 0.8 and (frame["cost/round_grad_evals"] > 0).all()
    # A final model's lineage costs add up to its cumulative counter: cost (a).
    for trial in TRUTH:
        lin = lineage_rows(frame, "pbt_tiny", trial)
        assert lin["cost/round_grad_evals"].sum() == pytest.approx(lin["cost/grad_evals"].iloc[-1])
    # Cost (b): each trial's own work = sum over its segments of (last counter - inherited counter).
    own = frame.groupby(["trial", "pbt/segment"]).apply(
        lambda g: g["cost/grad_evals"].iloc[-1] - g["cost/inherited_grad_evals"].iloc[0]).sum()
    costs = arm_cost(frame).iloc[0]
    assert costs["cost_b_train"] == pytest.approx(own)
    # Counting each segment from 0 would charge the donor's rows again.
    naive = frame.groupby(["trial", "pbt/segment"])["cost/grad_evals"].max().sum()
    inherited = frame.groupby(["trial", "pbt/segment"])["cost/inherited_grad_evals"].first().sum()
    assert inherited > 0 and costs["cost_b_train"] == pytest.approx(naive - inherited)
    assert costs["cost_b_validation"] == pytest.approx(frame["cost/round_eval_grad_evals"].sum())
    assert costs["cost_b_total"] == pytest.approx(costs["cost_b_train"] + costs["cost_b_validation"])
    assert model_cost(frame)["cost_a"].tolist() == [9436]


def test_outside_a_study_the_populations_pick_is_the_final_model(frame):
    last = {p.name.removeprefix("metaadv_trial_"): pd.read_csv(p / "progress.csv")["val/robust_acc"].iloc[-1]
            for p in FIXTURE.glob("metaadv_trial_*")}
    assert frame.loc[frame["final_model"], "trial"].unique().tolist() == [max(last, key=last.get)]
    assert frame["decision_validation"].all()  # PBT ranks by validation: it counts in cost (b)


def test_without_ray_state_the_trial_folders_and_policy_files_still_serve(tmp_path):
    copy = tmp_path / "pbt_tiny"
    shutil.copytree(FIXTURE, copy)
    for p in copy.glob("experiment_state-*.json"):
        p.unlink()
    (copy / "pbt_global.txt").unlink()  # e.g. lost on a resume: the policy files' union is used
    frame = load_results(copy)
    rows = lineage_rows(frame, "pbt_tiny", "e92ca_00000")
    assert rows["hp/eps"].tolist() == [0.2, 0.2, 0.3, 0.3, 0.2, 0.2, 0.2, 0.2]


def _drop_rows(copy: Path, trial: str, rounds) -> None:
    progress = copy / f"metaadv_trial_{trial}" / "progress.csv"
    rows = pd.read_csv(progress)
    rows[~rows["round"].isin(rounds)].to_csv(progress, index=False)


def test_rounds_lost_from_the_logs_come_from_the_checkpoint_else_the_policy_file(tmp_path):
    import torch
    from metaadv.checkpoint import FORMAT, VERSION

    copy = tmp_path / "pbt_tiny"
    shutil.copytree(FIXTURE, copy)
    _drop_rows(copy, "e92ca_00003", [1])  # trial 0's round 1 came from trial 3's round 1
    sched = trial_schedule(copy, "e92ca_00000")
    assert sched["pbt/source_trial"].tolist()[:2] == ["policy-file", "e92ca_00003"]
    assert sched["hp/lr"].tolist() == pytest.approx([r["hp/lr"] for r in TRUTH["e92ca_00000"]])
    # A checkpoint holding the rows is more exact than the logged configs: it is read first.
    stored = [dict(r, **{"hp/weight_decay": 0.5}) for r in TRUTH["e92ca_00000"]]
    (copy / "metaadv_trial_e92ca_00000" / "checkpoint_000009").mkdir()
    torch.save({"format": FORMAT, "version": VERSION, "rows": stored},
               copy / "metaadv_trial_e92ca_00000" / "checkpoint_000009" / "checkpoint.pt")
    sched = trial_schedule(copy, "e92ca_00000")
    assert sched["pbt/source_trial"].iloc[0] == "checkpoint" and sched["hp/weight_decay"].iloc[0] == 0.5
    assert sched["hp/weight_decay"].iloc[1] != 0.5  # logged rounds keep their logged values


def _hand_built(root: Path) -> Path:
    """Two trials; trial 1 is exploited from trial 0 at round 4 and resumes at round 5 with no jump back."""
    exp = root / "pbt_hand"
    cfg = {"kind": "train", "method": "pgd-at", "eps": 0.3, "lr": 0.01}
    for index, eps in ((0, 0.3), (1, 0.1)):
        folder = exp / f"metaadv_trial_abcde_{index:05d}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({**cfg, "eps": eps}))
        rows = [{"round": r, "hp/eps": eps, "hp/lr": 0.01, "val/robust_acc": 0.1 * r,
                 "cost/grad_evals": 100 * r * (2 if index == 0 else 1), "cost/eval_grad_evals": 10 * r,
                 "trial_id": f"abcde_{index:05d}"} for r in range(1, 5)]
        if index == 1:
            rows += [{"round": r, "hp/eps": 0.36, "hp/lr": 0.01, "val/robust_acc": 0.5, "cost/grad_evals": 800 + 300 * (r - 4),
                      "cost/eval_grad_evals": 40 + 10 * (r - 4), "trial_id": "abcde_00001"} for r in (5, 6)]
        pd.DataFrame(rows).to_csv(folder / "progress.csv", index=False)
    line = ["1_eps=0.1", "0_eps=0.3", 4, 4, {**cfg, "eps": 0.3}, {**cfg, "eps": 0.36}]
    (exp / "pbt_global.txt").write_text(json.dumps(line) + "\n")
    (exp / "pbt_policy_abcde_00001.txt").write_text(json.dumps(line) + "\n")
    return exp


def test_a_hand_built_exploit_without_a_jump_back_is_found_by_the_hyperparameter_switch(tmp_path):
    frame = load_results(_hand_built(tmp_path))
    t1 = frame[frame["trial"] == "abcde_00001"]
    assert t1["pbt/segment"].tolist() == [0, 0, 0, 0, 1, 1]
    assert t1["cost/round_grad_evals"].tolist() == [100, 100, 100, 100, 300, 300]  # 800 was trial 0's
    lin = lineage_rows(frame, "pbt_hand", "abcde_00001")
    assert lin["hp/eps"].tolist() == [0.3] * 4 + [0.36] * 2
    assert arm_cost(frame).iloc[0]["cost_b_train"] == 800 + 400 + 600
    assert math.isclose(lin["cost/round_grad_evals"].sum(), 1400)


def test_a_diverged_trial_adds_its_logged_work_and_the_same_folder_twice_loads_once(tmp_path):
    exp = _hand_built(tmp_path)
    folder = exp / "metaadv_trial_abcde_00002"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"kind": "train", "method": "pgd-at", "eps": 0.3, "lr": 1e4}))
    pd.DataFrame([{"round": 1, "hp/eps": 0.3, "val/robust_acc": 0.1, "cost/grad_evals": 100, "cost/eval_grad_evals": 10},
                  {"round": 2, "val/robust_acc": float("nan"), "status": "diverged", "error": "loss became nan"}]
                 ).to_csv(folder / "progress.csv", index=False)
    grid = type("ResultGridLike", (), {"experiment_path": str(exp)})()
    frame = load_results(exp, grid)
    assert len(frame) == 4 + 6 + 2
    assert frame[frame["trial"] == "abcde_00002"]["cost/round_grad_evals"].tolist() == [100, 0]
    assert arm_cost(frame).iloc[0]["cost_b_train"] == 1800 + 100


def test_a_population_that_has_not_exploited_yet_is_still_pbt(tmp_path):
    exp = _hand_built(tmp_path)
    for p in exp.glob("pbt_*.txt"):
        p.unlink()
    assert set(load_results(exp)["controller"]) == {"schedule"}
    (exp / "tuner.pkl").write_bytes(b"\x80\x05...ray.tune.schedulers.pbt\x94\x8c\x17PopulationBasedTraining\x94...")
    assert set(load_results(exp)["controller"]) == {"pbt"}
