"""PGD with a number of steps of its own for every example (LAS-AT's per-example attack strategy,
Jia et al., CVPR 2022, arXiv:2203.06616).

``x_adv = pgd_per_example_steps(model, x, y, eps=eps_b, step_size=alpha_b, steps=k_b)`` with
``eps_b``, ``alpha_b`` of shape ``(B,)`` (or floats) and ``k_b`` an integer tensor ``(B,)``. At
iteration ``t`` only the examples with ``k_i > t`` go through the model: an example with ``k``
steps costs exactly ``k`` forward+backward passes, so the batch costs ``k_b.sum()``. (The
authors' code runs every example for the batch's largest ``k`` and masks the update, paying the
largest ``k`` for all.)

With every ``k_i`` equal this is :func:`~metaadv.attacks.pgd.pgd` with one restart: the same random
start from the same generator, the same steps.
"""

from __future__ import annotations

import torch

from ._common import LossFn, cross_entropy, frozen_eval, input_grad
from .pgd import ascent_step, start_delta
from .projection import per_example, project

__all__ = ["pgd_per_example_steps"]


def pgd_per_example_steps(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    steps: torch.Tensor,
    norm: str = "linf",
    random_init: bool = True,
    init_std: float | None = None,
    loss_fn: LossFn = cross_entropy,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial examples within ``eps`` of ``x`` (detached, same shape/dtype/device).

    Args:
        x: images in [0, 1], ``(B, C, H, W)``; y: labels ``(B,)`` or any per-example target of
            ``loss_fn`` (TRADES: clean probabilities ``(B, K)``).
        eps, step_size: pixel units; floats or per-example tensors ``(B,)``.
        steps: integer tensor ``(B,)`` of gradient steps per example (>= 0; 0 keeps the start).
        random_init, init_std, generator: the start, as in :func:`~metaadv.attacks.pgd.pgd`;
            drawn for the whole batch whatever the steps, so the steps do not change the noise.
    """
    if steps.shape != (x.shape[0],) or steps.dtype.is_floating_point or steps.dtype == torch.bool:
        raise ValueError(f"steps must be an integer tensor of shape ({x.shape[0]},), got {steps.dtype} {tuple(steps.shape)}")
    if len(steps) and int(steps.min()) < 0:
        raise ValueError(f"steps must be >= 0, got {int(steps.min())}")
    x = x.detach()
    eps_b, step_b = per_example(eps, x), per_example(step_size, x)
    steps = steps.to(x.device)
    with frozen_eval(model):
        delta = start_delta(x, eps_b, norm, random_init, init_std, generator)
        for t in range(int(steps.max()) if len(steps) else 0):
            active = (steps > t).nonzero().flatten()
            if len(active) == len(x):  # everyone still going: no gather/scatter
                grad, _, _ = input_grad(model, x + delta, y, loss_fn)
                delta = project(ascent_step(delta, grad, step_b, norm), x, eps_b, norm)
                continue
            xs, es = x[active], eps_b[active]
            grad, _, _ = input_grad(model, xs + delta[active], y[active], loss_fn)
            delta = delta.index_copy(0, active, project(ascent_step(delta[active], grad, step_b[active], norm), xs, es, norm))
    return (x + delta).detach()
