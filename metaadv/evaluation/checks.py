"""Gradient-masking sanity checks, as code (after auto-attack's ``checks.py``).

A robust accuracy is only believable if gradient-based attacks could have found the adversarial
examples that exist. Athalye et al. (2018, arXiv:1802.00420) and Carlini et al. (2019,
arXiv:1902.06705) list the symptoms of obfuscated gradients; each function here tests one and
returns ``{"status": "passed" | "failed" | "skipped", "detail": str}``. A failed check makes the
evaluation's verdict untrusted (``metaadv evaluate`` exits 3); a skipped one (not applicable to
the attacks run, or checks switched off) is reported as skipped, never as passed.
"""

from __future__ import annotations

import warnings

import torch

from ..attacks import cross_entropy, frozen_eval, pgd
from ..attacks._common import input_grad

__all__ = ["CHECKS", "logits_not_probabilities", "nonzero_gradients", "deterministic_forward",
           "pgd_not_weaker_than_fgsm", "accuracy_falls_with_eps", "unbounded_attack_succeeds",
           "run_checks", "skipped_checks", "sweep_is_non_increasing", "keep_in_threat_model", "within_threat_model", "SWEEP_FRACTIONS"]

CHECKS = ("logits_not_probabilities", "nonzero_gradients", "deterministic_forward",
          "pgd_not_weaker_than_fgsm", "accuracy_falls_with_eps", "unbounded_attack_succeeds")
SWEEP_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _result(passed: bool, detail: str) -> dict:
    return {"status": "passed" if passed else "failed", "detail": detail}


def _skipped(detail: str) -> dict:
    return {"status": "skipped", "detail": detail}


def skipped_checks(detail: str) -> dict[str, dict]:
    """Every check, reported as skipped for ``detail``."""
    return {name: _skipped(detail) for name in CHECKS}


def within_threat_model(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, tol: float = 1e-5) -> torch.Tensor:
    """``(B,)`` bool: ``x_adv`` lies within ``eps`` of ``x`` in ``norm`` and inside [0, 1] (up to ``tol``).

    Third-party attacks are checked, not trusted: DeepFool, for one, is not eps-bounded.
    """
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    in_range = (x_adv.flatten(1).amin(1) >= -tol) & (x_adv.flatten(1).amax(1) <= 1 + tol)
    return (size <= eps + tol) & in_range


def keep_in_threat_model(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, name: str = "autoattack") -> torch.Tensor:
    """Replace examples outside the eps-ball or [0, 1] by the clean input (not fooled), with a warning."""
    ok = within_threat_model(x, x_adv, eps, norm)
    if not bool(ok.all()):
        bad = int((~ok).sum())
        warnings.warn(f"{name}: {bad} adversarial example(s) outside the {norm} eps={eps:g} ball or [0, 1]; "
                      "counted as not fooled", stacklevel=2)
        x_adv = torch.where(ok.view(-1, *([1] * (x.dim() - 1))), x_adv, x)
    return x_adv


@torch.no_grad()
def logits_not_probabilities(model, x: torch.Tensor) -> dict:
    """Outputs must be logits: softmax outputs flatten the cross-entropy gradient (saturation)."""
    with frozen_eval(model):
        out = model(x)
    looks_softmax = bool(((out >= 0) & (out <= 1)).all()) and torch.allclose(out.sum(1), torch.ones(len(out), device=out.device), atol=1e-3)
    if looks_softmax:
        return _result(False, "outputs are in [0, 1] and rows sum to 1: the model returns probabilities; "
                              "attack the logits (drop the final softmax)")
    return _result(True, f"outputs range [{out.min().item():.3g}, {out.max().item():.3g}], not a softmax")


def nonzero_gradients(model, x: torch.Tensor, y: torch.Tensor, max_fraction: float = 0.01) -> dict:
    """Few examples may have an all-zero input gradient of the loss (shattered/saturated gradients)."""
    with frozen_eval(model):
        grad, _, _ = input_grad(model, x, y, cross_entropy)
    zero = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
    detail = f"{zero:.1%} of {len(x)} examples have an all-zero input gradient (allowed {max_fraction:.0%})"
    return _result(zero <= max_fraction, detail)


@torch.no_grad()
def deterministic_forward(model, x: torch.Tensor, atol: float = 1e-5) -> dict:
    """Two eval-mode passes must agree: randomness in the forward pass defeats single-sample gradients."""
    with frozen_eval(model):
        a, b = model(x), model(x)
    diff = (a - b).abs().max().item()
    scale = max(1.0, a.abs().max().item())
    if diff > atol * scale:
        return _result(False, f"two forward passes differ by up to {diff:.3g}: the model is randomised; "
                              "use expectation over transformation (Athalye et al. 2018)")
    return _result(True, f"two forward passes agree (max difference {diff:.3g})")


def pgd_not_weaker_than_fgsm(per_attack: dict[str, float], n: int) -> dict:
    """An iterative attack that does worse than one step means the loss surface misleads it."""
    if "pgd" not in per_attack or "fgsm" not in per_attack:
        return _skipped("skipped: needs both fgsm and pgd among the attacks")
    tol = max(0.01, 2.0 / max(n, 1))
    p, f = per_attack["pgd"], per_attack["fgsm"]
    return _result(p <= f + tol, f"PGD accuracy {p:.3f} vs FGSM {f:.3f} (tolerance {tol:.3f})")


def sweep_is_non_increasing(eps_list, accs, tol: float) -> dict:
    """The pure rule of the eps sweep: accuracy may not rise by more than ``tol`` as eps grows."""
    pairs = ", ".join(f"{e:.3g}: {a:.3f}" for e, a in zip(eps_list, accs))
    rises = [accs[i + 1] - accs[i] for i in range(len(accs) - 1)]
    worst = max(rises, default=0.0)
    return _result(worst <= tol, f"accuracy by eps {{{pairs}}}; largest rise {max(worst, 0.0):.3f} (tolerance {tol:.3f})")


def _pgd_accuracy(model, x, y, *, eps, norm, steps, generator, random_init=True, batch_size=256) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xa = xb if eps == 0 else pgd(model, xb, yb, eps=eps, step_size=2.5 * eps / steps, steps=steps, norm=norm,
                                     random_init=random_init, generator=generator)
        with frozen_eval(model), torch.no_grad():
            correct += (model(xa).argmax(1) == yb).sum().item()
    return correct / max(1, len(x))


def accuracy_falls_with_eps(model, x, y, *, eps: float, norm: str, steps: int = 20, seed: int = 0,
                            batch_size: int = 256) -> dict:
    """PGD accuracy at eps * (0, .25, .5, .75, 1) must not increase: a larger ball contains the smaller."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    eps_list = [eps * f for f in SWEEP_FRACTIONS]
    accs = [_pgd_accuracy(model, x, y, eps=e, norm=norm, steps=steps, generator=g, batch_size=batch_size) for e in eps_list]
    return sweep_is_non_increasing(eps_list, accs, tol=max(0.02, 2.0 / max(len(x), 1)))


def unbounded_attack_succeeds(model, x, y, *, steps: int = 20, max_acc: float = 0.1, batch_size: int = 256) -> dict:
    """PGD with eps = 1 (L-inf: any image is reachable) must drive accuracy to about 0.

    It starts at ``x`` (no random start), so only the gradient can move it: if accuracy stays
    up, the gradients are masked (Athalye et al. 2018, Sec. 3; Carlini et al. 2019, Sec. 5).
    """
    acc = _pgd_accuracy(model, x, y, eps=1.0, norm="linf", steps=steps, generator=None, random_init=False,
                        batch_size=batch_size)
    return _result(acc <= max_acc, f"accuracy {acc:.3f} under unbounded L-inf PGD-{steps} (should be <= {max_acc})")


def run_checks(model, x, y, *, eps: float, norm: str, per_attack: dict[str, float], n: int, steps: int = 20,
               seed: int = 0, batch_size: int = 256) -> dict[str, dict]:
    """All checks on ``(x, y)`` (a subset of a few hundred examples is plenty); name -> result."""
    return {
        "logits_not_probabilities": logits_not_probabilities(model, x),
        "nonzero_gradients": nonzero_gradients(model, x, y),
        "deterministic_forward": deterministic_forward(model, x),
        "pgd_not_weaker_than_fgsm": pgd_not_weaker_than_fgsm(per_attack, n),
        "accuracy_falls_with_eps": accuracy_falls_with_eps(model, x, y, eps=eps, norm=norm, steps=steps, seed=seed,
                                                           batch_size=batch_size),
        "unbounded_attack_succeeds": unbounded_attack_succeeds(model, x, y, steps=steps, batch_size=batch_size),
    }
