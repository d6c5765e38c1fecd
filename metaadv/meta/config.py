"""The typed, checked configuration of a meta-learning run, and its per-round hyperparameters.

:class:`MetaConfig` is built once at the edge (CLI flags, a YAML/JSON file, a Ray Tune trial) by
:meth:`MetaConfig.from_dict`, which rejects unknown keys. :class:`MetaHParams` holds the knobs a
controller may change between rounds; each appears in the metrics row as ``hp/<name>``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .._config_values import check_finite, coerce, config_keys
from ..errors import UserError
from ..training.precision import PRECISIONS

__all__ = ["META_DATASETS", "META_METHODS", "MetaConfig", "MetaHParams"]

META_METHODS = ("maml", "fomaml", "reptile", "adml", "aq")
META_DATASETS = ("mnist5k", "mnist5k-rot", "digits", "omniglot")
META_ARCHS = ("small-cnn", "digits-net", "preact-resnet18")
TRAIN_ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class MetaHParams:
    inner_lr: float = 0.1  # SGD step of the inner loop (alpha in Finn et al. 2017)
    inner_steps: int = 3
    meta_lr: float = 1e-3  # Adam step of the outer loop (beta in Finn et al. 2017)
    eps: float = 0.2  # attack radius in [0, 1] pixel units (ADML and AQ training; validation always)
    beta1: float = 0.5  # ADML weight of L(theta'_clean, adversarial query)
    beta2: float = 0.5  # ADML weight of L(theta'_adv, clean query)

    def __post_init__(self):
        if self.inner_lr <= 0 or self.meta_lr <= 0:
            raise UserError(f"inner_lr and meta_lr must be > 0, got {self.inner_lr} and {self.meta_lr}")
        if int(self.inner_steps) != self.inner_steps or self.inner_steps < 1:
            raise UserError(f"inner_steps must be an integer >= 1, got {self.inner_steps}")
        if not 0.0 <= self.eps <= 1.0:
            raise UserError(f"eps must be in [0, 1] (pixel units, e.g. 0.2), got {self.eps}")
        if self.beta1 < 0 or self.beta2 < 0 or self.beta1 + self.beta2 == 0:
            raise UserError(f"beta1 and beta2 must be >= 0 and not both 0, got {self.beta1} and {self.beta2}")
        object.__setattr__(self, "inner_steps", int(self.inner_steps))

    def replace(self, **changes) -> "MetaHParams":
        return dataclasses.replace(self, **changes)

    def as_row(self) -> dict[str, float]:
        return {f"hp/{k}": v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class MetaConfig:
    method: str = "maml"
    dataset: str = "mnist5k"
    arch: str = ""  # "" = the data set's default architecture
    ways: int = 3  # N: classes per task
    shots: int = 1  # K: support images per class
    queries: int = 5  # Q: query images per class
    meta_batch: int = 4  # tasks per outer step
    rounds: int = 5
    steps_per_round: int = 30  # outer steps per round
    # Stop meta-training once cost/grad_evals reaches this, mid-round if need be (0 = no budget;
    # rounds still caps): every method gets the same gradient evaluations, not the same steps.
    budget_grad_evals: int = 0
    first_order: bool = False  # maml/adml: drop second derivatives (fomaml always sets it)
    # Per-round hyperparameters (starting values; see MetaHParams).
    inner_lr: float = 0.1
    inner_steps: int = 3
    meta_lr: float = 1e-3
    eps: float = 0.2
    beta1: float = 0.5
    beta2: float = 0.5
    # ADML's attack on support and query sets (Yin et al. use FGSM); AQ's on the query set
    # (Goldblum et al. use PGD: from_dict makes pgd the default of --method aq).
    attack: str = "fgsm"
    attack_steps: int = 10  # pgd only
    step_ratio: float = 0.25  # pgd step size / eps
    norm: str = "linf"
    # Adaptation at validation / meta-test time; 0 = inner_steps.
    eval_inner_steps: int = 0
    # Per-round validation on a fixed, seeded set of meta-validation tasks.
    val_tasks: int = 20
    val_pgd_steps: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # meta-training steps: fp32, bf16 (autocast) or auto; validation stays fp32
    data_dir: str = ""
    download: bool = False

    def __post_init__(self):
        _choice("method", self.method, META_METHODS)
        _choice("dataset", self.dataset, META_DATASETS)
        _choice("attack", self.attack, TRAIN_ATTACKS)
        _choice("norm", self.norm, ("linf", "l2"))
        _choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        _choice("precision", self.precision, PRECISIONS)
        if self.arch:
            _choice("arch", self.arch, META_ARCHS)
        for name in ("ways", "shots", "queries", "meta_batch", "rounds", "steps_per_round", "attack_steps",
                     "val_pgd_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ways < 2:
            raise UserError(f"ways must be >= 2 (a 1-way task has nothing to classify), got {self.ways}")
        for name in ("eval_inner_steps", "val_tasks", "budget_grad_evals"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.step_ratio <= 0:
            raise UserError(f"step_ratio must be > 0, got {self.step_ratio}")
        check_finite(self)
        if self.method == "fomaml" and not self.first_order:
            raise UserError("fomaml is first-order by definition; drop first_order: false or use --method maml")
        self.hparams()  # validates inner_lr, eps, ... with their own messages

    @property
    def test_inner_steps(self) -> int:
        return self.eval_inner_steps or self.inner_steps

    def hparams(self) -> MetaHParams:
        return MetaHParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MetaHParams)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "MetaConfig":
        return MetaConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, values: dict) -> "MetaConfig":
        """Defaults, then ``values``; unknown keys and ill-typed values are a :class:`UserError`."""
        values = config_keys(values)
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
        if values.get("method") == "fomaml" and "first_order" not in values:
            values["first_order"] = True
        if values.get("method") == "aq" and "attack" not in values:
            values["attack"] = "pgd"  # Goldblum et al. attack the queries with PGD
        return cls(**{k: _coerce(k, fields[k], v) for k, v in values.items()})


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _coerce(key: str, default, value):
    """Convert a value from YAML/JSON/CLI to the field's type, with a message a user can act on."""
    return coerce(key, default, value)
