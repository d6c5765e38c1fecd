"""``metaadv study generator`` (issue 11's table as a declared study): the declaration is valid and
costs what it budgets for, and a tiny study runs end to end under Ray: every arm's models judged,
the generator arms' own generator reported as a transfer attack outside the verdict, every run
within its budget, the declared contrasts in ``metaadv analyze``'s report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from metaadv.config import TrainConfig
from metaadv.study.spec import arm_seeds
from tune_experiments.generator import BUDGET, PASSES, POLICY_ARMS, STUDY, ramp_rounds, rounds_bought
from tune_experiments.registry import STUDIES, load_study

from .conftest import local_ray

ARMS = ("pgd-fixed", "pgd4-fixed", "pgd-policy", "recursive", "recursive-final", "meta-adv", "advgan", "noise",
        "recursive-frozen", "pgd4-zero", "l2l-da", "noise-continued", "advgan-continued", "meta-adv-continued")
GENERATOR_ARMS = ("recursive", "recursive-final", "meta-adv", "advgan", "recursive-frozen", "l2l-da", "advgan-continued",
                  "meta-adv-continued")
OWN = {"transfer": "own"}


def test_the_generator_study_is_registered_and_listed(capsys):
    from metaadv.cli import main

    assert "generator" in STUDIES and load_study("generator") is STUDY
    assert main(["study", "--list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("generator "))
    assert "aim:" in line and "sizes: tiny, smoke, medium, full" in line


def test_arms_contrasts_and_judge_options_are_the_tables():
    assert tuple(a.name for a in STUDY.arms) == ARMS and all(a.kind == "single" for a in STUDY.arms)
    # Issue 23's family: learned - frozen, generator - PGD-4 (both starts), L2L-DA - PGD-10 AT, and the headline.
    assert {(a, b) for a, b, _ in STUDY.contrasts} == {
        ("recursive-final", "recursive-frozen"), ("recursive-final", "pgd4-fixed"), ("recursive-final", "pgd4-zero"),
        ("l2l-da", "pgd-fixed"), ("recursive-final", "pgd-fixed")}
    assert all(q.endswith("?") for _, _, q in STUDY.contrasts)
    assert STUDY.aim["min_effect"] == 0.02 and STUDY.aim["planned_seeds"] == 10
    assert set(STUDY.aim["contrasts"]) == {"recursive-final - recursive-frozen", "recursive-final - pgd4-fixed",
                                           "recursive-final - pgd4-zero", "l2l-da - pgd-fixed"}
    for size in STUDY.sizes:
        for arm in ARMS:  # the own generator as a transfer attack: generator arms only (noise has none)
            options = STUDY.evaluation(arm, size)
            assert options.get("transfer") == ("own" if arm in GENERATOR_ARMS else None), arm
            # Every row's verdict: Square and a transfer from an independently trained PGD-10 AT model.
            assert "square" in options["attacks"].split(",") and options["surrogates"] == ["arm:pgd-fixed"], arm
    assert [STUDY.sizes[s].evaluation["square_queries"] for s in ("medium", "full")] == [1000, 5000]
    contrast_rows = {a for c in STUDY.contrasts for a in c[:2]}
    assert {a.name: STUDY.evaluation(a, "medium")["square_queries"] for a in STUDY.arms} == {
        a.name: 5000 if a.name in contrast_rows else 1000 for a in STUDY.arms}
    assert STUDY.declaration("medium")["size_settings"]["arm_evaluation"]["l2l-da"] == {"square_queries": 5000}
    for size in ("medium", "full"):  # the table: 10 seeds for the contrast rows (issue 23), 5 for the rest, 500 test digits
        s = STUDY.sizes[size]
        assert s.seeds == 5 and s.budget_grad_evals == BUDGET == 192_500
        assert {a.name: STUDY.planned(a, size)[1] for a in STUDY.arms} == {
            a.name: 10 if a.name in contrast_rows else 5 for a in STUDY.arms}
        assert {k: s.evaluation[k] for k in ("n", "pgd_steps", "pgd_restarts")} == {"n": 500, "pgd_steps": 40, "pgd_restarts": 5}
    assert STUDY.sizes["medium"].evaluation["aa_version"] == "fast"  # as published; the best of each arm again:
    assert STUDY.sizes["medium"].judge["aa_version"] == STUDY.sizes["full"].evaluation["aa_version"] == "standard"
    assert STUDY.sizes["smoke"].seeds == 2


def test_every_size_builds_every_arm_with_the_tables_common_flags():
    for size in STUDY.sizes:
        STUDY.check(size)
        for arm in ARMS:
            values = STUDY.arm_config(arm, size)
            config = TrainConfig.from_dict(values)
            assert config.co_guard and config.eps == 0.3 and config.lr_schedule == "constant"
            assert config.budget_grad_evals == STUDY.sizes[size].budget_grad_evals
            # The round cap is never what stops a run: the budget (or the guard) does.
            assert config.rounds > rounds_bought(arm, config.budget_grad_evals, config.steps_per_round, config.batch_size)
            assert (config.controller == "policy") == (arm in POLICY_ARMS)
    medium = {a: TrainConfig.from_dict(STUDY.arm_config(a, "medium")) for a in ARMS}
    assert all((c.dataset, c.steps_per_round, c.batch_size, c.val_size, c.val_pgd_steps) == ("mnist5k", 3, 100, 100, 5)
               for c in medium.values())
    assert (medium["recursive"].gen_final_steps, medium["recursive-final"].gen_final_steps) == (0, 1)
    assert medium["meta-adv"].method == "meta-adv" and medium["noise"].gen_arch == "noise"
    assert (medium["pgd4-fixed"].steps, medium["pgd4-fixed"].step_ratio) == (4, 0.5)
    # Issue 23's rows: each the row it controls, with one thing changed.
    frozen, learned = medium["recursive-frozen"].to_dict(), medium["recursive-final"].to_dict()
    assert frozen.pop("gen_frozen") and not learned.pop("gen_frozen") and frozen == learned
    zero, random = medium["pgd4-zero"].to_dict(), medium["pgd4-fixed"].to_dict()
    assert (zero.pop("pgd_start"), random.pop("pgd_start")) == ("zero", "random") and zero == random
    l2l = medium["l2l-da"]
    assert (l2l.gen_unroll, l2l.gen_step_ratio, l2l.gen_noise, l2l.gen_diversity, l2l.gen_step_discount, l2l.gen_width,
            l2l.gen_final_steps, l2l.gen_start, l2l.gen_train_copies) == (10, 0.25, True, 0.02, 1.0, 64, 0, "zero", 2)
    assert abs(l2l.adv_mix - 2 / 3) < 1e-9  # their classifier loss: the mean over [x, adv_1, adv_2]
    for arm in ("noise", "advgan", "meta-adv"):
        stopped, continued = medium[arm].to_dict(), medium[f"{arm}-continued"].to_dict()
        assert stopped.pop("co_guard_stop") and not continued.pop("co_guard_stop") and stopped == continued, arm
    assert all((medium[a].budget_counts == "train+decisions") == (a in POLICY_ARMS) for a in ARMS)


def test_the_eps_ramp_is_30_percent_of_the_rounds_each_arms_budget_buys():
    # The published table's rounds at 192,500 (docs/meta-adversarial.md): 59 of PGD-10, 129 at 5 passes, 321 at 2.
    assert [rounds_bought(a, BUDGET, 3, 100) for a in ("pgd-fixed", "recursive-final", "noise")] == [59, 129, 321]
    for size, s in STUDY.sizes.items():
        for arm in ARMS:
            config = STUDY.arm_config(arm, size)
            if arm in POLICY_ARMS:
                assert arm not in s.arm_config  # the policy picks eps itself
                continue
            bought = rounds_bought(arm, s.budget_grad_evals, config["steps_per_round"], config["batch_size"])
            assert config["eps_ramp_rounds"] == ramp_rounds(arm, s.budget_grad_evals, config["steps_per_round"],
                                                            config["batch_size"]) == max(1, round(0.3 * bought))
    # It scales with the budget: the medium ramp is longer than the smoke one, and cheaper arms ramp over more rounds.
    ramp = lambda arm, size: STUDY.arm_config(arm, size)["eps_ramp_rounds"]  # noqa: E731
    assert [ramp("pgd-fixed", "medium"), ramp("recursive-final", "medium"), ramp("noise", "medium")] == [18, 39, 96]
    assert all(ramp(a, "medium") > ramp(a, "smoke") for a in ARMS if a not in POLICY_ARMS)


def test_each_arm_costs_the_classifier_passes_its_ramp_is_computed_from(digits_splits):
    """PASSES, checked on the trainer: one round of one batch of 20 at each arm's target hyperparameters."""
    from metaadv.training.trainer import Trainer

    for arm in ARMS:
        values = {**STUDY.arm_config(arm, "medium"), "dataset": "digits", "batch_size": 20, "steps_per_round": 1,
                  "device": "cpu"}
        config = TrainConfig.from_dict(values)
        trainer = Trainer(config, digits_splits, torch.device("cpu"))
        trainer.train_round(config.hparams())  # the target hyperparameters (the policy's choices may add a clean pass)
        assert trainer.grad_evals == 20 * PASSES[arm], arm


def test_own_transfer_option_is_the_models_own_generator_reported_apart(tmp_path, digits_splits):
    from metaadv.errors import UserError
    from metaadv.study.evaluate import OWN, judge_options
    from metaadv.training.run import run_training

    tiny = {"dataset": "digits", "rounds": 1, "steps_per_round": 1, "batch_size": 20, "val_size": 20, "val_pgd_steps": 1,
            "gen_width": 8, "gen_unroll": 2, "eps_ramp_rounds": 0, "device": "cpu"}
    run_training(TrainConfig.from_dict({**tiny, "method": "meta-generator"}), tmp_path / "gen")
    run_training(TrainConfig.from_dict({**tiny, "method": "meta-generator", "gen_arch": "noise"}), tmp_path / "noise")
    checkpoint = tmp_path / "gen" / "checkpoint.pt"
    options = judge_options({"n": 5, "transfer": OWN}, checkpoint)
    assert options["n"] == 5 and list(options["transfer"]) == [OWN] and callable(options["transfer"][OWN])
    assert judge_options({"n": 5}, checkpoint) == {"n": 5}
    both = judge_options({"transfer": f"{OWN}, {tmp_path / 'gen'}"}, checkpoint)["transfer"]
    assert set(both) == {OWN, f"meta-generator:{tmp_path / 'gen'}"}
    with pytest.raises(UserError, match="uniform-noise control"):  # checked before any attack runs
        judge_options({"transfer": OWN}, tmp_path / "noise" / "checkpoint.pt")

    from metaadv.evaluation import evaluate_checkpoint

    report = evaluate_checkpoint(tmp_path / "gen", eps=0.2, n=20, attacks="fgsm", checks=False, device="cpu",
                                 **{k: v for k, v in options.items() if k != "n"})
    assert 0.0 <= report["transfer"][OWN] <= report["clean_acc"]
    assert "transfer" not in report["per_attack"]


# ----------------------------------------------------------------------------------------------
# End to end under Ray (slow)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    pytest.importorskip("ray")
    with local_ray("rg"):
        yield


def _last_row(trial_path: str) -> dict:
    with open(Path(trial_path) / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


@pytest.mark.slow
def test_a_tiny_generator_study_judges_every_arm_within_budget_and_reports_its_contrasts(ray_local, tmp_path):
    from metaadv.cli import main
    from metaadv.study import StudyOptions, run_study

    # A pilot of the arms that run different code (a PGD-10 surrogate, a learned and a frozen generator, the
    # policy with its decisions in the budget, AdvGAN with the guard's revert and no stop): each of the
    # 14 arms is one of these with other settings, which the unit tests above check arm by arm; all 14
    # took 9.5 minutes here, these 5 about a third of it.
    arms = ("pgd-fixed", "recursive-final", "recursive-frozen", "meta-adv", "advgan-continued")
    study = STUDY.pilot("tiny", arms=arms)
    assert {a.name for a in study.arms} == set(arms)
    root, size = tmp_path / "study", study.sizes["tiny"]
    lines: list[str] = []
    run_study(study, StudyOptions(size="tiny", out=str(root), log=lambda *a, **k: lines.append(" ".join(map(str, a)))))

    meta = json.loads((root / "study.json").read_text())
    assert (meta["study"], meta["size"], meta["status"]) == ("generator", "tiny", "done")
    assert {a for a, e in meta["arms"].items() if (e.get("evaluation") or {}).get("transfer") == "own"} == \
        set(GENERATOR_ARMS) & set(arms)
    with open(root / "models.csv") as f:
        rows = list(csv.DictReader(f))
    # Every arm's models judged, paired on the same seeds.
    assert sorted((r["arm"], int(r["seed"])) for r in rows) == sorted((a, s) for a in arms for s in arm_seeds(size))
    for r in rows:
        report = json.loads((root / r["eval"]).read_text())
        assert report["n"] == 20 and 0.0 <= report["robust_acc"] <= report["clean_acc"] <= 1.0
        # The verdict: the per-example worst case of the attacks, Square and the transfer from another PGD-10 AT model.
        transfer = [k for k in report["per_attack"] if k.startswith("transfer-pgd:")]
        assert set(report["per_attack"]) - set(transfer) == {"fgsm", "pgd", "autoattack", "square"}
        assert len(transfer) == 1 and "pgd-fixed" in transfer[0]
        assert report["robust_acc"] <= min(report["per_attack"].values())
        if r["arm"] in GENERATOR_ARMS:  # its own generator, reported apart: never in the verdict
            assert set(report["transfer"]) == {"own"} and 0.0 <= report["transfer"]["own"] <= report["clean_acc"]
            assert "own" not in report["per_attack"]
        else:
            assert "transfer" not in report

    # Cost (a): every run stopped at its first round that reached the budget (or the guard stopped it); the
    # policy arms' budget counts their reward checks too.
    budget = size.budget_grad_evals
    progress = json.loads((root / "progress.json").read_text())["experiments"]
    assert set(progress) == {f"{a}/{a}" for a in arms}
    for key, trials in progress.items():
        arm = key.split("/")[0]
        c = STUDY.arm_config(arm, "tiny")
        # A round's passes: the arm's own; a policy may add a clean pass to the loss (adv_mix < 1).
        one_round = (PASSES[arm] + (arm in POLICY_ARMS)) * c["steps_per_round"] * c["batch_size"]
        for t in trials:
            spent, last = t["metrics"]["cost/grad_evals"], _last_row(t["path"])
            if arm in POLICY_ARMS:
                spent += t["metrics"]["cost/reward_grad_evals"]
            assert spent < budget + one_round, key
            assert spent >= budget or float(last.get("train/co_detected") or 0) == 1, key

    # metaadv analyze: the declared contrasts, each with its question.
    report = tmp_path / "report"
    assert main(["analyze", str(root), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert all(arm in text for arm in arms) and "Pilot of generator" in text
    assert study.contrasts  # the declared contrasts among these arms
    for a, b, question in study.contrasts:
        assert question in text, (a, b)
    with open(report / "contrasts.csv") as f:
        assert {(r["a"], r["b"]) for r in csv.DictReader(f)} == {(a, b) for a, b, _ in study.contrasts}
