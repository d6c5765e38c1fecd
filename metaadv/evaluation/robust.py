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

import contextlib
import math

import io
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from ..attacks import NORMS, fgsm, frozen_eval, pgd
from ..errors import UserError
from .autoattack import INSTALL_HINT, aa_available, autoattack_stages, check_aa, package_version, square_attack
from .checks import keep_in_threat_model, run_checks, skipped_checks
from .examples import ShownExamples

__all__ = ["ATTACK_NAMES", "DEFAULT_ATTACKS", "EvalSettings", "Evaluation", "evaluate_model", "resolve_attacks", "run_evaluation",
           "verdict", "worst_case"]

ATTACK_NAMES = ("fgsm", "pgd", "autoattack", "square")
DEFAULT_ATTACKS = ("fgsm", "pgd", "autoattack")  # what None asks for; Square is named explicitly
DEFAULT_SQUARE_QUERIES = 1000
CHECK_SUBSET = 200  # the sanity checks need a few hundred examples, not the whole test set
AttackFn = Callable[..., torch.Tensor]  # fn(model, x, y, *, eps, norm, generator) -> x_adv, as metaadv.attacks


@dataclass(frozen=True)
class EvalSettings:
    """The threat model and attack budget. eps in pixel units of [0, 1] images: at most 1 for L-inf,
    at most sqrt(C*H*W) for L2 (checked against the data in :meth:`check_shape`); the PGD step
    defaults to 2.5 eps / steps."""

    eps: float
    norm: str = "linf"
    pgd_steps: int = 40
    pgd_restarts: int = 5
    pgd_step_size: float | None = None
    aa_version: str = "standard"
    batch_size: int = 256
    seed: int = 0
    aa_impl: str = "pyautoattack"
    square_queries: int = DEFAULT_SQUARE_QUERIES

    def __post_init__(self):
        if self.norm not in NORMS:
            raise UserError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if not 0.0 <= self.eps <= (1.0 if self.norm == "linf" else math.inf):
            raise UserError(f"eps must be in [0, 1] (pixel units: 0.3, or 8/255 = 0.0314), got {self.eps}")
        check_aa(self.aa_impl, self.aa_version)
        for name in ("pgd_steps", "pgd_restarts", "batch_size", "square_queries"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def check_shape(self, x: torch.Tensor) -> None:
        """L2 eps at most the norm of an all-white image of ``x``'s shape, sqrt(C*H*W)."""
        bound = math.sqrt(x[0].numel())
        if self.norm == "l2" and self.eps > bound:
            raise UserError(f"eps must be in [0, {bound:.4g}] for l2 on these {tuple(x.shape[1:])} images "
                            f"(sqrt(C*H*W), the L2 norm of an all-white image), got {self.eps}")
        if self.pgd_step_size is not None and self.pgd_step_size <= 0:
            raise UserError(f"pgd-step-size must be > 0, got {self.pgd_step_size}")

    @property
    def step_size(self) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else 2.5 * self.eps / self.pgd_steps


def resolve_attacks(attacks: str | Sequence[str] | Mapping[str, str | AttackFn] | None,
                    aa_impl: str = "pyautoattack") -> tuple[dict[str, str | AttackFn], str]:
    """Names (or a comma list) -> ({name: builtin name or attack function}, AutoAttack status).

    None = every default attack (:data:`DEFAULT_ATTACKS`; ``square``, the reference AutoAttack's
    gradient-free Square alone at ``square_queries``, is named explicitly: it is the black-box check
    for a new training method, and part of the standard AutoAttack already). The status is
    ``requested`` (it will run), ``missing`` (asked for by
    default, but its package is not installed: a warning, and the verdict is untrusted) or
    ``not requested``. AutoAttack named explicitly but not installed is a :class:`UserError`.
    """
    if attacks is None:
        if aa_available(aa_impl):
            return {n: n for n in DEFAULT_ATTACKS}, "requested"
        warnings.warn(f"AutoAttack missing: {package_version(aa_impl).split()[0]} is not installed ({INSTALL_HINT}); "
                      "the verdict is untrusted without it", stacklevel=3)
        return {n: n for n in DEFAULT_ATTACKS if n != "autoattack"}, "missing"
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    chosen = dict(attacks) if isinstance(attacks, Mapping) else {a: a for a in attacks}
    if not chosen:
        raise UserError(f"no attacks given; choose from {', '.join(ATTACK_NAMES)}")
    for name, fn in chosen.items():
        if isinstance(fn, str) and fn not in ATTACK_NAMES:
            raise UserError(f"unknown attack {fn!r}; choose from {', '.join(ATTACK_NAMES)}")
        if fn == "autoattack" and not aa_available(aa_impl):
            raise UserError(f"AutoAttack needs {package_version(aa_impl).split()[0]}; {INSTALL_HINT}")
        if fn == "square" and not aa_available("pyautoattack"):
            raise UserError(f"the Square attack is the reference AutoAttack's (pyautoattack); {INSTALL_HINT}")
    return chosen, ("requested" if "autoattack" in chosen.values() else "not requested")


def _stages(model, fn: str | AttackFn, x0: torch.Tensor, s: EvalSettings) -> tuple[list[tuple[str, Callable]], dict]:
    """An attack as stages ``[(name, run(x, y, generator) -> x_adv)]``, each run on what the earlier left.

    Built once per evaluation (so ART or the reference AutoAttack is set up once); with the
    attack's settings for the report.
    """
    if fn == "fgsm":
        return [("fgsm", lambda x, y, g: fgsm(model, x, y, eps=s.eps, norm=s.norm))], {"step_size": s.eps}
    if fn == "pgd":
        run = lambda x, y, g: pgd(model, x, y, eps=s.eps, step_size=s.step_size, steps=s.pgd_steps,
                                  restarts=s.pgd_restarts, norm=s.norm, generator=g, any_iterate=True)
        return [("pgd", run)], {"steps": s.pgd_steps, "restarts": s.pgd_restarts, "step_size": s.step_size,
                                "broken_if": "any iterate"}
    if fn == "square":
        run = square_attack(model, x0, eps=s.eps, norm=s.norm, queries=s.square_queries, seed=s.seed)
        return [("square", lambda x, y, g: run(x, y))], {"queries": s.square_queries, "implementation":
                                                          package_version("pyautoattack"), "gradient_free": True}
    if fn == "autoattack":
        stages, info = autoattack_stages(model, x0, eps=s.eps, norm=s.norm, version=s.aa_version, impl=s.aa_impl,
                                         seed=s.seed, batch_size=s.batch_size)
        return [(name, (lambda r: lambda x, y, g: r(x, y))(r)) for name, r in stages], info
    return [("custom", lambda x, y, g: fn(model, x, y, eps=s.eps, norm=s.norm, generator=g))], \
        {"custom": getattr(fn, "__name__", repr(fn))}


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


class _NoBar:
    """What ``--no-progress`` gets: nothing drawn, and no tqdm needed (a bare machine may lack it)."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


def _bar(desc: str, total: int, progress: bool | None):
    """A tqdm bar with an ETA on stderr; ``progress`` None: only when stderr is a terminal."""
    if progress is False:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", file=sys.stderr, leave=True, **_size(),
                disable=None if progress is None else not progress)


def _size() -> dict:
    """Where a terminal reports 0 columns or rows (a bare pty), tqdm would draw nothing: say 80 x 24."""
    import os

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return {}
    return {"ncols": size.columns or 80, "nrows": size.lines or 24} if 0 in (size.columns, size.lines) else {}


def _attack_all(model, stages, x, y, idx, s: EvalSettings, name: str, shown: ShownExamples, device,
                progress: bool | None) -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
    """Attack the examples ``idx`` stage by stage, in batches: ``(N,)`` bool correct under this attack,
    and each stage's accuracy (over all N) and seconds. A stage attacks only what the earlier left."""
    correct = torch.zeros(len(x), dtype=torch.bool)
    correct[idx] = True
    g = torch.Generator(device=device).manual_seed(s.seed)
    after, seconds = {}, {}
    for stage, run in stages:
        t = time.perf_counter()
        todo = idx[correct[idx]]
        label = name if stage == name else f"{name} {stage}"
        with _bar(label, len(todo), progress) as bar:
            for start in range(0, len(todo), s.batch_size):
                b = todo[start : start + s.batch_size]
                xb, yb = x[b].to(device), y[b].to(device)
                xa = xb if s.eps == 0 else keep_in_threat_model(xb, run(xb, yb, g), s.eps, s.norm, label)
                with torch.no_grad(), frozen_eval(model):
                    pred = model(xa).argmax(1).cpu()
                correct[b] = pred == y[b]
                shown.update(b, xa.cpu(), pred, pred != y[b], preferred=name == "pgd")
                bar.update(len(b))
        after[stage], seconds[stage] = _mean(correct), round(time.perf_counter() - t, 3)
    return correct, after, seconds


def run_evaluation(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **options) -> Evaluation:
    """Evaluate ``model`` on ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)``; see :func:`evaluate_model`.

    Always in fp32, whatever the model was trained in: autocast is switched off even inside a
    caller's autocast region, since a low-precision judge could miss adversarial examples. The
    result says so (``"precision": "fp32"``). Options: those of :func:`_evaluate_fp32`.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        ev = _evaluate_fp32(model, x, y, **options)
    ev.result["precision"] = "fp32"
    return ev


def _evaluate_fp32(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   attacks=None, transfer: Mapping[str, AttackFn] | None = None, pgd_steps: int = 40,
                   pgd_restarts: int = 5, pgd_step_size: float | None = None, aa_version: str = "standard",
                   aa_impl: str = "pyautoattack", batch_size: int = 256, seed: int = 0, checks: bool = True,
                   keep: int = 0, progress: bool | None = None,
                   square_queries: int = DEFAULT_SQUARE_QUERIES) -> Evaluation:
    """The evaluation itself (see :func:`run_evaluation`, which calls it with autocast off).

    Attacks run only on clean-correct examples (the others are not robust anyway), in batches on
    the model's device, each from a generator seeded with ``seed``.
    """
    s = EvalSettings(eps, norm, pgd_steps, pgd_restarts, pgd_step_size, aa_version, batch_size, seed, aa_impl,
                     square_queries)
    s.check_shape(x)
    chosen, aa_status = resolve_attacks(attacks, aa_impl)
    device = next(iter(model.parameters()), torch.empty(0)).device
    x, y = x.detach().cpu(), y.detach().cpu()
    t0 = time.perf_counter()
    pred_clean = _predict(model, x, batch_size, device)
    clean_correct = pred_clean == y
    idx = clean_correct.nonzero().flatten()
    seconds = {"clean": time.perf_counter() - t0}
    shown = ShownExamples(x, pred_clean, keep)
    correct_under, transfer_acc, described = {}, {}, {}
    for group, attack_map in (("attacks", chosen), ("transfer", transfer or {})):
        for name, fn in attack_map.items():
            t = time.perf_counter()
            stages, info = _stages(model, fn, x[:1].to(device), s)
            if len(stages) == 1:
                stages = [(name, stages[0][1])]
            keeper = shown if group == "attacks" else ShownExamples(x, pred_clean, 0)
            c, after, stage_seconds = _attack_all(model, stages, x, y, idx, s, name, keeper, device, progress)
            seconds[name] = time.perf_counter() - t
            if group == "attacks":
                correct_under[name] = c
                if len(stages) > 1:
                    info = {**info, "accuracy_after": after, "seconds_per_component": stage_seconds}
                    note = square_note(after)
                    if note:
                        info.setdefault("notes", []).append(note)
                        warnings.warn(f"autoattack: {note}", stacklevel=2)
                described[name] = info
            else:
                transfer_acc[name] = _mean(clean_correct & c)
    robust_acc, per_attack = worst_case(clean_correct, correct_under)
    result = {"clean_acc": _mean(clean_correct), "robust_acc": robust_acc, "per_attack": per_attack,
              "eps": s.eps, "norm": s.norm, "n": len(x), "checks": {}, "attacks": described,
              "autoattack": "ran" if aa_status == "requested" else aa_status,
              "seed": seed, "batch_size": batch_size, "device": str(device)}
    if transfer:
        result["transfer"] = transfer_acc
    t = time.perf_counter()
    if checks:
        result["checks"] = _checks(model, x[:CHECK_SUBSET].to(device), y[:CHECK_SUBSET].to(device), s, per_attack, len(x))
        seconds["checks"] = time.perf_counter() - t
    else:
        result["checks"] = skipped_checks("not run (checks switched off)")
    result["trusted"], result["untrusted_reasons"] = verdict(result["checks"], result["autoattack"])
    result["seconds"] = {k: round(v, 3) for k, v in {**seconds, "total": time.perf_counter() - t0}.items()}
    return Evaluation(result, *shown.tensors())


def square_note(after: Mapping[str, float], alpha: float = 0.002) -> str | None:
    """The reference's ``check_square_sr``: the black-box Square finding more than the gradient attacks
    before it (by more than ``alpha``) hints that the gradients mislead them. A note, as in the reference."""
    names = list(after)
    if "square" not in names or names.index("square") == 0:
        return None
    before = after[names[names.index("square") - 1]]
    if after["square"] < before - alpha:
        return (f"Square lowered robust accuracy by {before - after['square']:.2%} after the gradient-based attacks: "
                "the gradient-based evaluation may be unreliable; consider more Square queries or an adaptive attack")
    return None


def verdict(check_results: Mapping[str, dict], autoattack: str) -> tuple[bool, list[str]]:
    """``(trusted, reasons)``: trusted only if no check failed and AutoAttack was not missing.

    A check skipped (not applicable, or switched off) and AutoAttack left out by choice do not
    count against the verdict; AutoAttack asked for but not installed does: robust accuracy
    without the reference attack is not a verdict.
    """
    reasons = [f"check {name} failed: {r['detail']}" for name, r in check_results.items() if r["status"] == "failed"]
    if autoattack == "missing":
        reasons.append(f"autoattack missing: not installed ({INSTALL_HINT})")
    return not reasons, reasons


def _checks(model, x, y, s: EvalSettings, per_attack: dict, n: int) -> dict:
    """Run the sanity checks on a subset; a failure is a warning and makes the verdict untrusted."""
    results = run_checks(model, x, y, eps=s.eps, norm=s.norm, per_attack=per_attack, n=n, steps=min(s.pgd_steps, 20),
                         seed=s.seed, batch_size=s.batch_size)
    for name, r in results.items():
        if r["status"] == "failed":
            warnings.warn(f"check {name} failed: {r['detail']}", stacklevel=4)
    return results


def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   **options) -> dict:
    """Clean and worst-case robust accuracy of ``model`` on ``(x, y)``, plus the sanity checks and a verdict.

    Options: ``attacks`` (names from fgsm, pgd, autoattack, a comma list, or {name: attack fn};
    default all three), ``transfer`` ({name: attack fn}, reported apart), ``pgd_steps=40``,
    ``pgd_restarts=5``, ``pgd_step_size`` (2.5 eps / steps), ``aa_impl`` ("pyautoattack", the
    reference, or "art"), ``aa_version`` ("standard", "plus", "rand", "fast"; ART: "standard",
    "fast"), ``batch_size=256``, ``seed=0``, ``checks=True``, ``progress`` (None: a bar per
    attack on stderr when it is a terminal). Returns the dict ``metaadv evaluate --json`` prints:
    ``clean_acc``, ``robust_acc``, ``per_attack``, ``eps``, ``norm``, ``n``, ``checks`` (each
    ``{"status": "passed" | "failed" | "skipped", "detail"}``), ``autoattack`` ("ran",
    "missing" or "not requested"), ``trusted`` and ``untrusted_reasons``, the attack settings
    and seconds.
    """
    return run_evaluation(model, x, y, eps=eps, norm=norm, **options).result
