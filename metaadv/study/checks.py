"""The checks a declared study passes before Ray starts (:class:`.spec.Study` runs them when it is
built, and per size): arm kinds and the links between arms, contrasts and aim, the search space,
each size's settings and every config they build."""

from __future__ import annotations

from ..errors import UserError
from ..tune.experiment import CONFIG_CLASSES, SIZES
from ..tune.space import Grid
from .arm import ARM_KINDS

__all__ = ["POLICY_KEYS", "check_declaration", "check_size"]

# The policy controller's grid keys for each searchable dimension: (config key, relative to).
POLICY_KEYS = {"eps": ("policy_eps", "eps"), "step_ratio": ("policy_step_ratio", None),
               "steps": ("policy_steps", None), "lr": ("policy_lr_mult", "lr"),
               "weight_decay": ("policy_weight_decay", None), "adv_mix": ("policy_adv_mix", None)}


def check_declaration(study) -> None:
    """A study's declaration, before Ray starts: arm kinds and their links, contrasts, aim, space,
    each size's per-arm entries, then every size (:func:`check_size`)."""
    names = [a.name for a in study.arms]
    if study.kind not in CONFIG_CLASSES:
        raise UserError(f"study {study.name}: unknown run kind {study.kind!r}; choose one of {', '.join(CONFIG_CLASSES)}")
    if study.kind != "train" and any(a.kind != "single" for a in study.arms):
        raise UserError(f"study {study.name}: a {study.kind} study's arms are single runs (search, replay and "
                        "transfer arms drive training controllers)")
    if len(set(names)) != len(names):
        raise UserError(f"study {study.name}: arm names repeat: {names}")
    for arm in study.arms:
        if arm.kind not in ARM_KINDS:
            raise UserError(f"study {study.name}: arm {arm.name} has unknown kind {arm.kind!r}; choose one of {ARM_KINDS}")
        if (arm.kind in ("replay", "transfer")) != bool(arm.source):
            raise UserError(f"study {study.name}: arm {arm.name}: replay and transfer arms (only) name a source arm")
        if arm.search not in ("random", "grid") or ((arm.space or arm.search != "random") and arm.kind != "tuned"):
            raise UserError(f"study {study.name}: arm {arm.name}: an own space and search ('random' or 'grid') "
                            "belong to a tuned arm")
        if arm.search == "grid" and any(not isinstance(d, Grid) for d in study.search_space(arm).values()):
            raise UserError(f"study {study.name}: arm {arm.name}: a grid search needs Grid dimensions")
        if arm.unit not in ("seed", "population") or (arm.unit == "population" and arm.kind != "single"):
            raise UserError(f"study {study.name}: arm {arm.name}: unit is 'seed' or, for a single-run arm, 'population'")
        if arm.budget_of and (arm.kind != "single" or arm.budget_of not in names
                              or study.arm(arm.budget_of).kind != "searched"):
            raise UserError(f"study {study.name}: arm {arm.name}: budget_of names a searched arm of the study "
                            f"(got {arm.budget_of!r})")
        if arm.config_of and (arm.kind != "single" or arm.unit != "seed" or arm.budget_of
                              or arm.config_of not in names[: names.index(arm.name)]
                              or study.arm(arm.config_of).kind != "tuned"):
            raise UserError(f"study {study.name}: arm {arm.name}: config_of names a tuned arm declared before it, "
                            f"from a single-run arm on the seeds (got {arm.config_of!r})")
        if arm.source and arm.source not in names[: names.index(arm.name)]:
            raise UserError(f"study {study.name}: arm {arm.name}'s source {arm.source!r} must be declared before it")
    for a, b, _ in study.contrasts:
        for arm in (a, b):
            if arm not in names:
                raise UserError(f"study {study.name}: contrast {a} - {b} names unknown arm {arm!r}")
    _check_aim(study)
    for key, dim in study.space.items():
        if key not in POLICY_KEYS:
            raise UserError(f"study {study.name}: the policy cannot choose {key!r}; the space may hold "
                            f"{', '.join(POLICY_KEYS)}")
        if not isinstance(dim, Grid):
            raise UserError(f"study {study.name}: {key!r} must be a Grid (one space serves the policy's grids)")
    for size_name, size in study.sizes.items():
        for entry in ("arm_config", "arm_evaluation"):
            stray = sorted(set(getattr(size, entry)) - set(names))
            if stray:
                raise UserError(f"study {study.name} ({size_name}): {entry} names unknown arm(s) {stray}")
        _check_arm_space(study, size_name, size)
        _check_arm_seeds(study, size_name, size)
    unknown = sorted(set(study.sizes) - set(SIZES))
    if unknown:
        raise UserError(f"study {study.name}: unknown size(s) {unknown}; choose among {', '.join(SIZES)}")
    for size in study.sizes:
        check_size(study, size)

def _check_aim(study) -> None:
    if not study.aim:
        return
    unknown = sorted(set(study.aim) - {"min_effect", "statement", "planned_seeds", "contrasts"})
    if unknown:
        raise UserError(f"study {study.name}: unknown aim key(s) {unknown}")
    effect = study.aim.get("min_effect")
    if not isinstance(effect, (int, float)) or not 0 < effect < 1:
        raise UserError(f"study {study.name}: aim min_effect must be a fraction in (0, 1) (0.03 = 3 points), got {effect!r}")
    declared = {f"{a} - {b}" for a, b, _ in study.contrasts}
    stray = sorted(set(study.aim.get("contrasts", ())) - declared)
    if stray:
        raise UserError(f"study {study.name}: the aim names undeclared contrast(s) {stray}; declared: {sorted(declared)}")

def _check_arm_seeds(study, size_name: str, size) -> None:
    for name, n in size.arm_seeds.items():
        arm = study.arm(name) if name in [a.name for a in study.arms] else None
        if arm is None or arm.kind != "single" or arm.unit != "seed" or arm.config_of:
            raise UserError(f"study {study.name} ({size_name}): arm_seeds names {name!r}, not a single-run arm on "
                            "seeds (its own config)")
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise UserError(f"study {study.name} ({size_name}): arm_seeds {name} must be a count >= 2, got {n!r}")


def _check_arm_space(study, size_name: str, size) -> None:
    for name, grids in size.arm_space.items():
        arm = study.arm(name) if name in [a.name for a in study.arms] else None
        if arm is None or arm.kind != "tuned" or arm.search != "grid":
            raise UserError(f"study {study.name} ({size_name}): arm_space names {name!r}, not a grid-searched arm")
        own = study.search_space(arm)
        for key, dim in grids.items():
            if key not in own or not isinstance(dim, Grid) or any(v not in own[key].values for v in dim.values):
                raise UserError(f"study {study.name} ({size_name}): arm_space {name}.{key} must be a sub-grid of "
                                f"the arm's {key} ({list(own[key].values) if key in own else 'not searched'})")

def check_size(study, size: str) -> None:
    """Build every arm's TrainConfig (and one at each corner of the space) so typos fail early."""
    s = study.sizes[size]
    for n in ("seeds", "search_samples", "populations", "population"):
        if getattr(s, n) < 1:
            raise UserError(f"study {study.name} ({size}): {n} must be >= 1")
    if s.budget_grad_evals <= 0:
        raise UserError(f"study {study.name} ({size}): budget_grad_evals must be > 0")
    if any(a.kind == "deployed" for a in study.arms):
        from ..training.policy_train import MetaSettings

        MetaSettings(episodes=s.episodes, parallel=s.episode_parallel)  # refuses fewer than 2 episodes
        for a in study.arms:
            if a.kind == "deployed" and a.config.get("controller") != "policy":
                raise UserError(f"study {study.name}: arm {a.name}: a deployed arm drives the policy controller")
    try:
        for arm in study.arms:
            values = {k: v for k, v in study.arm_config(arm, size).items() if k not in ("schedule", "controller")
                      or v in ("schedule", "policy")}
            study.config_class.from_dict(values)
        if study.kind == "meta":
            _check_meta(study, size)
        for arm in study.arms:
            if arm.space:
                for corner in (0, -1):
                    values = {**study.arm_config(arm, size), **{k: d.values[corner] for k, d in arm.space.items()}}
                    study.config_class.from_dict({k: v for k, v in values.items() if k != "val_eps"})
        for corner in (0, -1):
            if study.space:
                study.config_class.from_dict({**study.common_config(size),
                                             **{k: d.values[corner] for k, d in study.space.items()}})
    except UserError as exc:
        raise UserError(f"study {study.name} ({size}): {exc}") from None

def _check_meta(study, size: str) -> None:
    """A meta run validates at its own eps, so every arm trains at the threat eps; the judge's
    options (:mod:`.meta_judge`) are checked here, before Ray starts."""
    from .meta_judge import check_options

    threat = study.val_eps(size)
    for arm in study.arms:
        arm_eps = float(study.arm_config(arm, size).get("eps", threat))
        if arm_eps != threat:
            raise UserError(f"arm {arm.name}: a meta run validates at its training eps; eps {arm_eps:g} must be "
                            f"the threat eps {threat:g}")
        try:
            check_options(study.evaluation(arm, size), threat)
        except UserError as exc:
            raise UserError(f"arm {arm.name}: {exc}") from None
    if study.sizes[size].judge:
        check_options(study.sizes[size].judge, threat)
