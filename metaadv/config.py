"""The typed, checked configuration of a training run.

Built once at the edge (CLI flags, a YAML/JSON file, a Ray Tune trial config) by
:meth:`TrainConfig.from_dict`, which rejects unknown keys and fills method-specific defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .attacks import NORMS
from .data import DATASETS
from .errors import UserError
from .training.hparams import HParams
from .training.methods import METHOD_DEFAULTS, METHODS

__all__ = ["METHODS", "TrainConfig", "read_config_file"]

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")



@dataclass(frozen=True)
class TrainConfig:
    method: str = "pgd-at"
    dataset: str = "mnist5k"
    arch: str = ""  # "" = the data set's default architecture
    rounds: int = 10  # rounds to train; a round is an epoch unless steps_per_round > 0
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
    adv_mix: float = 1.0
    # The fixed schedule: eps ramps linearly to `eps` over the first rounds; lr follows a shape.
    controller: str = "schedule"
    eps_ramp_rounds: int = 3
    lr_schedule: str = "constant"
    lr_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the rounds, for lr_schedule=step
    lr_gamma: float = 0.1
    # Method specifics.
    vat_xi: float = 1e-6
    vat_weight: float = 1.0
    unlabeled_fraction: float = 0.0  # VAT: hide this fraction of training labels (semi-supervised)
    co_threshold: float = 0.2  # fast-at: a drop of val robust accuracy this large = catastrophic overfitting
    # Validation every round: clean and PGD accuracy on a fixed subset of the validation split.
    val_size: int = 500
    val_pgd_steps: int = 10
    seed: int = 0
    device: str = "auto"
    data_dir: str = ""
    download: bool = False

    def __post_init__(self):
        _choice("method", self.method, tuple(METHODS))
        _choice("dataset", self.dataset, tuple(DATASETS))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("norm", self.norm, NORMS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        for name in ("rounds", "batch_size", "val_pgd_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_round", "eps_ramp_rounds", "val_size"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.unlabeled_fraction < 1.0:
            raise UserError(f"unlabeled_fraction must be in [0, 1), got {self.unlabeled_fraction}")
        if self.unlabeled_fraction and self.method != "vat":
            raise UserError("unlabeled_fraction needs --method vat (only VAT learns from unlabelled images)")
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in self.lr_milestones))
        self.hparams()  # validates eps, steps, lr, ... with their own messages

    def hparams(self) -> HParams:
        """The per-round hyperparameters at their configured (target) values."""
        return HParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(HParams)})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Defaults, then the method's defaults, then ``values``; unknown keys are an error."""
        values = {k.replace("-", "_"): v for k, v in values.items()}
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


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _coerce(cls, key: str, value):
    """Convert values from YAML/JSON/CLI to the field's type, with a message a user can act on."""
    default = next(f.default for f in dataclasses.fields(cls) if f.name == key)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(float(v) for v in value)
        if isinstance(default, str):
            return str(value) if value is not None else ""
    except (TypeError, ValueError):
        raise UserError(f"config key {key} expects {type(default).__name__}, got {value!r}") from None
    return value


def read_config_file(path: str | Path) -> dict:
    """Read a YAML (.yaml/.yml) or JSON config file into a dict of config keys."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # any parse error becomes one line
        raise UserError(f"cannot parse config file {str(p)!r}: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping of keys to values")
    return data
