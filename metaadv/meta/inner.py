"""The inner loop as a pure function of parameters (Finn et al. 2017, arXiv:1703.03400).

``adapt(model, params, x, y, steps=, lr=, first_order=)`` returns new parameters
``theta' = theta - lr * grad L(theta; x, y)`` after ``steps`` SGD steps, computed with
:func:`torch.func.functional_call`, so the module's own weights are never touched. In
second-order mode the steps stay on the autograd graph (``create_graph=True``) and the outer loss
differentiates through them; in first-order mode the inner gradients are constants, which is
first-order MAML: the meta-gradient is the query gradient at ``theta'``.

BatchNorm: the core models (SmallCNN, DigitsNet) have none. For models that do (PreActResNet18)
:func:`make_transductive` removes the running statistics, so every forward pass normalises with
the statistics of its own batch, in train and eval mode alike -- "transductive" batch norm as in
MAML's reference code. No state is kept between forward passes, so nothing can leak from one task
to the next (the price: a query batch is normalised with its own statistics, a mild transduction
that every method here shares).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = ["FunctionalModel", "adapt", "forward", "make_transductive", "meta_parameters"]

Params = dict[str, torch.Tensor]


def make_transductive(model: nn.Module) -> nn.Module:
    """Make every BatchNorm layer use batch statistics always, and keep none (in place)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return model


def meta_parameters(model: nn.Module) -> Params:
    """The module's own parameters by name: theta, the tensors the outer optimizer updates."""
    return dict(model.named_parameters())


def forward(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with ``params`` in place of the module's parameters (buffers stay the module's)."""
    return functional_call(model, params, (x,))


def adapt(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float,
          first_order: bool = False) -> Params:
    """``steps`` SGD steps on ``CE(f(x; params), y)`` from ``params``; returns the adapted params.

    ``x`` ``(B, C, H, W)`` in [0, 1], ``y`` ``(B,)`` labels. With ``first_order=False`` the result
    is differentiable w.r.t. ``params`` including second derivatives (MAML); with ``True`` only
    the identity path remains (first-order MAML, Reptile, evaluation). Params that do not require
    gradients (detached copies at evaluation) become leaves that do, and come back detached.
    """
    if not any(p.requires_grad for p in params.values()):
        leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        return {k: p.detach() for k, p in adapt(model, leaves, x, y, steps=steps, lr=lr, first_order=True).items()}
    with torch.enable_grad():  # callers may sit in no_grad (evaluation); the inner loop needs gradients
        for _ in range(steps):
            loss = F.cross_entropy(forward(model, params, x), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order, allow_unused=True)
            if first_order:
                grads = [None if g is None else g.detach() for g in grads]
            params = {k: p if g is None else p - lr * g for (k, p), g in zip(params.items(), grads)}
    return params


class FunctionalModel(nn.Module):
    """``model`` evaluated with fixed (adapted) parameters: a module an attack can take.

    The base module is a registered child, so ``eval()``/``train()`` reach it, but its own
    parameters are not used: ``forward`` substitutes ``params``. Pass detached params so that
    attacking it computes input gradients only.
    """

    def __init__(self, model: nn.Module, params: Params):
        super().__init__()
        self.base = model
        self.params = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self.base, self.params, x)
