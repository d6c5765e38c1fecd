"""Robust accuracy as the per-example worst case over a list of attacks.

An example counts as robust only if the model classifies it correctly clean *and* under every
attack run (Croce & Hein, 2020, arXiv:2003.01690, Sec. 5; Carlini et al., 2019,
arXiv:1902.06705). Averaging or taking the minimum of per-attack accuracies overstates
robustness whenever different attacks fool different examples.

Transfer attacks (say, a learned perturbation generator) can be reported beside the verdict,
under ``"transfer"``, but never enter ``robust_acc``: an attacker the model was trained against
measures the training, not the robustness.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from ..attacks import NORMS, fgsm, frozen_eval, pgd
from ..errors import UserError
from .autoattack import AA_VERSIONS, INSTALL_HINT, art_available, keep_in_threat_model
from .checks import run_checks
from .examples import ShownExamples

__all__ = ["ATTACK_NAMES", "EvalSettings", "Evaluation", "evaluate_model", "resolve_attacks", "run_evaluation", "worst_case"]

ATTACK_NAMES = ("fgsm", "pgd", "autoattack")
CHECK_SUBSET = 200  # the sanity checks need a few hundred examples, not the whole test set
AttackFn = Callable[..., torch.Tensor]  # fn(model, x, y, *, eps, norm, generator) -> x_adv, as metaadv.attacks


@dataclass(frozen=True)
class EvalSettings:
    """The threat model and attack budget. eps in [0, 1] pixel units; the PGD step defaults to 2.5 eps / steps."""

    eps: float
    norm: str = "linf"
    pgd_steps: int = 40
    pgd_restarts: int = 5
    pgd_step_size: float | None = None
    aa_version: str = "standard"
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.eps <= 1.0:
            raise UserError(f"eps must be in [0, 1] (pixel units: 0.3, or 8/255 = 0.0314), got {self.eps}")
        if self.norm not in NORMS:
            raise UserError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.aa_version not in AA_VERSIONS:
            raise UserError(f"unknown AutoAttack version {self.aa_version!r}; choose one of {', '.join(AA_VERSIONS)}")
        for name in ("pgd_steps", "pgd_restarts", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.pgd_step_size is not None and self.pgd_step_size <= 0:
            raise UserError(f"pgd-step-size must be > 0, got {self.pgd_step_size}")

    @property
    def step_size(self) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else 2.5 * self.eps / self.pgd_steps


def resolve_attacks(attacks: str | Sequence[str] | Mapping[str, str | AttackFn] | None) -> dict[str, str | AttackFn]:
    """Names (or a comma list) -> {name: builtin name or attack function}; None = every available attack."""
    if attacks is None:
        names = list(ATTACK_NAMES)
        if not art_available():
            warnings.warn(f"AutoAttack skipped: adversarial-robustness-toolbox is not installed ({INSTALL_HINT})", stacklevel=3)
            names.remove("autoattack")
        return {n: n for n in names}
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    chosen = dict(attacks) if isinstance(attacks, Mapping) else {a: a for a in attacks}
    if not chosen:
        raise UserError(f"no attacks given; choose from {', '.join(ATTACK_NAMES)}")
    for name, fn in chosen.items():
        if isinstance(fn, str) and fn not in ATTACK_NAMES:
            raise UserError(f"unknown attack {fn!r}; choose from {', '.join(ATTACK_NAMES)}")
        if fn == "autoattack" and not art_available():
            raise UserError(f"AutoAttack needs adversarial-robustness-toolbox; {INSTALL_HINT}")
    return chosen


def _runner(model, fn: str | AttackFn, x0: torch.Tensor, s: EvalSettings) -> Callable:
    """A batch attack ``run(x, y, generator) -> x_adv``; built once, so ART is set up once."""
    if s.eps == 0:
        return lambda x, y, g: x
    if fn == "fgsm":
        return lambda x, y, g: fgsm(model, x, y, eps=s.eps, norm=s.norm)
    if fn == "pgd":
        return lambda x, y, g: pgd(model, x, y, eps=s.eps, step_size=s.step_size, steps=s.pgd_steps,
                                   restarts=s.pgd_restarts, norm=s.norm, generator=g)
    if fn == "autoattack":
        from .autoattack import make_autoattack, seed_everything

        seed_everything(s.seed)  # ART draws from the global generators
        aa = make_autoattack(model, x0, eps=s.eps, norm=s.norm, version=s.aa_version, batch_size=s.batch_size)
        return lambda x, y, g: aa(x, y)
    return lambda x, y, g: fn(model, x, y, eps=s.eps, norm=s.norm, generator=g)


@torch.no_grad()
def _predict(model, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    with frozen_eval(model):
        return torch.cat([model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def worst_case(clean_correct: torch.Tensor, correct_under: Mapping[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """Robust accuracy (correct clean and under *every* attack) and each attack's own accuracy."""
    robust = clean_correct.clone()
    for c in correct_under.values():
        robust &= c
    per_attack = {name: _mean(clean_correct & c) for name, c in correct_under.items()}
    return _mean(robust), per_attack


def _mean(mask: torch.Tensor) -> float:
    """Fraction of True, as an exact count / n (no float32 rounding in the report)."""
    return int(mask.sum()) / max(1, mask.numel())


@dataclass
class Evaluation:
    """The JSON-ready ``result``; for the first ``keep`` examples, worst-case adversarials and predictions."""

    result: dict
    x_adv: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor


def _attack_all(model, run, x, y, idx, s: EvalSettings, name: str, shown: ShownExamples, device) -> torch.Tensor:
    """Attack the examples ``idx`` in batches; ``(N,)`` bool, correct under this attack."""
    correct = torch.zeros(len(x), dtype=torch.bool)
    g = torch.Generator(device=device).manual_seed(s.seed)
    for start in range(0, len(idx), s.batch_size):
        b = idx[start : start + s.batch_size]
        xb, yb = x[b].to(device), y[b].to(device)
        xa = keep_in_threat_model(xb, run(xb, yb, g), s.eps, s.norm, name)
        with torch.no_grad(), frozen_eval(model):
            pred = model(xa).argmax(1).cpu()
        correct[b] = pred == y[b]
        shown.update(b, xa.cpu(), pred, pred != y[b], preferred=name == "pgd")
    return correct


def run_evaluation(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   attacks=None, transfer: Mapping[str, AttackFn] | None = None, pgd_steps: int = 40,
                   pgd_restarts: int = 5, pgd_step_size: float | None = None, aa_version: str = "standard",
                   batch_size: int = 256, seed: int = 0, checks: bool = True, keep: int = 0) -> Evaluation:
    """Evaluate ``model`` on ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)``; see :func:`evaluate_model`.

    Attacks run only on clean-correct examples (the others are not robust anyway), in batches on
    the model's device, each from a generator seeded with ``seed``.
    """
    s = EvalSettings(eps, norm, pgd_steps, pgd_restarts, pgd_step_size, aa_version, batch_size, seed)
    chosen = resolve_attacks(attacks)
    device = next(iter(model.parameters()), torch.empty(0)).device
    x, y = x.detach().cpu(), y.detach().cpu()
    t0 = time.perf_counter()
    pred_clean = _predict(model, x, batch_size, device)
    clean_correct = pred_clean == y
    idx = clean_correct.nonzero().flatten()
    seconds = {"clean": time.perf_counter() - t0}
    shown = ShownExamples(x, pred_clean, keep)
    correct_under, transfer_acc = {}, {}
    for group, attack_map in (("attacks", chosen), ("transfer", transfer or {})):
        for name, fn in attack_map.items():
            t = time.perf_counter()
            run = _runner(model, fn, x[:1].to(device), s)
            keeper = shown if group == "attacks" else ShownExamples(x, pred_clean, 0)
            c = _attack_all(model, run, x, y, idx, s, name, keeper, device)
            seconds[name] = time.perf_counter() - t
            if group == "attacks":
                correct_under[name] = c
            else:
                transfer_acc[name] = _mean(clean_correct & c)
    robust_acc, per_attack = worst_case(clean_correct, correct_under)
    result = {"clean_acc": _mean(clean_correct), "robust_acc": robust_acc, "per_attack": per_attack,
              "eps": s.eps, "norm": s.norm, "n": len(x), "checks": {}, "attacks": _describe(chosen, s),
              "seed": seed, "batch_size": batch_size, "device": str(device)}
    if transfer:
        result["transfer"] = transfer_acc
    if checks:
        t = time.perf_counter()
        result["checks"] = _checks(model, x[:CHECK_SUBSET].to(device), y[:CHECK_SUBSET].to(device), s, per_attack, len(x))
        seconds["checks"] = time.perf_counter() - t
    result["seconds"] = {k: round(v, 3) for k, v in {**seconds, "total": time.perf_counter() - t0}.items()}
    return Evaluation(result, *shown.tensors())


def _checks(model, x, y, s: EvalSettings, per_attack: dict, n: int) -> dict:
    """Run the sanity checks on a subset; a failure is a warning, the numbers are still reported."""
    results = run_checks(model, x, y, eps=s.eps, norm=s.norm, per_attack=per_attack, n=n, steps=min(s.pgd_steps, 20),
                         seed=s.seed, batch_size=s.batch_size)
    for name, r in results.items():
        if not r["passed"]:
            warnings.warn(f"check {name} failed: {r['detail']}", stacklevel=4)
    return results


def _describe(chosen: Mapping, s: EvalSettings) -> dict:
    """The settings each attack ran with, for the report."""
    out = {}
    for name, fn in chosen.items():
        if fn == "pgd":
            out[name] = {"steps": s.pgd_steps, "restarts": s.pgd_restarts, "step_size": s.step_size}
        elif fn == "fgsm":
            out[name] = {"step_size": s.eps}
        elif fn == "autoattack":
            from importlib.metadata import version

            out[name] = {"version": s.aa_version, "implementation": f"adversarial-robustness-toolbox {version('adversarial-robustness-toolbox')}"}
        else:
            out[name] = {"custom": getattr(fn, "__name__", repr(fn))}
    return out


def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   **options) -> dict:
    """Clean and worst-case robust accuracy of ``model`` on ``(x, y)``, plus the sanity checks.

    Options: ``attacks`` (names from fgsm, pgd, autoattack, a comma list, or {name: attack fn};
    default every available one), ``transfer`` ({name: attack fn}, reported apart),
    ``pgd_steps=40``, ``pgd_restarts=5``, ``pgd_step_size`` (2.5 eps / steps), ``aa_version``
    ("standard" or "fast"), ``batch_size=256``, ``seed=0``, ``checks=True``. Returns the dict
    ``metaadv evaluate --json`` prints: ``clean_acc``, ``robust_acc``, ``per_attack``, ``eps``,
    ``norm``, ``n``, ``checks`` and the attack settings and seconds.
    """
    return run_evaluation(model, x, y, eps=eps, norm=norm, **options).result
