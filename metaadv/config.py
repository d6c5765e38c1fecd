"""The typed, checked configuration of a training run.

Built once at the edge (CLI flags, a YAML/JSON file, a Ray Tune trial config) by
:meth:`TrainConfig.from_dict`, which rejects unknown keys and fills method-specific defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ._config_values import check_finite, coerce, config_keys
from ._eps_bounds import eps_bound, eps_error  # noqa: F401  (eps_bound: public here too)
from .attacks import NORMS
from .data import DATASETS
from .errors import UserError
from .training.hparams import HParams
from .training.methods import METHOD_DEFAULTS, METHODS
from .training.precision import PRECISIONS

__all__ = ["METHODS", "TrainConfig", "read_config_file"]

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
POLICY_RETURNS = ("immediate", "discounted")
VAL_ATTACKS = ("pgd", "apgd-ce")
PGD_STARTS = ("random", "zero")  # pgd-at: a uniform point of the eps-ball (Madry et al. 2018), or x itself
BUDGET_COUNTS = ("train", "train+decisions")  # what budget_grad_evals counts: training passes, or those plus decision passes



@dataclass(frozen=True)
class TrainConfig:
    method: str = "pgd-at"
    dataset: str = "mnist5k"
    arch: str = ""  # "" = the data set's default architecture
    rounds: int = 15  # rounds to train; a round is an epoch unless steps_per_round > 0
    steps_per_round: int = 0
    batch_size: int = 100
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    norm: str = "linf"  # threat model for training and validation
    # Starting values (or schedule targets) of the per-round hyperparameters, see HParams.
    eps: float = 0.3
    step_ratio: float = 0.25
    steps: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    trades_beta: float = 6.0
    pgd_start: str = "random"  # pgd-at's attack start: random (Madry et al., a uniform point of the ball) or zero (x itself)
    adv_mix: float = 1.0
    gen_lr: float = 1e-3
    gen_steps: int = 1
    gen_fraction: float = 1.0
    gen_unroll: int = 3
    gen_step_ratio: float = 0.5
    gen_final_steps: int = 1
    gen_final_ratio: float = 0.5
    # The fixed schedule (metaadv/training/controllers.py), counted in fractions of the run: of
    # budget_grad_evals when set (the cost spent, step by step), else of the rounds. eps ramps
    # linearly from 0 to `eps` over the first eps_ramp_fraction and holds; lr follows a shape.
    controller: str = "schedule"
    schedule: str = ""  # --controller replay: CSV of round + hp/* columns (metaadv/training/replay.py)
    eps_ramp_fraction: float = 0.2  # 0.2 = the old default, 3 of 15 epochs; 0 = no ramp
    # -1: the ramp above. >= 0: the old schedule counted in rounds (old configs and checkpoints):
    # eps ramps over this many rounds (0 = none) and lr steps at round boundaries, budget or not.
    eps_ramp_rounds: int = -1
    eps_ramp_by: str = "step"  # with eps_ramp_rounds: "step" rises smoothly within each ramp round; "round": one value per round
    # Default: lr x0.1 for the last fifth of the run (3 of 15 epochs); with the 3-epoch eps ramp this
    # is what lets the default pgd-at beat the reference loop (docs/training.md, "Results").
    lr_schedule: str = "step"
    lr_milestones: tuple[float, ...] = (0.8,)  # fractions of the run (of the budget when set), for lr_schedule=step
    lr_gamma: float = 0.1
    # Method specifics.
    vat_xi: float = 1e-2  # VAT finite-difference step, a fraction of each input's L2 norm (metaadv/attacks/vat.py)
    vat_weight: float = 1.0
    unlabeled_fraction: float = 0.0  # VAT: hide this fraction of training labels (semi-supervised)
    labels: int = 0  # VAT: keep exactly this many training labels, class-balanced, hide the rest (0 = all)
    # The catastrophic-overfitting guard (on by default for fast-at and the generator methods, see METHOD_DEFAULTS):
    # revert to the round with the best val robust accuracy and stop; the row gains train/grad_align.
    co_guard: bool = False
    co_threshold: float = 0.2  # a drop of val robust accuracy this large = catastrophic overfitting
    co_gap: float = 0.5  # train adv accuracy this far above val robust accuracy (at the target eps) = the same
    # False: the guard reverts to the best round and training goes on to the budget (or the rounds) instead of
    # stopping, so a guarded run spends the same cost as the others (issue 23's continued rows).
    co_guard_stop: bool = True
    # Perturbation generators (meta-generator, advgan, meta-adv); see metaadv/training/generator_methods.py.
    gen_arch: str = "recursive"  # recursive (L2L-DA), onestep (an ATN; advgan's), or noise (the uniform-noise control)
    gen_width: int = 16  # channels of the generator's hidden convolutions (8 for meta-generator and meta-adv, see METHOD_DEFAULTS)
    gen_grad_input: bool = True  # onestep: the generator also reads sign(grad_x loss), one classifier pass per example
    gen_noise: bool = False  # recursive: the generator also reads a Gaussian noise map (L2L-DA's z)
    gen_diversity: float = 0.0  # recursive with noise: weight of L2L-DA's diversity term (two noise draws per image)
    # recursive: loss weight of unroll step t is discount ** (K - t); 1 = L2L-DA's sum, 0 = the last step only (the
    # default: K - 1 classifier passes fewer per example, and as strong an attacker in tests/test_recursive_generator.py)
    gen_step_discount: float = 0.0
    gen_start: str = "zero"  # recursive: delta_0, zero (L2L-DA) or random (a uniform point of the ball)
    # The control that isolates the learning: the generator keeps its initial weights (never updated, its loss
    # terms neither computed nor counted), every classifier pass the same (issue 23's frozen row).
    gen_frozen: bool = False
    # recursive with a diversity term: 2 = the classifier trains on both noise draws' examples (L2L-DA's clean batch plus
    # two adversarial copies, with adv_mix 2/3), 1 = on the first draw's only.
    gen_train_copies: int = 1
    advgan_alpha: float = 1.0  # AdvGAN weight of the GAN loss
    advgan_beta: float = 1.0  # AdvGAN weight of the perturbation-norm hinge
    advgan_hinge: float = 0.5  # hinge bound c, as a fraction of the largest L2 norm the eps-ball allows
    # The REINFORCE policy controller (--controller policy); see metaadv/training/policy.py.
    # Grids it picks from each round; an empty grid leaves that hyperparameter to the schedule.
    policy_eps: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # fractions of eps
    policy_step_ratio: tuple[float, ...] = (0.1, 0.25, 0.5)
    policy_steps: tuple[float, ...] = (1, 3, 5, 10)
    policy_lr_mult: tuple[float, ...] = (0.3, 1.0, 3.0)  # times the schedule's lr
    policy_weight_decay: tuple[float, ...] = (0.0, 5e-4)
    policy_adv_mix: tuple[float, ...] = (0.5, 1.0)
    policy_cost_weight: float = 0.01  # lambda: reward = change in val robust acc - lambda * cost (1 = a PGD-10 round)
    policy_lr: float = 0.1  # beta, the SGD step of the policy
    policy_entropy: float = 0.01  # entropy bonus c
    policy_baseline_rate: float = 0.1  # moving-average rate of the reward baseline
    policy_hidden: int = 32
    policy_file: str = ""  # start from a policy saved with --save-policy
    policy_frozen: bool = False  # act with the policy but do not update it
    # Its reward check: a fresh batch of the validation split each round, PGD from a random start.
    policy_reward_size: int = 100  # examples in each round's reward batch
    policy_reward_steps: int = 10  # PGD steps of the reward check
    policy_gap_weight: float = 0.05  # mu: reward -= mu * max(0, FGSM acc - PGD acc) on that batch
    policy_return: str = "immediate"  # credit a choice with its round's reward, or a discounted n-step return
    policy_gamma: float = 0.9  # discount of the n-step return (policy_return=discounted)
    policy_horizon: int = 10  # n, rounds of reward in the n-step return (policy_return=discounted)
    # The per-example attack strategy (--controller las, pgd-at and trades); see metaadv/training/las.py, docs/las.md.
    # Grids its strategy network samples from, per example: LAS-AT's 3-14/255 around 8/255, 3-13 steps, 1-4/255 steps.
    las_eps: tuple[float, ...] = (0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75)  # fractions of eps
    las_steps: tuple[float, ...] = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
    las_step_ratio: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5)  # step size / the example's own eps
    las_lr: float = 1e-3  # Adam step of the strategy network
    las_hidden: int = 16  # channels of its two convolutions
    las_interval: int = 1  # a REINFORCE update every N batches
    las_frozen: bool = False  # act, never update (the uniform random-strategy control; no look-ahead is paid for)
    las_lookahead_size: int = 32  # examples of the batch the one-step look-ahead is measured on
    las_lookahead_steps: int = 5  # PGD steps of the look-ahead's robust check (one random start, target eps)
    las_baseline_rate: float = 0.1  # moving-average rate of the reward baselines
    # Per-example reward = w_loss * min(CE on its adversarial example, 10) + w_robust * look-ahead robust correct
    # + w_clean * look-ahead clean correct: the authors' weights (1, R2_param 4, R3_param 2), see docs/las.md.
    las_loss_weight: float = 1.0
    las_robust_weight: float = 4.0
    las_clean_weight: float = 2.0
    budget_grad_evals: int = 0  # stop once cost/grad_evals reaches this (0 = no budget; rounds still caps)
    # What the budget counts: "train" (cost/grad_evals) or "train+decisions" (plus cost/reward_grad_evals, a
    # controller's own measurements: the policy's reward checks, LAS's look-aheads), so deciding is paid inside it.
    budget_counts: str = "train"
    # The threat model's tail: the last fraction of the budget (of the rounds, without one) trains at
    # the target eps with the configured attack and the lr in force when it began, whatever the
    # controller would choose (0 = off). A schedule that ends below the threat model is no model of it.
    tail_fraction: float = 0.0
    # The tail's attack where it differs from the configured one (0 = the configured): a searched run's
    # config holds the searched steps, and a study's tail trains with its fixed arm's attack.
    tail_steps: int = 0
    tail_step_ratio: float = 0.0
    # Validation every round: clean and robust accuracy on a fixed subset of the validation split,
    # under PGD-val_pgd_steps from one fixed start ("pgd"), or the reference APGD-CE ("apgd-ce":
    # the strong check for validation a search decides on; pyautoattack, the eval extra).
    val_size: int = 500
    val_pgd_steps: int = 10
    val_attack: str = "pgd"
    val_apgd_iters: int = 20
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # attack and training steps: fp32, bf16 (autocast), or auto (bf16 where native)
    data_dir: str = ""
    download: bool = False

    def __post_init__(self):
        _choice("method", self.method, tuple(METHODS))
        _choice("dataset", self.dataset, tuple(DATASETS))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("norm", self.norm, NORMS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("eps_ramp_by", self.eps_ramp_by, ("step", "round"))
        _choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        _choice("precision", self.precision, PRECISIONS)
        _choice("val_attack", self.val_attack, VAL_ATTACKS)
        _choice("pgd_start", self.pgd_start, PGD_STARTS)
        _choice("budget_counts", self.budget_counts, BUDGET_COUNTS)
        if self.pgd_start != "random" and self.method != "pgd-at":
            raise UserError(f"--pgd-start picks pgd-at's attack start; --method {self.method} has its own")
        for name in ("rounds", "batch_size", "val_pgd_steps", "val_apgd_iters"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_round", "val_size", "budget_grad_evals", "tail_steps", "tail_step_ratio"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eps_ramp_rounds < -1:
            raise UserError(f"eps_ramp_rounds must be >= 0 (the old ramp counted in rounds), or -1 to ramp over "
                            f"eps_ramp_fraction of the run; got {self.eps_ramp_rounds}")
        if not 0.0 <= self.eps_ramp_fraction <= 1.0:
            raise UserError(f"eps_ramp_fraction must be in [0, 1] (the share of the budget spent ramping eps), "
                            f"got {self.eps_ramp_fraction}")
        if self.eps_ramp_by == "round" and self.eps_ramp_rounds < 0:
            raise UserError("eps_ramp_by round holds one eps a round of a ramp counted in rounds; give eps_ramp_rounds "
                            "too (the ramp over eps_ramp_fraction rises step by step)")
        if not 0.0 <= self.tail_fraction < 1.0:
            raise UserError(f"tail_fraction must be in [0, 1) (the share of the budget trained at the threat model), "
                            f"got {self.tail_fraction}")
        if not 0.0 <= self.unlabeled_fraction < 1.0:
            raise UserError(f"unlabeled_fraction must be in [0, 1), got {self.unlabeled_fraction}")
        if self.unlabeled_fraction and self.method != "vat":
            raise UserError("unlabeled_fraction needs --method vat (only VAT learns from unlabelled images)")
        if self.labels < 0:
            raise UserError(f"labels must be >= 0 (0 = every training label), got {self.labels}")
        if self.labels and (self.method != "vat" or self.unlabeled_fraction):
            raise UserError("labels needs --method vat and no --unlabeled-fraction (both choose the labelled examples)")
        for f in dataclasses.fields(self):
            if isinstance(f.default, tuple):  # lr_milestones and the policy grids: tuples of floats
                object.__setattr__(self, f.name, tuple(float(m) for m in getattr(self, f.name)))
        check_finite(self)
        _check_schedule_and_method(self)
        self.hparams()  # validates eps, steps, lr, ... with their own messages
        _check_eps(self)
        _check_generator_and_policy(self)
        _check_las(self)
        _check_schedule(self)

    def hparams(self) -> HParams:
        """The per-round hyperparameters at their configured (target) values."""
        return HParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(HParams) if hasattr(self, f.name)})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):  # lr_milestones and the policy grids: lists in JSON and in Ray configs
                d[k] = list(v)
        return d

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Defaults, then the method's defaults, then ``values``; unknown keys are an error."""
        values = config_keys(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        method = values.get("method", cls.method)
        _choice("method", method, tuple(METHODS))
        merged = {**METHOD_DEFAULTS[method], **values}
        try:
            return cls(**{k: _coerce(cls, k, v) for k, v in merged.items()})
        except (TypeError, ValueError) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"bad config value: {exc}") from None


def _check_eps(c: TrainConfig) -> None:
    """eps (>= 0, checked by HParams) within the norm's bound, also scaled by the policy's eps grid."""
    if error := eps_error(c, c.eps):
        raise UserError(error)
    for v in c.policy_eps:  # fractions of eps the policy controller may pick
        if error := eps_error(c, v * c.eps):
            raise UserError(f"bad value {v:g} in the --policy-eps grid: {error}")


def _check_generator_and_policy(c: TrainConfig) -> None:
    from .training.generator_methods import GEN_ARCHS, GEN_STARTS
    from .training.policy import policy_grids

    _choice("gen_arch", c.gen_arch, GEN_ARCHS)
    _choice("gen_start", c.gen_start, GEN_STARTS)
    if c.method == "advgan" and c.gen_arch != "onestep":
        raise UserError(f"advgan's generator reads x alone (Xiao et al. 2018): --gen-arch {c.gen_arch} needs "
                        "--method meta-generator or meta-adv")
    if c.gen_arch == "recursive" and not c.gen_grad_input:
        raise UserError("--gen-arch recursive reads a fresh input gradient every step; --no-gen-grad-input is for --gen-arch onestep")
    if c.gen_start != "zero" and c.gen_arch != "recursive":
        raise UserError(f"--gen-start picks the recursive generator's first point; --gen-arch {c.gen_arch} has none")
    if c.gen_frozen and (c.method not in ("meta-generator", "meta-adv", "advgan") or c.gen_arch == "noise"):
        raise UserError("--gen-frozen keeps a generator at its initial weights; it needs --method meta-generator, "
                        "meta-adv or advgan and a --gen-arch with a generator (not noise)")
    if c.gen_frozen and c.gen_diversity > 0:
        raise UserError("--gen-diversity is a term of the generator's training; a --gen-frozen generator does not train")
    if c.gen_train_copies not in (1, 2):
        raise UserError(f"gen_train_copies is 1 or 2 (both noise draws of the diversity term), got {c.gen_train_copies}")
    if c.gen_train_copies == 2 and (c.gen_diversity <= 0 or c.gen_fraction < 1):
        raise UserError("--gen-train-copies 2 trains on the diversity term's two noise draws: it needs --gen-diversity > 0 "
                        "and --gen-fraction 1")
    if c.gen_noise and c.gen_arch != "recursive":
        raise UserError(f"--gen-noise feeds the recursive generator a noise map; --gen-arch {c.gen_arch} reads none")
    if c.gen_diversity < 0:
        raise UserError(f"gen_diversity must be >= 0, got {c.gen_diversity}")
    if c.gen_diversity > 0 and not c.gen_noise:
        raise UserError("--gen-diversity compares two noise draws of the same image; it needs --gen-noise")
    if not 0.0 <= c.gen_step_discount <= 1.0:
        raise UserError(f"gen_step_discount must be in [0, 1] (1 = the loss summed over the unroll, 0 = its last step), "
                        f"got {c.gen_step_discount}")
    for name in ("gen_width", "policy_hidden", "policy_reward_size", "policy_reward_steps", "policy_horizon"):
        if getattr(c, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(c, name)}")
    for name in ("advgan_alpha", "advgan_beta", "advgan_hinge", "policy_cost_weight", "policy_entropy",
                 "policy_gap_weight"):
        if getattr(c, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(c, name)}")
    if c.policy_lr <= 0 or not 0 < c.policy_baseline_rate <= 1:
        raise UserError(f"policy_lr must be > 0 and policy_baseline_rate in (0, 1], got {c.policy_lr} and {c.policy_baseline_rate}")
    _choice("policy_return", c.policy_return, POLICY_RETURNS)
    if not 0.0 <= c.policy_gamma <= 1.0:
        raise UserError(f"policy_gamma must be in [0, 1], got {c.policy_gamma}")
    policy_grids(c)  # each grid value checked, one line on error


def _check_las(c: TrainConfig) -> None:
    """--controller las: the method, the grids (eps within the norm's bound) and the strategy's settings.
    Other controllers never read the las_* keys, so their grids are not held against them."""
    if c.controller == "las":
        from .training.las import check_las_config

        check_las_config(c)


def _check_schedule(c: TrainConfig) -> None:
    """--controller replay: the table is read and every round's hyperparameters built, so a bad
    table fails here, before any run folder or Ray trial exists."""
    from .training.replay import check_schedule

    check_schedule(c)


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _coerce(cls, key: str, value):
    """Convert values from YAML/JSON/CLI to the field's type, with a message a user can act on."""
    return coerce(key, next(f.default for f in dataclasses.fields(cls) if f.name == key), value)


def _check_schedule_and_method(c: TrainConfig) -> None:
    """Values that would otherwise be accepted and fail (or silently misbehave) rounds later."""
    if c.lr_gamma <= 0:
        raise UserError(f"lr_gamma must be > 0 (the lr factor at each milestone, e.g. 0.1), got {c.lr_gamma}")
    bad = [m for m in c.lr_milestones if not 0.0 < m <= 1.0]
    if bad:
        raise UserError(f"lr_milestones are fractions of the run in (0, 1] (e.g. 0.5 0.75), got {bad[0]:g}")
    if not 0.0 <= c.momentum < 1.0:
        raise UserError(f"momentum must be in [0, 1), got {c.momentum}")
    if c.vat_xi <= 0:
        raise UserError(f"vat_xi must be > 0 (the radius of VAT's finite difference), got {c.vat_xi}")
    for name in ("vat_weight", "co_threshold", "co_gap"):
        if getattr(c, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(c, name)}")
    if c.policy_file and c.controller != "policy":
        raise UserError(f"policy_file needs --controller policy (this run's controller is {c.controller!r})")


def read_config_file(path: str | Path) -> dict:
    """Read a YAML (.yaml/.yml) or JSON config file into a dict of config keys."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"config file {str(p)!r} is a folder; give a .yaml or .json file")
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {str(p)!r}: {exc}") from None
    if not text.strip():
        raise UserError(f"config file {str(p)!r} is empty; give it at least one key (e.g. method: pgd-at) or drop --config")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # any parse error becomes one line
        raise UserError(f"cannot parse config file {str(p)!r}: {str(exc).splitlines()[0]}") from None
    if data is None:  # only comments
        raise UserError(f"config file {str(p)!r} holds no keys; give it at least one (e.g. method: pgd-at) or drop --config")
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping of keys to values (key: value), "
                        f"not a {type(data).__name__}")
    try:
        return config_keys(data)
    except UserError as exc:
        raise UserError(f"config file {str(p)!r}: {exc}") from None
