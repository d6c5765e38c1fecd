"""The recursive generator's unrolled attack and the gradient steps after any generator.

``unroll``: L2L-DA's training pass (Jang et al., ICCV 2019): from a start ``delta_0``, K steps of
:class:`~metaadv.models.generator.RecursiveGenerator`, step t reading the classifier's input
gradient at ``x + delta_t`` (fresh, normalised per example); the generator's loss is the
classifier's cross-entropy at every ``x + delta_t``, weighted ``discount ** (K - t)`` (1: L2L-DA's
sum; 0: the last step only), to be *maximised*. The running perturbation stays in the graph, so
the loss of step t reaches the generator's use at every earlier step (back-propagation through
the unroll); the gradients it reads are data, as in L2L-DA.

``final_steps``: signed-gradient steps from the generator's output, projected (FGSM-SDI, Jia et
al. 2022, arXiv:2110.05007): the classifier never trains on the generator's direction alone.

Cost, in classifier passes (a backward through the classifier, with its forward; one PGD step is
one): each gradient read is one, each weighted loss term one more (its forward is shared with the
read at the same point; counted anyway). The first final step reads the gradient the generator's
loss already back-propagated through the classifier at that very point, so it costs nothing of
its own; each further one costs one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attacks import cross_entropy, frozen_eval, project
from ..attacks._common import input_grad
from ..attacks.pgd import ascent_step
from ..models.generator import RecursiveGenerator, normalized_grad

__all__ = ["Unrolled", "final_steps", "unroll", "unroll_passes"]


@dataclass
class Unrolled:
    """One unroll: ``loss`` (differentiable in the generator's weights, to be minimised, i.e. minus the
    weighted cross-entropy), ``delta`` (``delta_K``), ``x_last`` (``x + delta_K``, the classifier's input
    node: after ``loss.backward()`` its ``.grad`` is the last loss term's input gradient) and
    ``logits`` (the classifier's on ``x_last``)."""

    loss: torch.Tensor
    delta: torch.Tensor
    x_last: torch.Tensor
    logits: torch.Tensor


def unroll_passes(steps: int, discount: float) -> int:
    """Classifier passes per example of one unroll after the first read: K - 1 reads and the weighted loss terms."""
    return (steps - 1) + (steps if discount > 0 else 1)


def unroll(model, gen: RecursiveGenerator, x, y, *, delta0, grad0, eps_b, step_b, steps: int, norm: str,
           discount: float = 1.0, noise: torch.Tensor | None = None, fresh: bool = True) -> Unrolled:
    """K = ``steps`` generator steps from ``delta0`` (detached), the first reading ``grad0`` (raw input gradient
    at ``x + delta0``). Call inside :func:`~metaadv.attacks.frozen_eval` with grad enabled.

    ``fresh=False`` reuses ``grad0`` at every step (for tests: what the fresh reads add).
    """
    delta, g = delta0, normalized_grad(grad0)
    loss = x.new_zeros(())
    for t in range(1, steps + 1):
        delta = gen.step(x, delta, g, eps_b, step_b, norm, noise)
        x_in = x + delta  # its own node: its gradient is the classifier's alone
        logits = model(x_in)
        ce = F.cross_entropy(logits, y, reduction="none")
        weight = discount ** (steps - t)
        if weight > 0:
            loss = loss - weight * ce.mean()
        if t < steps and fresh:
            (grad,) = torch.autograd.grad(ce.sum(), x_in, retain_graph=True)
            g = normalized_grad(grad.detach())
    x_in.retain_grad()
    return Unrolled(loss, delta, x_in, logits)


def final_steps(model, x, y, delta, *, steps: int, step_b, eps_b, norm: str,
                descent_grad: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """``steps`` signed-gradient ascent steps on the cross-entropy from ``x + delta``, each projected.

    ``descent_grad``, when given, is the gradient of a loss to *minimise* at ``x + delta`` already paid for
    (the generator's): the first step descends it instead of reading a fresh one. Returns
    (detached ``delta``, classifier passes per example).
    """
    delta, passes = delta.detach(), 0
    with frozen_eval(model):
        for i in range(steps):
            if i == 0 and descent_grad is not None:
                ascent = -descent_grad
            else:
                ascent, _, _ = input_grad(model, x + delta, y, cross_entropy)
                passes += 1
            delta = project(ascent_step(delta, ascent, step_b, norm), x, eps_b, norm)
    return delta.detach(), passes
