"""Projected gradient descent (Madry et al., 2018, arXiv:1706.06083), L-inf and L2.

``x_adv = pgd(model, x, y, eps=0.3, step_size=0.01, steps=40, restarts=5)``. With several
restarts each example keeps its strongest restart: one that fools the model beats one that does
not, and among equals the higher loss wins, so robust accuracy is the per-example worst case.
"""

from __future__ import annotations

import torch

from ._common import LossFn, cross_entropy, frozen_eval, input_grad
from .noise import draw
from .projection import normalize_l2, per_example, project, random_start

__all__ = ["pgd", "ascent_step", "start_delta"]


def start_delta(x: torch.Tensor, eps_b: torch.Tensor, norm: str, random_init: bool, init_std: float | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """PGD's first point: zero, a uniform point of the ball, or ``init_std * N(0, 1)`` projected."""
    if not random_init:
        return torch.zeros_like(x)
    if init_std is not None:
        noise = draw(torch.randn, x.shape, generator, x.device, x.dtype)
        return project(init_std * noise, x, eps_b, norm)
    return random_start(x, eps_b, norm, generator)


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, step: torch.Tensor, norm: str) -> torch.Tensor:
    """One steepest-ascent step for the norm: the sign of the gradient (L-inf), or its direction (L2)."""
    if norm == "linf":
        return delta + step * grad.sign()
    return delta + step * normalize_l2(grad)


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    steps: int,
    norm: str = "linf",
    restarts: int = 1,
    random_init: bool = True,
    init_std: float | None = None,
    loss_fn: LossFn = cross_entropy,
    generator: torch.Generator | None = None,
    any_iterate: bool = False,
) -> torch.Tensor:
    """Return adversarial examples within ``eps`` of ``x`` (detached, same shape/dtype/device).

    Args:
        x: images in [0, 1], ``(B, C, H, W)``.
        y: integer labels ``(B,)``, or any target ``loss_fn`` understands (TRADES passes
            clean probabilities and a KL loss).
        eps, step_size: pixel units; floats or per-example tensors ``(B,)``.
        steps: gradient steps per restart (>= 1). restarts: independent runs (>= 1).
        random_init: start each restart uniformly inside the ball (the first one too).
        init_std: with ``random_init``, start instead from ``init_std * N(0, 1)`` per pixel,
            projected (TRADES starts from x + 0.001 N(0, 1), Zhang et al. 2019).
        generator: the source of the random starts, for reproducibility.
        any_iterate: evaluation only: return the first iterate that fools the model, if any
            (``y`` must be integer labels); see the module docstring.
    """
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    x = x.detach()
    eps_b = per_example(eps, x)
    step_b = per_example(step_size, x)
    labels = y if (y.dtype == torch.long and y.dim() == 1) else None
    if any_iterate:
        if labels is None:
            raise ValueError("any_iterate needs integer class labels y of shape (B,)")
        with frozen_eval(model):
            return _pgd_any_iterate(model, x, labels, eps_b, step_b, steps, norm, restarts, random_init, loss_fn,
                                    generator)
    best = torch.zeros_like(x)
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
    best_fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with frozen_eval(model):
        for _ in range(restarts):
            delta = start_delta(x, eps_b, norm, random_init, init_std, generator)
            for _ in range(steps):
                grad, _, _ = input_grad(model, x + delta, y, loss_fn)
                delta = project(ascent_step(delta, grad, step_b, norm), x, eps_b, norm)
            if restarts == 1:  # nothing to choose between: skip the scoring forward pass
                return (x + delta).detach()
            with torch.no_grad():
                logits = model(x + delta)
                loss = loss_fn(logits, y)
                fooled = logits.argmax(1) != labels if labels is not None else torch.zeros_like(best_fooled)
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), delta, best)
            best_loss = torch.where(better, loss, best_loss)
            best_fooled = best_fooled | fooled
    return (x + best).detach()


def _pgd_any_iterate(model, x, y, eps_b, step_b, steps, norm, restarts, random_init, loss_fn, generator) -> torch.Tensor:
    """PGD that keeps, per example, the first iterate that fools the model; else the highest-loss end point."""
    out = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
    for _ in range(restarts):
        active = (~fooled).nonzero().flatten()  # global positions still being attacked
        if not len(active):
            break
        xs, es = x[active], eps_b[active]
        delta = random_start(xs, es, norm, generator) if random_init else torch.zeros_like(xs)
        for t in range(steps + 1):
            x_now = xs + delta
            if t < steps:
                grad, loss, logits = input_grad(model, x_now, y[active], loss_fn)
            else:  # the end point: logits only
                with torch.no_grad():
                    logits = model(x_now)
                    loss = loss_fn(logits, y[active])
            hit = logits.argmax(1) != y[active]
            out[active[hit]] = x_now[hit]
            fooled[active[hit]] = True
            keep = ~hit
            if t == steps:
                better = keep & (loss > best_loss[active])
                out[active[better]] = x_now[better]
                best_loss[active[better]] = loss[better]
                break
            active, xs, es, delta, grad = active[keep], xs[keep], es[keep], delta[keep], grad[keep]
            if not len(active):
                break
            delta = project(ascent_step(delta, grad, step_b[active], norm), xs, es, norm)
    return out.detach()
