"""The learner study: does a *learned* meta-optimizer of adversarial training beat its random control
and the best hand-made attack at equal cost?

Two learners, each with its control, against the hand-made rows, on mnist5k at eps 0.3, every model
stopped at the same training grad evals (cost a; ``medium``: 192,500, the learned-vs-searched
study's budget, so that study can reuse these runs):

- ``las``: the per-example learned attack strategy (``--controller las``, docs/las.md: LAS-AT
  adapted to small data), learning inside each run, tuned over 6 configurations on pilot seeds
  (its eps grid and attack-loss weight); ``las-frozen``: the same network at the picked
  configuration, frozen at its exactly uniform start (the random control, at the same cost a).
- ``policy``: one REINFORCE policy meta-trained across ``episodes`` whole runs at this budget
  (``metaadv policy train``, docs/policy-train.md; episodes on seeds 30000+), deployed frozen on the
  table's seeds; ``policy-untrained``: the same policy frozen at its uniform start.
- ``fixed-pgd10``: PGD-10 AT with the default schedule; ``pgd-k``: the best hand-made PGD-k
  (k in 2, 3, 4, 5 at step 0.5 eps), k picked by validation on pilot seeds outside the table.

Every schedule a controller chooses ends with the threat model's tail (its last fifth at eps 0.3
with PGD-10). Every model is judged by ``metaadv evaluate``: PGD-40 x 5, the reference AutoAttack
``fast``, Square and a transfer attack from an independently trained PGD-10 AT model (the
``fixed-pgd10`` model of the next seed), all in the per-example worst case; each arm's best model
is judged again by the standard AutoAttack. Cost (b) adds the decisions (LAS's look-ahead, the
policy's reward checks), the PGD-k search and the policy's meta-training.

``metaadv study learner --size tiny|smoke|medium`` runs it (resumable); ``metaadv analyze`` reports it.
"""

from metaadv.study.spec import Arm, Study, StudySize

from .learned_vs_searched import FREE, LAS, LAS_EPS_GRIDS, LAS_FROZEN, LAS_SPACE, PGD_K, SPACE, TAIL  # noqa: F401

EPS = 0.3

BASE = {"method": "pgd-at", "dataset": "mnist5k", "optimizer": "adam", "batch_size": 100, "eps": EPS, "lr": 1e-3,
        "steps": 10, "step_ratio": 0.25}

ARMS = (
    # First, so its pick is known early: at most 6 configurations, each on the pilot seeds, picked by
    # mean validation (never by test); las-frozen then runs the picked grid frozen.
    LAS,
    Arm("fixed-pgd10", "single", "PGD-10 AT at 0.25 eps, the default schedule scaled to the budget", {"controller": "schedule"}),
    PGD_K,
    LAS_FROZEN,
    Arm("policy", "deployed", "one REINFORCE policy meta-trained across whole runs at this budget, deployed frozen",
        {"controller": "policy", "policy_frozen": True, **FREE, **TAIL}),
    Arm("policy-untrained", "single", "the same policy frozen at its uniform start (the random control)",
        {"controller": "policy", "policy_frozen": True, **FREE, **TAIL}),
)

CONTRASTS = (
    ("las", "las-frozen", "does the strategy learn? LAS against itself frozen at its uniform start, equal cost (a)"),
    ("las", "pgd-k", "LAS against the best hand-made PGD-k, equal cost (a)"),
    ("policy", "policy-untrained", "does meta-training help? the deployed policy against itself untrained, equal cost (a)"),
    ("policy", "pgd-k", "the meta-trained policy against the best hand-made PGD-k, equal cost (a)"),
)

AIM = {"min_effect": 0.02, "planned_seeds": 10,
       "statement": "a learned row beats its random control and the best hand-made PGD-k at equal cost (a) by a mean of "
                    "at least 2 points of robust accuracy, with a Holm-adjusted lower bound above zero; cost (b), "
                    "decisions and meta-training included, is reported beside"}

# Every model's judge: the evaluation's attacks plus Square and a transfer from an independent PGD-10 AT model.
BLACK_BOX = {"attacks": "fgsm,pgd,autoattack,square", "surrogates": ["arm:fixed-pgd10"]}

SIZES = {
    # Tests: digits, seconds per run. Episodes validate at the training eps: every size validates at eps 0.3.
    "tiny": StudySize(
        seeds=2, search_samples=1, populations=1, population=1, budget_grad_evals=3 * 11 * 50 * 2,
        config={"dataset": "digits", "batch_size": 50, "rounds": 3, "steps_per_round": 2, "val_size": 50,
                "val_pgd_steps": 2, "val_eps": EPS, "device": "cpu", "las_lookahead_size": 16,
                "las_lookahead_steps": 2},
        evaluation={"n": 20, "pgd_steps": 5, "pgd_restarts": 1, "aa_version": "fast", "square_queries": 20, **BLACK_BOX},
        corners="digits, 2 seeds, 1 pilot seed per k, 2 meta-training episodes, 6 steps of PGD-10, 20 test digits",
        policy={"policy_reward_size": 20, "policy_reward_steps": 2}, episodes=2, episode_parallel=2,
        judge={"n": 10, "pgd_steps": 2, "pgd_restarts": 1, "aa_version": "fast"}),
    # From the CLI in minutes: the pipeline, not a measurement.
    "smoke": StudySize(
        seeds=2, search_samples=1, populations=1, population=1, budget_grad_evals=5 * 11 * 100 * 5,
        config={"rounds": 5, "steps_per_round": 5, "val_size": 100, "val_pgd_steps": 5, "val_eps": EPS},
        evaluation={"n": 50, "pgd_steps": 20, "pgd_restarts": 1, "aa_version": "fast", "square_queries": 100, **BLACK_BOX},
        corners="2 seeds (not 10), 1 pilot seed per k, 4 meta-training episodes (not 64), a budget of 25 PGD-10 steps "
                "(27,500 grad evals, under one epoch: robust accuracy at eps 0.3 stays low), 50 test digits, PGD-20 x 1, AutoAttack 'fast', Square at 100 queries",
        policy={"policy_reward_size": 50, "policy_reward_steps": 5}, episodes=4, episode_parallel=2),
    # The table: five epochs of PGD-10 per model, 10 paired seeds, 64 episodes of meta-training.
    "medium": StudySize(
        seeds=10, search_samples=2, populations=1, population=1, budget_grad_evals=5 * 11 * 3500,
        config={"rounds": 5, "steps_per_round": 0, "val_size": 500, "val_pgd_steps": 10},
        evaluation={"n": 500, "pgd_steps": 40, "pgd_restarts": 5, "aa_version": "fast", "square_queries": 1000,
                    **BLACK_BOX},
        corners="AutoAttack 'fast' for every model, the standard AutoAttack for each arm's best",
        policy={"policy_reward_size": 200, "policy_reward_steps": 10}, episodes=64, episode_parallel=2,
        judge={"n": 500, "pgd_steps": 40, "pgd_restarts": 5, "aa_version": "standard"}),
    # A GPU cluster (--address): the same rows at fifteen epochs, the standard AutoAttack for every model.
    "full": StudySize(
        seeds=10, search_samples=2, populations=1, population=1, budget_grad_evals=15 * 11 * 3500,
        config={"rounds": 15, "steps_per_round": 0, "val_size": 500, "val_pgd_steps": 20},
        evaluation={"n": None, "pgd_steps": 40, "pgd_restarts": 5, "aa_version": "standard", "square_queries": 5000,
                    **BLACK_BOX},
        corners="none", policy={"policy_reward_size": 250, "policy_reward_steps": 10}, episodes=128, episode_parallel=16),
}

STUDY = Study(
    name="learner",
    description="learned meta-optimizers of PGD-AT (per-example LAS, a policy meta-trained across runs) against their "
                "random controls and the best hand-made PGD-k on mnist5k at equal cost",
    base=BASE, space=SPACE, arms=ARMS, sizes=SIZES, contrasts=CONTRASTS, aim=AIM,
)
