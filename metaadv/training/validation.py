"""The per-round validation measurements.

``pgd_accuracy`` on a fixed subset is the logged ``val/*`` check: seeded, so the same weights
always give the same numbers; run at the threat model's target eps (not the ramped training eps),
so rounds are comparable along a run and across runs. ``apgd_accuracy`` (the reference APGD-CE,
``val_attack: apgd-ce``) is the stronger check for validation that informs a search's decisions. ``reward_check`` is the REINFORCE policy's
own measurement on a fresh batch each round (see metaadv/training/policy.py). ``grad_alignment``
is the catastrophic-overfitting guard's early warning (``train/grad_align``).
"""

from __future__ import annotations

import torch

from ..attacks import cross_entropy, fgsm, frozen_eval, pgd
from ..attacks.apgd_reference import apgd_ce
from ..attacks._common import input_grad
from ..attacks.projection import per_example, random_start

__all__ = ["accuracy", "apgd_accuracy", "grad_alignment", "pgd_accuracy", "reward_check", "round_generator", "round_seed"]

VAL_SEED = 1234


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    was_training = model.training
    model.eval()
    try:
        correct = sum((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
                      for i in range(0, len(x), batch_size))
    finally:
        model.train(was_training)
    return correct / max(1, len(x))


def pgd_accuracy(model, x, y, *, eps: float, steps: int, norm: str = "linf", batch_size: int = 500,
                 generator: torch.Generator | None = None) -> float:
    """Accuracy under PGD-``steps`` with one random start and step 2.5 eps / steps (Madry's rule).

    The random start comes from ``generator``; by default a fresh one seeded ``VAL_SEED``, so the
    same weights always read the same number."""
    if eps == 0:
        return accuracy(model, x, y, batch_size)
    g = generator if generator is not None else torch.Generator(device=x.device).manual_seed(VAL_SEED)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = pgd(model, xb, yb, eps=eps, step_size=2.5 * eps / steps, steps=steps, norm=norm, generator=g)
        with torch.no_grad():
            was_training = model.training
            model.eval()
            correct += (model(x_adv).argmax(1) == yb).sum().item()
            model.train(was_training)
    return correct / max(1, len(x))


def apgd_accuracy(model, x, y, *, eps: float, norm: str, iters: int, seed: int, batch_size: int = 500) -> tuple[float, int]:
    """``(accuracy, grad_evals)`` under the reference APGD-CE (``iters`` iterations, 1 restart,
    its random start from ``seed``); see :func:`metaadv.attacks.apgd_reference.apgd_ce` for what
    ``grad_evals`` counts. Each batch starts from the same seed, so the number is a pure function of
    the weights, the examples and ``seed``."""
    if eps == 0:
        return accuracy(model, x, y, batch_size), 0
    correct = grad_evals = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv, passes = apgd_ce(model, xb, yb, eps=eps, norm=norm, iters=iters, seed=seed)
        grad_evals += passes
        correct += round(accuracy(model, x_adv, yb) * len(yb))
    return correct / max(1, len(x)), grad_evals


def round_seed(seed: int, round_index: int, stream: int) -> int:
    """A seed for one purpose (``stream``, 0..7) in one round of one run: a pure function of its
    arguments, so a resumed run draws exactly what the uninterrupted run drew."""
    return (seed * 1_000_003 + round_index) * 8 + stream


def round_generator(seed: int, round_index: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by :func:`round_seed`."""
    return torch.Generator(device=device).manual_seed(round_seed(seed, round_index, stream))


def reward_check(model, x, y, *, eps: float, steps: int, norm: str, start: torch.Generator,
                 full: bool = True) -> tuple[dict[str, float], int]:
    """The policy's reward measurement on one batch ``x (B, C, H, W)``, ``y (B,)``.

    Returns ``({"robust_acc", and with full=True "clean_acc", "fgsm_acc"}, grad_evals)``: accuracy
    under PGD-``steps`` from a random start drawn from ``start`` (step 2.5 eps / steps), clean
    accuracy, and accuracy under FGSM (one step of eps from the clean input, the weak attack a
    gradient-masked model still beats). ``grad_evals`` counts input-gradient passes summed over
    examples: ``steps * B``, plus ``B`` for FGSM; forward-only passes are not counted.
    """
    out = {"robust_acc": pgd_accuracy(model, x, y, eps=eps, steps=steps, norm=norm, generator=start)}
    grad_evals = steps * len(y) if eps > 0 else 0
    if full:
        out["clean_acc"] = accuracy(model, x, y)
        if eps > 0:
            out["fgsm_acc"] = accuracy(model, fgsm(model, x, y, eps=eps, norm=norm), y)
            grad_evals += len(y)
        else:
            out["fgsm_acc"] = out["clean_acc"]
    return out, grad_evals


def grad_alignment(model, x, y, *, eps: float, norm: str, generator: torch.Generator) -> float:
    """Mean over examples of the cosine between the input gradients of the cross-entropy at two
    independent random points of the eps-ball around each ``x (B, C, H, W)``, in [-1, 1].

    GradAlign's measure (Andriushchenko & Flammarion 2020, arXiv:2007.02617): a locally linear
    model has aligned gradients (near 1); catastrophic overfitting of single-step training shows
    as the alignment collapsing towards 0, often before PGD accuracy does. Two input-gradient
    passes per example; the model is evaluated in eval mode and left untouched.
    """
    eps_b = per_example(eps, x)
    with frozen_eval(model):
        g1, _, _ = input_grad(model, x + random_start(x, eps_b, norm, generator), y, cross_entropy)
        g2, _, _ = input_grad(model, x + random_start(x, eps_b, norm, generator), y, cross_entropy)
    cos = torch.nn.functional.cosine_similarity(g1.flatten(1), g2.flatten(1), dim=1, eps=1e-12)
    return cos.mean().item()
