"""The combined loop: meta-adv rows, exact resume of policy and generator state, budgets, CLI, transfer."""

import json

import pytest
import torch

from metaadv.cli import main
from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.evaluation import evaluate_model
from metaadv.evaluation.transfer import transfer_attacks
from metaadv.training.metrics import read_metrics_csv
from metaadv.training.run import TrainingRun, run_training

from .resume_helpers import interrupted_and_full, without_seconds

TINY = {"dataset": "digits", "rounds": 3, "steps_per_round": 3, "batch_size": 32, "val_size": 48, "val_pgd_steps": 2,
        "steps": 2, "gen_width": 8}
FLAGS = ["--dataset", "digits", "--steps-per-round", "2", "--batch-size", "32", "--val-size", "32", "--val-pgd-steps", "2",
         "--gen-width", "8", "--quiet"]


def tiny(**changes):
    return TrainConfig.from_dict({**TINY, **changes})


def test_meta_adv_defaults_to_the_policy_and_fills_every_column(digits_splits):
    config = tiny(method="meta-adv", rounds=2)
    assert config.controller == "policy" and config.policy_steps == ()
    run = TrainingRun(config, splits=digits_splits)
    rows = [run.step() for _ in range(2)]
    for row in rows:
        assert {"policy/reward", "policy/baseline", "policy/entropy", "gen/loss", "gen/fooling_rate",
                "gen/perturbation_norm", "hp/gen_lr", "hp/gen_fraction", "hp/gen_steps", "hp/gen_unroll",
                "hp/gen_step_ratio", "hp/gen_final_steps", "hp/gen_final_ratio", "train/grad_align",
                "train/co_detected"} <= set(row)
        # hp/* is what the policy chose: eps from its grid of fractions of the target eps
        assert round(row["hp/eps"] / config.eps, 6) in config.policy_eps
        assert any(row["hp/lr"] == pytest.approx(config.lr * m) for m in config.policy_lr_mult)
        assert 0 < row["gen/perturbation_norm"] <= row["hp/eps"] + 1e-6
    # generator examples only, the recursive generator unrolled K = 3 steps: the first gradient read, K - 1 more
    # reads and the last step's loss term, the final step (free: it reuses that term's gradient), the update (2
    # passes with a clean term)
    update = 1 if rows[0]["hp/adv_mix"] == 1 else 2
    assert rows[0]["cost/grad_evals"] == 3 * 32 * (1 + 2 + 1 + 0 + update)
    assert rows[1]["policy/baseline"] == pytest.approx(rows[0]["policy/reward"])


@pytest.mark.parametrize("changes", [
    {"method": "meta-adv"},
    {"method": "advgan", "optimizer": "sgd", "lr": 0.05},
    # the recursive generator's noise draws and random start come back the same too
    {"method": "meta-generator", "gen_noise": True, "gen_diversity": 0.1, "gen_start": "random", "gen_final_steps": 2},
    {"method": "meta-generator", "gen_arch": "noise"},
    {"method": "pgd-at", "controller": "policy", "rounds": 4},
    # interrupted with choices still waiting for their n-step return
    {"method": "pgd-at", "controller": "policy", "rounds": 5, "policy_return": "discounted", "policy_horizon": 3,
     "policy_reward_size": 24},
])
def test_resume_restores_policy_and_generator_exactly(tmp_path, changes):
    config = tiny(**changes)
    full, resumed, _ = interrupted_and_full(config, tmp_path, stop_round=3 if config.policy_return == "discounted" else 2)
    assert without_seconds(resumed.rows) == without_seconds(full.rows)
    # a blank cell is a column that row does not have (policy/return before the first n-step return is complete)
    written = [{k: v for k, v in r.items() if v != ""} for r in read_metrics_csv(tmp_path / "part" / "metrics.csv")]
    assert without_seconds(written) == without_seconds(full.rows)
    for a, b in ((full.trainer.method, resumed.trainer.method), (full.controller, resumed.controller)):
        sa, sb = a.state_dict(), b.state_dict()
        for key in ("generator", "discriminator", "net"):
            if key in sa:
                assert all(torch.equal(x, y) for x, y in zip(sa[key].values(), sb[key].values()))
    if config.controller == "policy":
        assert torch.equal(full.controller.rng.get_state(), resumed.controller.rng.get_state())
        assert [d["round"] for d in resumed.controller.window] == [d["round"] for d in full.controller.window]
        # the reward check's numbers and cost came back the same too (a pure function of seed and round)
        assert {"policy/robust_acc_before", "policy/fgsm_acc", "cost/reward_grad_evals"} <= set(resumed.rows[-1])
        assert resumed.trainer.reward_grad_evals == full.trainer.reward_grad_evals > 0
    if config.policy_return == "discounted":
        assert [r.get("policy/return_round") for r in full.rows] == [None, None, 1, 2, 3]
        assert len(full.controller.window) == 2


def test_budget_stops_the_run_mid_round_within_one_step_of_the_budget(digits_splits):
    # No eps ramp: its first step, at eps 0, would be a cheaper clean step.
    run = TrainingRun(tiny(method="pgd-at", rounds=50, budget_grad_evals=1000, eps_ramp_fraction=0), splits=digits_splits)
    while not run.done:
        run.step()
    # PGD-2 costs 3 passes x 32 = 96 a step, 288 a round of 3 steps: the 11th step passes 1000, in
    # round 4 (whole rounds would have stopped at 4 x 288 = 1152).
    assert run.round == 4 and run.rows[-1]["cost/grad_evals"] == 11 * 96 and run.trainer.global_step == 11
    assert 1000 <= run.rows[-1]["cost/grad_evals"] < 1000 + 96


def test_cli_saves_a_policy_and_a_fresh_frozen_run_acts_with_it(tmp_path, capsys):
    policy = tmp_path / "policy.pt"
    assert main(["train", "--out", str(tmp_path / "a"), *FLAGS, "--epochs", "3", "--method", "pgd-at",
                 "--controller", "policy", "--save-policy", str(policy)]) == 0
    assert policy.is_file()
    assert main(["train", "--out", str(tmp_path / "b"), *FLAGS, "--epochs", "2", "--method", "fast-at", "--seed", "3",
                 "--controller", "policy", "--policy-file", str(policy), "--policy-frozen",
                 "--save-policy", str(tmp_path / "again.pt")]) == 0
    a, b = (torch.load(p, weights_only=True)["net"] for p in (policy, tmp_path / "again.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # frozen: the same weights come back out


def test_cli_frozen_policy_without_a_file_is_the_uniform_random_control(tmp_path):
    """--policy-frozen alone: the controller keeps its initial weights (uniform heads) for the whole run."""
    from metaadv.training.policy import PolicyController

    saved = tmp_path / "random.pt"
    assert main(["train", "--out", str(tmp_path / "r"), *FLAGS, "--epochs", "3", "--method", "pgd-at", "--seed", "5",
                 "--controller", "policy", "--policy-frozen", "--policy-return", "discounted", "--policy-horizon", "2",
                 "--policy-gap-weight", "0.1", "--policy-reward-size", "30", "--save-policy", str(saved)]) == 0
    config = TrainConfig.from_dict(json.loads((tmp_path / "r" / "config.json").read_text()))
    assert (config.policy_frozen, config.policy_return, config.policy_horizon, config.policy_gap_weight,
            config.policy_reward_size) == (True, "discounted", 2, 0.1, 30)
    initial = PolicyController(config).net.state_dict()
    after = torch.load(saved, weights_only=True)["net"]
    assert all(torch.equal(initial[k], after[k]) for k in initial)
    assert all(not after[k].any() for k in after if k.startswith("heads."))  # uniform over every grid
    rows = read_metrics_csv(tmp_path / "r" / "metrics.csv")
    assert [r["cost/reward_grad_evals"] for r in rows] == [(10 + 10 + 1) * 30 * t for t in (1, 2, 3)]
    assert [r["policy/return_round"] for r in rows] == ["", 1, 2]


@pytest.mark.parametrize("argv, needle", [
    (["--controller", "policy", "--policy-return", "episodic"], "unknown policy_return 'episodic'"),
    (["--controller", "policy", "--policy-gamma", "-0.5"], "policy_gamma must be in [0, 1]"),
    (["--controller", "policy", "--policy-reward-size", "100000"], "exceeds the validation split"),
    (["--controller", "policy", "--policy-steps", "1", "2.5"], "bad value 2.5 in the --policy-steps grid"),
    (["--save-policy", "p.pt"], "--save-policy needs --controller policy"),
    (["--controller", "policy", "--policy-file", "nothing.pt"], "policy file 'nothing.pt' not found"),
    (["--method", "meta-adv", "--gen-fraction", "1.5"], "gen_fraction must be in [0, 1]"),
])
def test_bad_input_is_one_line(argv, needle, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), *FLAGS, *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not out.exists()


def test_transfer_attacks_are_reported_apart_from_the_verdict(tmp_path, digits_model, digits_splits):
    run_training(tiny(method="meta-generator", rounds=1), tmp_path / "gen")
    x, y = digits_splits.test_x[:60], digits_splits.test_y[:60]
    options = {"eps": 0.2, "attacks": "fgsm", "checks": False}
    plain = evaluate_model(digits_model, x, y, **options)
    transfer = transfer_attacks(f"{tmp_path / 'gen'},advgan:5", tmp_path / "gen")
    report = evaluate_model(digits_model, x, y, transfer=transfer, **options)
    assert set(report["transfer"]) == {f"meta-generator:{tmp_path / 'gen'}", "advgan-fit5"}
    assert report["robust_acc"] == plain["robust_acc"] and report["per_attack"] == plain["per_attack"]
    assert all(0 <= acc <= report["clean_acc"] for acc in report["transfer"].values())
    run_training(tiny(method="standard", rounds=1), tmp_path / "std")
    with pytest.raises(UserError, match="needs a run of meta-generator"):
        transfer_attacks(str(tmp_path / "std"), tmp_path / "std")
