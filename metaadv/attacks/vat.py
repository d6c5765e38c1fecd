"""The virtual adversarial perturbation (Miyato et al., 2018, arXiv:1704.03976).

Power iteration finds the direction ``d`` that most increases KL(p(x) || p(x + xi d)); the
perturbation is ``eps`` along it. It needs no labels, which is what makes VAT semi-supervised.
For the L-inf threat model the direction is taken through its sign, as FGSM does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import frozen_eval, input_grad, kl_to_target
from .pgd import ascent_step
from .projection import normalize_l2, per_example, project

__all__ = ["vat"]


def vat(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    xi: float = 1e-6,
    iterations: int = 1,
    norm: str = "l2",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``x + r_vadv`` (detached, in [0, 1], within ``eps``); ``x`` is ``(B, C, H, W)``.

    ``xi`` is the finite-difference radius of the power iteration (1e-6 in the paper),
    ``iterations`` its number of rounds (1 is enough in practice).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    x = x.detach()
    eps_b = per_example(eps, x)
    with frozen_eval(model):
        with torch.no_grad():
            target = F.softmax(model(x), dim=1)
        d = normalize_l2(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
        for _ in range(iterations):
            grad, _, _ = input_grad(model, x + xi * d, target, lambda logits, t: kl_to_target(logits, t))
            d = normalize_l2(grad)
        delta = project(ascent_step(torch.zeros_like(x), d, eps_b, norm), x, eps_b, norm)
    return (x + delta).detach()
