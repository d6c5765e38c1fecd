"""A declared study: arms over one search space, their seeds, sizes, budget and contrasts.

Ray-free and declarative (its arms and sizes in :mod:`.arm`), like :class:`~metaadv.tune.experiment.Experiment`, so a study in
``tune_experiments/`` is data, checked here before Ray starts, and readable by the analysis.
The runner is :mod:`metaadv.study`.

Arm kinds (what Tune runs for an arm, and which final models it yields):

- ``single``: one trial per seed of a fixed config (a fixed schedule or a policy controller);
  every trial is a final model.
- ``tuned``: a random search over the study's space (``search_samples`` trials at the per-model
  budget), then the best configuration (by its last ``val/robust_acc``) rerun on the arm's seeds.
- ``searched``: ``populations`` PBT populations over the space; each population's best trial
  (by its last ``val/robust_acc``) is a final model.
- ``replay``: the schedules of ``source``'s final models (their rows' ``hp/*``), each retrained
  from scratch with ``controller: replay`` on a seed that did not produce it.
- ``transfer``: ``source``'s saved policy networks, frozen, driving fresh runs on such seeds.
- ``deployed``: one REINFORCE policy meta-trained across ``episodes`` whole runs of the arm's own
  config (``metaadv policy train``, in ``meta/ARM``; episodes on seeds 30000+), then deployed
  frozen on the arm's seeds; its meta-training cost counts in the arm's cost (b).

Seeds: ``single``, ``tuned`` (rerun), ``replay`` and ``transfer`` arms all run on the seeds
``1..seeds``, so arms can be compared paired on seed (same initial weights and batch order).
Replay and transfer arms rotate their source: the run on seed ``s`` follows the schedule / policy
that the source learned on the next seed (``s + 1``, wrapping), so no model retrains on the seed
that found its schedule. Search trials use their own seeds (:data:`SEARCH_SEED`,
:data:`POPULATION_SEED`), never one of ``1..seeds``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..config import TrainConfig
from ..errors import UserError
from ..tune.experiment import CONFIG_CLASSES
from .arm import (ARM_KINDS, POPULATION_SEED, SEARCH_SEED, Arm, StudySize, arm_seeds,  # noqa: F401 (re-exported)
                  population_seeds, search_seeds)
from .checks import POLICY_KEYS, check_declaration, check_size

__all__ = ["Arm", "StudySize", "Study", "ARM_KINDS", "SEARCH_SEED", "POPULATION_SEED", "policy_grid_config",
           "arm_seeds", "population_seeds", "search_seeds"]

# Every arm but the fixed schedule runs until the budget stops it: cheap rounds (PGD-1) buy more
# of them, so the round cap is this many times the fixed schedule's rounds (PGD-10 costs 11 passes
# per example, a clean round 1).
ROUND_CAP = 11

@dataclass(frozen=True)
class Study:
    name: str
    description: str
    base: dict  # TrainConfig keys shared by every arm (method, dataset, eps, ...)
    space: dict  # the one search space: policy grids, PBT mutations, random search
    arms: tuple[Arm, ...]
    sizes: dict[str, StudySize]
    contrasts: tuple[tuple[str, str, str], ...]
    metric: str = "val/robust_acc"
    pbt: dict = field(default_factory=dict)  # PopulationBasedTraining options
    # What PBT counts time in (its perturbation_interval and burn_in_period, in the sizes' ``pbt``):
    # training grad evals, so trials whose rounds cost different amounts (PGD-1 vs PGD-10) are
    # compared at equal cost, not at equal round counts.
    pbt_time_attr: str = "cost/grad_evals"
    # What every run is (metaadv/tune/kinds.py): "train" (TrainConfig, judged by metaadv evaluate)
    # or "meta" (MetaConfig, judged by metaadv meta-evaluate).
    kind: str = "train"
    # The aim, declared before any run (study.json ``aim``): ``min_effect``, the difference in robust
    # accuracy (a fraction: 0.03 = 3 points) that counts; ``statement``, the aim in words (with the
    # cost view each contrast reads); ``planned_seeds``, the seeds the study is sized for (the report
    # gives the minimum detectable effect there); ``contrasts``, the declared contrasts (by ``a - b``)
    # the aim is judged on (all of them when absent). A contrast meets the aim when it is decided
    # (Holm-adjusted) and its mean is at least ``min_effect``.
    aim: dict = field(default_factory=dict)
    # Set by :meth:`pilot`: the subset this run is of the declared study (study.json ``pilot``).
    pilot_of: dict = field(default_factory=dict)

    @property
    def config_class(self):
        return CONFIG_CLASSES[self.kind]

    def __post_init__(self):
        check_declaration(self)

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def common_config(self, size: str) -> dict:
        """Keys every run of this size shares (without ``val_eps``)."""
        s = self.sizes[size]
        values = {**self.base, **{k: v for k, v in s.config.items() if k != "val_eps"}}
        values["budget_grad_evals"] = s.budget_grad_evals
        return values

    def val_eps(self, size: str) -> float:
        return float(self.sizes[size].config.get("val_eps", self.base.get("eps", TrainConfig.eps)))

    def fixed_rounds(self, size: str) -> int:
        return int(self.common_config(size).get("rounds", TrainConfig.rounds))

    def arm_config(self, arm: Arm | str, size: str) -> dict:
        """The trial config of ``arm`` (TrainConfig keys, no seed): the base, the size, the arm.

        Every arm gets a round cap the budget always reaches first, except a fixed schedule counted
        in rounds (``eps_ramp_rounds`` >= 0: its ramp and lr steps need the rounds its budget buys).
        A fixed schedule counted in budget fractions is ended by the budget like the rest: its ramp
        may start with a clean step (eps 0, one pass), which would leave it short at its last round.
        The policy arms get their grids from the one space.
        """
        arm = self.arm(arm) if isinstance(arm, str) else arm
        values = self.common_config(size)
        own = {**values, **arm.config, **self.sizes[size].arm_config.get(arm.name, {})}
        by_rounds = int(own.get("eps_ramp_rounds", -1)) >= 0
        if arm.config.get("controller", "schedule") != "schedule" or arm.kind != "single" or not by_rounds:
            values["rounds"] = ROUND_CAP * self.fixed_rounds(size)
        values.update(arm.config)
        values.update(self.sizes[size].arm_config.get(arm.name, {}))
        if arm.budget_of:
            budget = self.declared_cost_b(arm.budget_of, size)
            values["budget_grad_evals"] = budget
            # The budget stops the run; its rounds only need to outlast it (a fixed schedule's ramp and
            # lr milestones are fractions of the budget, so the schedule stretches with it).
            values["rounds"] = math.ceil(int(values.get("rounds", TrainConfig.rounds)) * budget / self.sizes[size].budget_grad_evals)
        if values.get("controller") == "policy":
            values.update(self.sizes[size].policy)
            if self.space:  # without a space the policy keeps its config's own grids
                values.update(policy_grid_config(self.space, float(values.get("eps", TrainConfig.eps)),
                                                 float(values.get("lr", TrainConfig.lr))))
        return values

    def search_space(self, arm: Arm | str, size: "str | StudySize | None" = None) -> dict:
        """What a tuned arm searches: its own space, else the study's; at ``size``, the size's
        sub-space of it where it declares one (``StudySize.arm_space``)."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        s = self.sizes[size] if isinstance(size, str) else size
        return dict((s.arm_space.get(arm.name) if s is not None else None) or arm.space or self.space)

    def search_trials(self, arm: Arm | str, size: "str | StudySize") -> int:
        """A tuned arm's search trials: ``search_samples`` draws, or every grid combination on each of
        ``search_samples`` pilot seeds."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        n = (self.sizes[size] if isinstance(size, str) else size).search_samples
        return n * math.prod(len(d.values) for d in self.search_space(arm, size).values()) if arm.search == "grid" else n

    def declared_cost_b(self, arm: Arm | str, size: str) -> int:
        """A searched arm's cost (b) per final model, declared before the run: its population's
        training (every member runs to the per-model budget: an exploit restores a donor's weights,
        the member's own work goes on) plus the validations its decisions read (per member, one at
        each perturbation point after burn-in and one for the final pick; each costs the arm's
        validation attack on its validation examples, at most: APGD-CE attacks only those it
        classifies correctly). ``analysis.cost`` measures the same from the rows."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        s, c = self.sizes[size], self.arm_config(arm, size)
        pbt = {**self.pbt, **s.pbt}
        interval, burn_in = float(pbt.get("perturbation_interval") or 0), float(pbt.get("burn_in_period") or 0)
        reads = 1 + (int(s.budget_grad_evals // interval) if interval and burn_in <= s.budget_grad_evals else 0)
        # APGD-CE: (iterations + 1) passes per example it attacks (the correctly classified ones: at most all).
        steps = c.get("val_apgd_iters", 20) + 1 if c.get("val_attack", "pgd") != "pgd" else c.get("val_pgd_steps", TrainConfig.val_pgd_steps)
        read_cost = int(steps) * int(c.get("val_size", TrainConfig.val_size))
        return int(s.population * (s.budget_grad_evals + reads * read_cost))

    def evaluation(self, arm: Arm | str, size: str) -> dict:
        """The judge's options for ``arm``'s models: the size's, the arm's own, then the size's for the
        arm (``StudySize.arm_evaluation``)."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        return {**self.sizes[size].evaluation, **arm.evaluation, **self.sizes[size].arm_evaluation.get(arm.name, {})}

    def check(self, size: str) -> None:
        """Build every arm's config at ``size`` (and one at each corner of the spaces) so typos fail early."""
        check_size(self, size)

    def experiments(self, arm: Arm | str, size: str) -> list[str]:
        """The Tune experiments of ``arm`` (folders ``arms/ARM/EXPERIMENT``), in the order they run."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        if arm.kind == "tuned":
            return ["search", "rerun"]
        if arm.kind == "searched":
            return [f"pbt-{p}" for p in range(self.sizes[size].populations)]
        return [arm.name]

    def planned(self, arm: Arm | str, size: str) -> tuple[int, int]:
        """``(trials, final models)`` ``arm`` runs at ``size``. A replay of a searched arm replays one
        lineage per population (the population is the unit; see ``metaadv.study.derive.replay_seeds``)."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        s = self.sizes[size]
        if arm.kind == "tuned":
            return self.search_trials(arm, size) + s.seeds, s.seeds
        if arm.kind == "searched":
            return s.populations * s.population, s.populations
        if (arm.kind == "replay" and self.arm(arm.source).kind == "searched") or arm.unit == "population":
            return s.populations, s.populations
        n = len(arm_seeds(s, arm.name))
        return n, n

    def cost_b_columns(self, arm: Arm | str, size: str) -> list[str]:
        """The cumulative ``cost/*`` columns that add up to what ``arm`` spent (cost b): training;
        the policy's reward check (a policy's decisions read it; a frozen policy pays it too) or LAS's
        look-ahead (a frozen strategy spends none); and
        the per-round validation where it informs a decision (``decision_validation``; for a tuned
        arm, its search's validation: the rerun's is logging, and the analysis leaves it out)."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        columns = ["cost/grad_evals"]
        if self.arm_config(arm, size).get("controller") in ("policy", "las"):  # reward checks, LAS's look-ahead
            columns.append("cost/reward_grad_evals")
        if arm.decision_validation:
            columns.append("cost/eval_grad_evals")
        return columns

    def declaration(self, size: str) -> dict:
        """What study.json says about the declaration (arms, contrasts, space, size)."""
        s = self.sizes[size]
        return {"study": self.name, "size": size, "description": self.description, "kind": self.kind,
                "budget_grad_evals": s.budget_grad_evals, "eps": float(self.base.get("eps", TrainConfig.eps)),
                "val_eps": self.val_eps(size), "precision": self.base.get("precision", "fp32"),
                "space": {k: list(d.values) for k, d in self.space.items()},
                "size_settings": {"seeds": s.seeds, "search_samples": s.search_samples, "populations": s.populations,
                                  "population": s.population, "config": dict(s.config), "corners": s.corners,
                                  "policy": dict(s.policy), "arm_config": dict(s.arm_config),
                                  **({"arm_seeds": dict(s.arm_seeds)} if s.arm_seeds else {}),
                                  **({"arm_evaluation": dict(s.arm_evaluation)} if s.arm_evaluation else {})},
                "evaluation": dict(s.evaluation), "judge": dict(s.judge),
                "pbt": {"time_attr": self.pbt_time_attr, **self.pbt, **s.pbt},
                "arms": {a.name: {"description": a.description, "kind": a.kind, "decision_validation": a.decision_validation,
                                  **({"space": {k: list(d.values) for k, d in self.search_space(a, size).items()}, "search": a.search}
                                     if a.kind == "tuned" and (a.space or a.search != "random") else {}),
                                  "planned_trials": self.planned(a, size)[0], "planned_models": self.planned(a, size)[1],
                                  "experiments": self.experiments(a, size), "cost_b": self.cost_b_columns(a, size),
                                  **({"source": a.source} if a.source else {}),
                                  **({"meta_training": f"meta/{a.name}", "episodes": s.episodes}
                                     if a.kind == "deployed" else {}),
                                  **({"unit": a.unit} if a.unit != "seed" else {}),
                                  **({"config_of": a.config_of} if a.config_of else {}),
                                  **({"budget_grad_evals": self.declared_cost_b(a.budget_of, size), "budget_of": a.budget_of}
                                     if a.budget_of else {}),
                                  **({"evaluation": dict(a.evaluation)} if a.evaluation else {})}
                         for a in self.arms},
                "contrasts": [list(c) for c in self.contrasts], "aim": dict(self.aim),
                **({"pilot": dict(self.pilot_of)} if self.pilot_of else {})}

    def pilot(self, size: str, *, seeds: int | None = None, arms=None) -> "Study":
        """This study cut to a pilot at ``size``: ``seeds`` paired seeds, the ``arms`` named (with
        the arms they derive from), the declared contrasts and aim among them. Its study.json says
        so (``pilot``), and the analysis reads its spread for a power calculation, not a verdict."""
        if seeds is None and not arms:
            return self
        names = [a.name for a in self.arms]
        wanted = list(arms or names)
        unknown = [a for a in wanted if a not in names]
        if unknown:
            raise UserError(f"study {self.name} has no arm(s) {', '.join(unknown)}; its arms: {', '.join(names)}")
        needed, todo = set(), list(wanted)
        while todo:  # an arm needs the arms it derives from
            arm = self.arm(todo.pop())
            if arm.name not in needed:
                needed.add(arm.name)
                todo += [n for n in (arm.source, arm.budget_of, arm.config_of) if n]
        kept = tuple(a for a in self.arms if a.name in needed)
        contrasts = tuple(c for c in self.contrasts if c[0] in needed and c[1] in needed)
        labels = {f"{a} - {b}" for a, b, _ in contrasts}
        aim = dict(self.aim)
        if aim.get("contrasts"):
            aim["contrasts"] = [c for c in aim["contrasts"] if c in labels]
            if not aim["contrasts"]:
                aim = {}
        sizes = dict(self.sizes)
        if seeds is not None:
            if seeds < 2:
                raise UserError(f"--seeds must be >= 2 (a spread needs two pairs), got {seeds}")
            sizes[size] = dataclasses.replace(sizes[size], seeds=seeds, arm_seeds={})  # every arm on them
        pilot = {"arms": [a.name for a in kept], "seeds": sizes[size].seeds,
                 "declared_arms": names, "declared_seeds": self.sizes[size].seeds}
        return self.replace(arms=kept, contrasts=contrasts, aim=aim, sizes=sizes, pilot_of=pilot)

    def replace(self, **changes) -> "Study":
        """A copy with ``changes``; with other arms, each size's per-arm entries (``arm_config``,
        ``arm_space``, ``arm_seeds``, ``arm_evaluation``) kept for the arms still declared (a pilot, a test's few arms)."""
        if "arms" in changes:
            names = {a.name for a in changes["arms"]}
            changes["sizes"] = {k: dataclasses.replace(v, **{entry: {a: c for a, c in getattr(v, entry).items() if a in names}
                                                             for entry in ("arm_config", "arm_space", "arm_seeds", "arm_evaluation")})
                                for k, v in changes.get("sizes", self.sizes).items()}
        return dataclasses.replace(self, **changes)


def policy_grid_config(space: dict, eps: float, lr: float) -> dict:
    """The policy controller's grids from the one space: eps as fractions of the target ``eps``,
    lr as multiples of ``lr``, the rest as values; a dimension the space lacks gets an empty grid
    (the config's value holds)."""
    out = {key: [] for key, _ in POLICY_KEYS.values()}
    for dim, grid in space.items():
        key, relative = POLICY_KEYS[dim]
        scale = {"eps": eps, "lr": lr}.get(relative, 1.0)
        out[key] = [round(float(v) / scale, 10) for v in grid.values]
    return out
