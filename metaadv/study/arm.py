"""What a study is made of: its arms (:class:`Arm`, the kinds in :data:`ARM_KINDS`), one size of it
(:class:`StudySize`), and the seeds each kind of trial trains on. :class:`~metaadv.study.spec.Study`
puts them together and checks them."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Arm", "StudySize", "ARM_KINDS", "SEARCH_SEED", "POPULATION_SEED", "arm_seeds", "search_seeds",
           "population_seeds"]

ARM_KINDS = ("single", "tuned", "searched", "replay", "transfer", "deployed")
SEARCH_SEED = 20_000  # random-search trial k trains on seed SEARCH_SEED + k
POPULATION_SEED = 10_000  # PBT population p, member m trains on seed POPULATION_SEED + 100 p + m


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str
    description: str
    config: dict = field(default_factory=dict)  # TrainConfig keys over the study's base
    # The arm's decisions read the per-round validation (val/*: PBT's ranking, a search's pick): its
    # cost (b) counts cost/eval_grad_evals too. A policy reads its own reward check instead
    # (cost/reward_grad_evals, always counted); its val/* is logging only.
    decision_validation: bool = False
    source: str = ""  # replay / transfer: the arm whose schedules / policies this one uses
    # Options over the size's ``evaluation`` for this arm's models (e.g. a generator arm's own
    # generator as a reported transfer attack): the judge is the same, what it reports may differ.
    evaluation: dict = field(default_factory=dict)
    # A tuned arm's own search space (TrainConfig keys -> Grid; empty: the study's space) and how it
    # searches it: "random" (``search_samples`` draws) or "grid" (every combination, each on the
    # ``search_samples`` pilot seeds; the combination with the best mean validation is rerun).
    space: dict = field(default_factory=dict)
    search: str = "random"
    # A single-run arm whose models pair with a searched arm's populations (``"population"``: seeds
    # 1..populations, the seeds its replays use) rather than with the seeds 1..N (``"seed"``).
    unit: str = "seed"
    # A single-run arm trained at another arm's cost (b) per model instead of the per-model budget
    # (``"searched"``: :meth:`Study.declared_cost_b`): what that arm's compute buys as plain training.
    budget_of: str = ""
    # A single-run arm that trains at a tuned arm's picked configuration (its searched keys), under
    # its own config (a control: the same strategy frozen), derived in phase 2 once the pick is known.
    config_of: str = ""


@dataclass(frozen=True)
class StudySize:
    """One size of a study. ``config``: TrainConfig keys for every run (dataset, rounds of the
    fixed schedule, steps_per_round, val_size, ...) plus ``val_eps``, the threat model."""

    seeds: int  # per single-run, tuned (rerun), replay and transfer arm
    search_samples: int  # the random search's trials (tuned)
    populations: int  # PBT populations (searched)
    population: int  # trials per PBT population
    budget_grad_evals: int  # cost (a): every run stops at the training step that reaches it
    config: dict
    evaluation: dict  # evaluate_checkpoint options: n, pgd_steps, pgd_restarts, aa_version
    corners: str = ""  # what this size cuts, said in study.json and the printed summary
    pbt: dict = field(default_factory=dict)  # PBT options over the study's
    cpus_per_trial: float = 1.0
    # A ``deployed`` arm's meta-training: episodes (whole runs at the per-model budget), and how many
    # run side by side (one policy update per batch of them).
    episodes: int = 0
    episode_parallel: int = 2
    # TrainConfig keys for the policy-controller arms only: the reward check's batch and attack
    # (policy_reward_size, policy_reward_steps), sized so the check is a modest share of a round.
    policy: dict = field(default_factory=dict)
    # Config keys for one arm at this size only (arm name -> keys over the arm's own config): what
    # depends on both, such as a fixed schedule's eps ramp scaled to the rounds this budget buys.
    arm_config: dict = field(default_factory=dict)
    # A tuned arm's search space at this size only (arm name -> key -> Grid), in place of the arm's
    # own: a sub-space (its keys among the arm's, each a sub-grid), a key left out keeping its config's
    # value. The smoke size searches fewer configurations than the table sizes, the same way.
    arm_space: dict = field(default_factory=dict)
    # Seeds for one single-run arm at this size in place of ``seeds`` (arm name -> count): a study's
    # contrast rows on more paired seeds than its other rows (seeds 1..count, so they pair with the
    # others on theirs).
    arm_seeds: dict = field(default_factory=dict)
    # evaluate_checkpoint options for one arm at this size, over ``evaluation`` and the arm's own
    # (arm name -> options): a stronger check on the rows a declared contrast reads.
    arm_evaluation: dict = field(default_factory=dict)
    # evaluate_checkpoint options for a last phase that judges each arm's best model again, with a
    # stronger attack than ``evaluation`` (the standard AutoAttack where ``evaluation`` used the fast
    # subset): empty, no such phase. The best is picked by the ``evaluation`` verdict, so the judge
    # says how much the cheaper evaluation flattered the model each arm would ship.
    judge: dict = field(default_factory=dict)


def arm_seeds(size: StudySize, arm: str | None = None) -> list[int]:
    """The paired seeds ``1..n``: the size's ``seeds``, or ``arm``'s own count there (``arm_seeds``)."""
    return list(range(1, size.arm_seeds.get(arm, size.seeds) + 1))


def search_seeds(size: StudySize) -> list[int]:
    return [SEARCH_SEED + k for k in range(size.search_samples)]


def population_seeds(size: StudySize, p: int) -> list[int]:
    return [POPULATION_SEED + 100 * p + m for m in range(size.population)]
