"""What every attack shares: leaving no trace on the model, and the losses it ascends."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, target) -> per-example losses of shape (B,)``."""


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def kl_to_target(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)) per example: the VAT and TRADES objective."""
    log_q = F.log_softmax(logits, dim=1)
    return (target_probs * (torch.log(target_probs.clamp_min(1e-12)) - log_q)).sum(dim=1)


@contextlib.contextmanager
def frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Attack ``model`` in eval mode with parameter gradients switched off, then restore both.

    Eval mode keeps BatchNorm statistics still and dropout off. Without parameter gradients the
    backward pass computes input gradients only: the cheap backward an attack step needs.
    """
    # Per module: ``model.train(flag)`` would also flip submodules that were deliberately in the
    # other mode (a frozen backbone kept in eval inside a model being trained).
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.eval()
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, was_training in modes:
            m.training = was_training


def input_grad(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-example loss w.r.t. ``x``; returns (grad, losses, logits)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        losses = loss_fn(logits, target)
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return grad, losses.detach(), logits.detach()
