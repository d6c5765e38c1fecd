"""Attacks: ``fn(model, x, y, *, eps, ...) -> x_adv``. The model is an argument, never bound.

Every attack runs the model in eval mode with parameter gradients off, restores both, and
returns a detached tensor of ``x``'s shape, dtype and device, inside [0, 1] and the eps-ball.
"""

from ._common import cross_entropy, frozen_eval, kl_to_target
from .fgsm import fgsm
from .pgd import pgd
from .pgd_per_example import pgd_per_example_steps
from .projection import NORMS, per_example, project
from .vat import vat, vat_direction

__all__ = ["NORMS", "cross_entropy", "fgsm", "frozen_eval", "kl_to_target", "per_example", "pgd", "pgd_per_example_steps", "project", "vat", "vat_direction"]
