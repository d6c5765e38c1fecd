"""The main study: a schedule learned by a REINFORCE policy vs one searched by PBT, at equal cost.

All arms are PGD-AT on mnist5k at eps 0.3 (``tiny``: digits; ``smoke``: validated and judged at
0.2, see _pgd_at.py), over **one search space** (``SPACE``): the policy's grids, PBT's mutations
and the random search all draw from it. Cost (a): every run, replay and search trial stops at the
training step that reaches ``budget_grad_evals`` (mid-round if need be). Cost (b): everything an arm ran to produce its
final models (the random search, the whole PBT population, the policy arms' reward checks
``cost/reward_grad_evals``, and the per-round validation ``cost/eval_grad_evals`` where it informs
a decision: arms marked ``decision_validation``, the searches); the analysis reads arms at equal (b).
Each arm's counted columns are in study.json (``arms.ARM.cost_b``).

``metaadv study learned_vs_searched --size smoke`` runs it; ``metaadv analyze`` reports it.
"""

from metaadv.tune.space import Grid
from metaadv.study.spec import Arm, Study, StudySize

EPS = 0.3
LR = 1e-3

BASE = {"method": "pgd-at", "dataset": "mnist5k", "optimizer": "adam", "batch_size": 100, "eps": EPS, "lr": LR,
        "steps": 10, "step_ratio": 0.25}

# eps as absolute training radii (the policy reads them as fractions of EPS: 0.25 .. 1), lr as
# values (the policy: multiples 0.3, 1, 3 of LR). Grids: PBT moves to a neighbouring value.
SPACE = {
    "eps": Grid(0.075, 0.15, 0.225, 0.3),
    "step_ratio": Grid(0.1, 0.25, 0.5),
    "steps": Grid(1, 3, 5, 10),
    "lr": Grid(3e-4, 1e-3, 3e-3),
    "weight_decay": Grid(0.0, 5e-4),
}

# Searches and policies set eps and lr per round: no ramp, no lr step of their own.
FREE = {"eps_ramp_rounds": 0, "lr_schedule": "constant"}
# Every non-fixed schedule ends at the threat model: its last fifth trains at the target eps with the
# fixed arm's attack (PGD-10 at 0.25 eps) and the schedule's final lr (``tail_fraction``).
TAIL = {"tail_fraction": 0.2, "tail_steps": 10, "tail_step_ratio": 0.25}

# LAS's tuning (issue 22: at most 6 configurations on the pilot seeds). A pilot at the medium budget
# (docs/learner-pilot.md) with the authors' grid and weights learned to train at the grid's top
# (1.75 x eps): the per-example attack loss rewards larger eps. The grid: the authors' (0.375-1.75),
# capped at the target (0.375-1), or narrow around it (0.75-1.25); the attack-loss weight: the
# authors' 1, or 0.25 (the look-ahead's correctness then says more).
LAS_EPS_GRIDS = ((0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75),
                 (0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
                 (0.75, 0.875, 1.0, 1.125, 1.25))
LAS_SPACE = {"las_eps": Grid(*LAS_EPS_GRIDS), "las_loss_weight": Grid(1.0, 0.25)}

# The rows this study shares with the learner study (tune_experiments/learner.py), declared once so
# that at one size their trial configs are equal and ``--reuse`` can take one study's runs into the
# other: the hand-made PGD-k picked by validation, LAS tuned the same way, and its frozen control.
PGD_K = Arm("pgd-k", "tuned", "the best hand-made PGD-k at step 0.5 eps: every k in 2-5 on the pilot seeds, the best "
            "mean validation rerun on the table's seeds", {"controller": "schedule", "step_ratio": 0.5},
            space={"steps": Grid(2, 3, 4, 5)}, search="grid", decision_validation=True)
LAS = Arm("las", "tuned", "the per-example learned attack strategy (LAS-AT adapted to small data, docs/las.md), "
          "learning in the run; its eps grid and attack-loss weight picked by validation on the pilot seeds",
          {"controller": "las", **TAIL}, space=LAS_SPACE, search="grid", decision_validation=True)
LAS_FROZEN = Arm("las-frozen", "single", "the same strategy at LAS's picked configuration, frozen at its exactly "
                 "uniform start (the random control)", {"controller": "las", "las_frozen": True, **TAIL}, config_of="las")

ARMS = (
    Arm("fixed", "single", "the default schedule: PGD-10, eps ramped over the first fifth of the budget, lr x0.1 for "
        "the last fifth", {"controller": "schedule"}),
    PGD_K,
    LAS,
    LAS_FROZEN,
    Arm("policy", "deployed", "one REINFORCE policy meta-trained across whole runs at this budget (docs/policy-train.md), "
        "deployed frozen", {"controller": "policy", "policy_frozen": True, **FREE, **TAIL}),
    Arm("random-policy", "single", "the same policy frozen at its uniform start (its random control)",
        {"controller": "policy", "policy_frozen": True, **FREE, **TAIL}),
    Arm("searched", "searched", "PBT populations over the space, one dimension perturbed at a time; each population's "
        "best final model", {**FREE, **TAIL}, decision_validation=True),
    Arm("replay-searched", "replay", "each population's best lineage (hp in force every round), retrained from scratch "
        "once, on the population's own seed (the population is the unit)", {"controller": "replay", **FREE, **TAIL},
        source="searched"),
    Arm("fixed-long", "single", "the default schedule trained with the searched arm's cost (b) per model: what the "
        "search's compute buys as plain training (one model per population, paired with it)",
        {"controller": "schedule"}, unit="population", budget_of="searched"),
)

CONTRASTS = (
    ("las", "pgd-k", "the learned per-example strategy against the best hand-made arm, equal cost (a)"),
    ("policy", "pgd-k", "the meta-trained policy against the best hand-made arm, equal cost (a)"),
    ("replay-searched", "pgd-k", "the searched schedule, retrained without PBT's selection, against the best "
     "hand-made arm, equal cost (a)"),
    ("searched", "fixed-long", "PBT against plain training with all of PBT's compute, equal cost (b)"),
    ("pgd-k", "fixed", "does the picked PGD-k beat the default PGD-10 schedule at this budget?"),
)
# Each learner against its own random control is the learner study's question (tune_experiments/learner.py);
# here the learners meet the searched schedule and the hand-made arms.

# Declared before any run (study.json ``aim``): what would count as learning or search paying off.
AIM = {"min_effect": 0.03, "planned_seeds": 10,
       "statement": "a learned or searched arm at least 3 points of robust accuracy above the best hand-made arm "
                    "(pgd-k, picked by validation) at equal cost (a), and PBT above fixed-long at equal cost (b), each with a "
                    "Holm-adjusted lower bound above zero",
       "contrasts": ["las - pgd-k", "policy - pgd-k", "replay-searched - pgd-k", "searched - fixed-long"]}

# One PGD-10 round of S steps of 100 examples costs 11 * 100 * S grad evals: the budgets below are
# the fixed schedule's rounds of PGD-10 (its ramp's first step, at eps 0, is clean and cheaper, so the
# budget ends it one step into the next round). It ramps eps over the first 20% of the budget and
# drops lr at 80% of it, step by step (TrainConfig eps_ramp_fraction, lr_milestones).
#
# PBT counts time in training grad evals (STUDY.pbt_time_attr): it perturbs every
# ``perturbation_interval`` grad evals whatever each trial's rounds cost, so a PGD-1 trial is not
# judged after a tenth of the work of a PGD-10 one. At medium and full that is a tenth of the budget
# or less, in populations of 8 (quantile 0.25: the bottom 2 clone the top 2 at each decision), and
# each exploit changes one hyperparameter (STUDY.pbt one_dim). PBT decides only when a trial
# reports, once a round: at medium the searched arm's rounds are 17 steps (a PGD-10 round is then
# 18,700 grad evals, under a tenth of the budget; an epoch would be a fifth), and its replay trains
# the lineage with the same rounds. Its decisions read APGD-CE (20 iterations, 200 digits; issue 21):
# PGD-10 from one start rated single-step training 23 points too high and the searches picked PGD-1.
#
# The policy arms' reward check (``policy``: PGD-k twice and FGSM on a fresh batch of n validation
# examples, (2k + 1) n grad evals a round, paid by learned, random-policy and transfer-learned
# alike) is sized to about a tenth of a PGD-10 round (10-14%; 19-26% of the policy's average round,
# which mixes PGD-1..10): enough examples for a paired difference, not a second budget.
# Validation that informs the searched arm's decisions (PBT's ranking): the reference APGD-CE.
# Every model at medium and full also meets Square (gradient-free) and a transfer attack from an
# independently trained PGD-10 AT model (the fixed arm's model of the next seed), in the worst case.
BLACK_BOX = {"attacks": "fgsm,pgd,autoattack,square", "surrogates": ["arm:fixed"]}

SEARCH_VALIDATION = {"val_attack": "apgd-ce", "val_apgd_iters": 20, "val_size": 200}

# Two configurations per tuned arm at tiny and smoke (not 4 and 6): the searches' mechanics, in the
# 15 minutes README command 1 may take from a clean clone. LAS at loss weight 1 (the config's).
FEW_CONFIGURATIONS = {"pgd-k": {"steps": Grid(3, 5)}, "las": {"las_eps": Grid(*LAS_EPS_GRIDS[:2])}}

SIZES = {
    # Tests: digits, seconds per arm.
    "tiny": StudySize(
        seeds=2, search_samples=1, populations=1, population=2, budget_grad_evals=3 * 11 * 50 * 2,
        config={"dataset": "digits", "batch_size": 50, "rounds": 3, "steps_per_round": 2, "val_size": 50,
                "val_pgd_steps": 2, "val_eps": 0.2, "device": "cpu"},
        evaluation={"n": 20, "pgd_steps": 5, "pgd_restarts": 1, "aa_version": "fast"},
        corners="digits instead of mnist5k, 2 seeds, 2 PGD-k and 2 LAS configurations on 1 pilot seed, 1 population of 2, "
                "6 steps of PGD-10, 20 test digits",
        pbt={"perturbation_interval": 550, "burn_in_period": 550},  # half a round: a few chances to exploit
        policy={"policy_reward_size": 20, "policy_reward_steps": 3}, episodes=2, episode_parallel=2,
        arm_space=FEW_CONFIGURATIONS,
        judge={"n": 10, "pgd_steps": 2, "pgd_restarts": 1, "aa_version": "fast"}),  # the phase's mechanics only
    # README command 1: minutes on 2 CPUs.
    "smoke": StudySize(
        seeds=2, search_samples=1, populations=1, population=4, budget_grad_evals=5 * 11 * 100 * 5,
        config={"rounds": 5, "steps_per_round": 5, "val_size": 100, "val_pgd_steps": 5, "val_eps": 0.2},
        evaluation={"n": 50, "pgd_steps": 20, "pgd_restarts": 1, "aa_version": "fast"},
        corners="2 seeds per arm (not 10), 1 PBT population of 4, 2 of PGD-k's k (3, 5) and 2 of LAS's configurations "
                "(the authors' eps grid and the capped one, loss weight 1) on 1 pilot seed each, a budget of 25 PGD-10 "
                "steps (27,500 grad evals, under one epoch), validation and evaluation at eps 0.2 on 100 / 50 digits, "
                "AutoAttack 'fast' (APGD-CE + APGD-T, the reference's) and PGD-20 x 1 restart, a reward check of PGD-5 on 50",
        pbt={"perturbation_interval": 5500, "burn_in_period": 5500},
        policy={"policy_reward_size": 50, "policy_reward_steps": 5}, episodes=4, episode_parallel=2,
        arm_space=FEW_CONFIGURATIONS),
    # Hours on 2 CPUs: the README's table. Five epochs of PGD-10 (docs/meta-adversarial.md's budget).
    "medium": StudySize(
        seeds=10, search_samples=2, populations=3, population=8, budget_grad_evals=5 * 11 * 3500,
        config={"rounds": 5, "steps_per_round": 0, "val_size": 500, "val_pgd_steps": 10},
        evaluation={"n": 500, "pgd_steps": 40, "pgd_restarts": 5, "aa_version": "fast", "square_queries": 1000,
                    **BLACK_BOX},
        corners="500 test digits, AutoAttack 'fast' (APGD-CE + APGD-T, the reference's) for every model; the standard "
                "AutoAttack for each arm's best only",
        pbt={"perturbation_interval": 19_250, "burn_in_period": 19_250},  # a tenth of the budget
        policy={"policy_reward_size": 200, "policy_reward_steps": 10}, episodes=64, episode_parallel=2,
        # 17-step rounds: PGD-1 (3,400 grad evals a round) needs 57 to reach the budget, past the 55 rounds
        # every non-fixed arm may run (spec.ROUND_CAP x 5); the replay's rounds are its lineage's.
        arm_config={"searched": {**SEARCH_VALIDATION, "steps_per_round": 17, "rounds": 110},
                    "replay-searched": {"steps_per_round": 17}},
        # Each arm's best model (by the fast verdict) judged again by the standard AutoAttack.
        judge={"n": 500, "pgd_steps": 40, "pgd_restarts": 5, "aa_version": "standard"}),
    # A GPU cluster (--address): 15 epochs of PGD-10, the standard AutoAttack on the whole test split.
    "full": StudySize(
        seeds=10, search_samples=2, populations=5, population=8, budget_grad_evals=15 * 11 * 3500,
        config={"rounds": 15, "steps_per_round": 0, "val_size": 500, "val_pgd_steps": 20},
        evaluation={"n": None, "pgd_steps": 40, "pgd_restarts": 5, "aa_version": "standard", "square_queries": 5000,
                    **BLACK_BOX},
        corners="none",
        pbt={"perturbation_interval": 38_500, "burn_in_period": 38_500},  # a PGD-10 round, a fifteenth of the budget
        policy={"policy_reward_size": 250, "policy_reward_steps": 10}, episodes=128, episode_parallel=16,
        arm_config={"searched": SEARCH_VALIDATION}),
}

STUDY = Study(
    name="learned_vs_searched",
    description="learned (REINFORCE policy) vs searched (PBT) PGD-AT schedules on mnist5k at equal cost, with controls",
    base=BASE, space=SPACE, arms=ARMS, sizes=SIZES, contrasts=CONTRASTS, aim=AIM,
    pbt={"quantile_fraction": 0.25, "resample_probability": 0.25, "one_dim": True},
)
