"""The learner study's declaration (tune_experiments/learner.py), checked without Ray: its rows,
controls, contrasts and aim as the issue states them, every arm at the same cost (a), and every
model judged with Square and a transfer attack. The engine's pieces it needs (the grid-searched
PGD-k, the deployed policy, surrogates) are tested in tests/test_study.py; the learned-vs-searched
study's tiny run exercises LAS and the deployed policy end to end."""

from __future__ import annotations

from metaadv.config import TrainConfig
from tune_experiments.learner import AIM, STUDY
from tune_experiments.registry import load_study


def test_rows_controls_and_contrasts_are_the_issues():
    assert load_study("learner") is STUDY
    assert {a.name: a.kind for a in STUDY.arms} == {"fixed-pgd10": "single", "pgd-k": "tuned", "las": "tuned",
                                                    "las-frozen": "single", "policy": "deployed",
                                                    "policy-untrained": "single"}
    assert {(a, b) for a, b, _ in STUDY.contrasts} == {("las", "las-frozen"), ("las", "pgd-k"),
                                                      ("policy", "policy-untrained"), ("policy", "pgd-k")}
    assert AIM["min_effect"] == 0.02 and STUDY.declaration("medium")["aim"] == AIM
    assert STUDY.sizes["medium"].seeds == 10 and STUDY.sizes["medium"].episodes >= 64
    assert STUDY.sizes["medium"].budget_grad_evals == 192_500  # the learned-vs-searched study's budget


def test_each_control_differs_from_its_learner_only_in_being_frozen():
    for learner, control, flag in (("las", "las-frozen", "las_frozen"), ("policy", "policy-untrained", "policy_frozen")):
        for size in STUDY.sizes:
            a, b = STUDY.arm_config(learner, size), STUDY.arm_config(control, size)
            differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
            assert differ <= {flag}, (learner, size, differ)
    # LAS's searched keys reach its control through config_of: the control runs the picked grid.
    assert STUDY.arm("las-frozen").config_of == "las"
    # The policy is deployed frozen; its control is frozen at the uniform start (no policy file).
    assert STUDY.arm_config("policy", "medium")["policy_frozen"] and not STUDY.arm_config("policy-untrained", "medium").get("policy_file")


def test_las_is_tuned_over_at_most_six_configurations_by_validation_on_pilot_seeds():
    from metaadv.study.spec import arm_seeds, search_seeds
    from tune_experiments.learner import LAS_EPS_GRIDS

    arm = STUDY.arm("las")
    assert arm.search == "grid" and arm.decision_validation
    configs = [(e, w) for e in arm.space["las_eps"].values for w in arm.space["las_loss_weight"].values]
    assert len(configs) <= 6 and configs[0] == (TrainConfig.las_eps, 1.0)  # the authors' grid and weight among them
    assert max(LAS_EPS_GRIDS[1]) == 1.0 and min(LAS_EPS_GRIDS[2]) > 0.5 and max(LAS_EPS_GRIDS[2]) < 1.5
    size = STUDY.sizes["medium"]
    assert STUDY.search_trials(arm, "medium") == len(configs) * size.search_samples
    assert not set(search_seeds(size)) & set(arm_seeds(size))
    for eps, weight in configs:  # every configuration is a valid run
        TrainConfig.from_dict({**{k: v for k, v in STUDY.arm_config(arm, "medium").items() if k != "val_eps"},
                               "las_eps": eps, "las_loss_weight": weight})
    # Its cost (b) counts the look-ahead and the validation its pick read.
    assert {"cost/reward_grad_evals", "cost/eval_grad_evals"} <= set(STUDY.cost_b_columns(arm, "medium"))


def test_pgd_k_searches_k_2_to_5_at_half_eps_on_pilot_seeds_outside_the_table():
    from metaadv.study.spec import arm_seeds, search_seeds

    arm = STUDY.arm("pgd-k")
    assert arm.search == "grid" and list(arm.space["steps"].values) == [2, 3, 4, 5]
    assert STUDY.arm_config(arm, "medium")["step_ratio"] == 0.5
    size = STUDY.sizes["medium"]
    assert STUDY.search_trials(arm, "medium") == 4 * size.search_samples
    assert not set(search_seeds(size)) & set(arm_seeds(size))  # picked by validation, never on a table seed


def test_every_model_meets_square_and_a_transfer_from_an_independent_pgd10_model_at_equal_cost_a():
    for size, s in STUDY.sizes.items():
        for arm in STUDY.arms:
            ev = STUDY.evaluation(arm, size)
            assert "square" in ev["attacks"] and ev["surrogates"] == ["arm:fixed-pgd10"], (size, arm.name)
            assert STUDY.arm_config(arm, size)["budget_grad_evals"] == s.budget_grad_evals
            assert STUDY.val_eps(size) == 0.3
            values = {k: v for k, v in STUDY.arm_config(arm, size).items() if k != "val_eps"}
            TrainConfig.from_dict(values)  # every row's config is valid at every size
        assert s.evaluation["square_queries"] >= (1000 if size in ("medium", "full") else 1)
    # Every schedule a controller chooses ends at the threat model: the last fifth at eps 0.3 with PGD-10.
    for arm in ("las", "las-frozen", "policy", "policy-untrained"):
        c = STUDY.arm_config(arm, "medium")
        assert (c["tail_fraction"], c["tail_steps"], c["tail_step_ratio"]) == (0.2, 10, 0.25)
