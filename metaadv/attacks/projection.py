"""The one projection every attack uses.

Attacks work on a perturbation ``delta`` of images ``x`` in [0, 1] with shape ``(B, C, H, W)``.
A projected ``delta`` lies in the eps-ball of the chosen norm *and* keeps ``x + delta`` inside
[0, 1]. eps is in pixel units of [0, 1] images (8/255, not 8), a float or a per-example tensor
of shape ``(B,)``.
"""

from __future__ import annotations

import torch

from .noise import draw

__all__ = ["NORMS", "per_example", "project", "random_start", "normalize_l2"]

NORMS = ("linf", "l2")
_TINY = 1e-12


def per_example(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return ``value`` as a tensor broadcastable against ``x`` (shape ``(B, 1, 1, 1)``)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return value.to(device=x.device, dtype=x.dtype).expand(shape)
        if value.shape != (x.shape[0],):
            raise ValueError(f"a per-example value needs shape ({x.shape[0]},), got {tuple(value.shape)}")
        return value.to(device=x.device, dtype=x.dtype).view(shape)
    return torch.full(shape, float(value), device=x.device, dtype=x.dtype)


def normalize_l2(v: torch.Tensor) -> torch.Tensor:
    """Scale each example of ``v`` to unit L2 norm (zero examples stay zero)."""
    norms = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v / norms.clamp_min(_TINY)


def project(delta: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project ``delta`` onto the ``norm`` ball of radius ``eps`` and keep ``x + delta`` in [0, 1].

    ``eps`` must already be shaped by :func:`per_example`. Clamping to [0, 1] after the ball
    projection moves each pixel towards ``x``, so the result stays inside the ball.
    """
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps)
    elif norm == "l2":
        norms = delta.flatten(1).norm(dim=1).view(eps.shape)
        delta = delta * torch.clamp(eps / norms.clamp_min(_TINY), max=1.0)
    else:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    return (x + delta).clamp(0.0, 1.0) - x


def random_start(x: torch.Tensor, eps: torch.Tensor, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A random ``delta`` inside the ball: uniform per pixel (L-inf) or uniform in the ball (L2).

    Uniform in the L2 ball of dimension d = C*H*W: a uniform direction and radius ``eps * u ** (1/d)``
    (the volume within radius r grows as r^d), so in high dimension almost every start lies near
    the sphere. The result is then projected, which only moves pixels that left [0, 1].
    """
    if norm == "linf":
        u = draw(torch.rand, x.shape, generator, x.device, x.dtype)
        delta = (2.0 * u - 1.0) * eps
    elif norm == "l2":
        direction = normalize_l2(draw(torch.randn, x.shape, generator, x.device, x.dtype))
        u = draw(torch.rand, (x.shape[0],) + (1,) * (x.dim() - 1), generator, x.device, x.dtype)
        delta = direction * u.pow(1.0 / x[0].numel()) * eps
    else:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    return project(delta, x, eps, norm)
