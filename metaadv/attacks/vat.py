"""The virtual adversarial perturbation (Miyato et al., 2018, arXiv:1704.03976).

Power iteration finds the direction ``d`` that most increases KL(p(x) || p(x + r)), with the
finite-difference step ``r = xi * ||x||_2 * d``; the perturbation is ``eps`` along ``d``. It needs
no labels, which is what makes VAT semi-supervised. For the L-inf threat model the direction is
taken through its sign, as FGSM does.

The paper's xi = 1e-6 is an absolute L2 step. In float32 it is lost: spread over an MNIST
image's 784 pixels it moves each by ~4e-8, below float32's resolution (1.2e-7) of the normalised
inputs, and the power iteration returns mostly rounding noise. On the seed CNN after one epoch on
mnist5k (200 test digits) its direction agreed with the exact (float64) Hessian-times-d direction
at a median |cos| of 0.66; a step of 1e-2 of the input's own L2 norm agreed at 0.997, float32 and
float64 at that step at 1.000. tests/test_attacks.py checks both against float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import frozen_eval, input_grad, kl_to_target
from .pgd import ascent_step
from .noise import draw
from .projection import normalize_l2, per_example, project

__all__ = ["vat", "vat_direction"]

XI = 1e-2  # default finite-difference step, relative to the input's L2 norm
_MIN_SCALE = 1.0  # pixel units: a (nearly) black image still gets a step that float32 resolves


def vat_direction(model: torch.nn.Module, x: torch.Tensor, d: torch.Tensor, *, xi: float = XI, iterations: int = 1) -> torch.Tensor:
    """Power iteration from ``d``: the unit-L2 direction (per example) most raising KL(p(x) || p(x + r)).

    ``x``, ``d`` are ``(B, C, H, W)``; each round steps ``r = xi * max(||x||_2, 1) * d`` (pixel
    units) and replaces ``d`` by the normalised gradient of the KL at ``x + r``, a finite-difference
    estimate of the KL's Hessian times ``d``. Runs the model as it is: call it inside
    :func:`frozen_eval` (as :func:`vat` does). Works in ``x``'s dtype (float64 for references).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if xi <= 0:
        raise ValueError(f"xi must be > 0, got {xi}")
    step = xi * x.flatten(1).norm(dim=1).clamp_min(_MIN_SCALE).view(-1, *([1] * (x.dim() - 1)))
    with torch.no_grad():
        target = F.softmax(model(x), dim=1)
    d = normalize_l2(d)
    for _ in range(iterations):
        grad, _, _ = input_grad(model, x + step * d, target, kl_to_target)
        d = normalize_l2(grad)
    return d


def vat(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    xi: float = XI,
    iterations: int = 1,
    norm: str = "l2",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``x + r_vadv`` (detached, in [0, 1], within ``eps``); ``x`` is ``(B, C, H, W)``.

    ``xi`` is the power iteration's finite-difference step as a fraction of each input's L2 norm
    (see :func:`vat_direction`), ``iterations`` its number of rounds (1 is enough in practice).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    x = x.detach()
    eps_b = per_example(eps, x)
    with frozen_eval(model):
        d = draw(torch.randn, x.shape, generator, x.device, x.dtype)
        d = vat_direction(model, x, d, xi=xi, iterations=iterations)
        delta = project(ascent_step(torch.zeros_like(x), d, eps_b, norm), x, eps_b, norm)
    return (x + delta).detach()
