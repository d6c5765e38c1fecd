"""Fast gradient sign method (Goodfellow et al., 2015, arXiv:1412.6572).

Plain FGSM steps ``eps`` along the gradient sign from ``x``. With ``random_init=True`` and a step
of about 1.25 eps it is the attack of "fast" adversarial training (Wong et al., 2020,
arXiv:2001.03994).
"""

from __future__ import annotations

import torch

from ._common import LossFn, cross_entropy, frozen_eval, input_grad
from .pgd import ascent_step
from .projection import per_example, project, random_start

__all__ = ["fgsm"]


def fgsm(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor | None = None,
    norm: str = "linf",
    random_init: bool = False,
    loss_fn: LossFn = cross_entropy,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One gradient step of size ``step_size`` (default ``eps``), projected to the eps-ball.

    ``x`` in [0, 1] ``(B, C, H, W)``; ``eps`` and ``step_size`` in pixel units, floats or ``(B,)``.
    """
    x = x.detach()
    eps_b = per_example(eps, x)
    step_b = eps_b if step_size is None else per_example(step_size, x)
    with frozen_eval(model):
        delta = random_start(x, eps_b, norm, generator) if random_init else torch.zeros_like(x)
        grad, _, _ = input_grad(model, x + delta, y, loss_fn)
        delta = project(ascent_step(delta, grad, step_b, norm), x, eps_b, norm)
    return (x + delta).detach()
