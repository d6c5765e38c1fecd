"""The threat model's bound on eps, per norm and data set.

Its own module, below both :mod:`metaadv.config` (which checks a config's eps) and
:mod:`metaadv.training.replay` (which checks every round of a replayed schedule, and is itself
called by the config's check): neither imports the other for it.
"""

from __future__ import annotations

import math

from .data import DATASETS

__all__ = ["eps_bound", "eps_error"]


def eps_bound(norm: str, dataset: str) -> float:
    """The largest meaningful eps: 1 for L-inf; for L2 the norm of an all-white image, sqrt(C*H*W).

    A bound of 1 for L2 would forbid MNIST's usual L2 radii (1.5-2.0; VAT used 2.0).
    """
    if norm == "linf":
        return 1.0
    c, h, w = DATASETS[dataset].shape
    return math.sqrt(c * h * w)


def eps_error(c, eps: float) -> str:
    """Why ``eps`` is out of bounds for ``c``'s norm and data set (any config with ``norm`` and
    ``dataset``: a :class:`~metaadv.config.TrainConfig`), or "" when it is in."""
    bound = eps_bound(c.norm, c.dataset)
    if eps <= bound:
        return ""
    if c.norm == "linf":
        return f"eps must be in [0, 1] for --norm linf (pixel units: 0.3, or 8/255 = 0.0314), got {eps:g}"
    d = math.prod(DATASETS[c.dataset].shape)
    return (f"eps must be in [0, {bound:.4g}] for --norm l2 on {c.dataset} (sqrt(C*H*W) = sqrt({d}), "
            f"the L2 norm of an all-white image), got {eps:g}")
