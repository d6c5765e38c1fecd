"""The per-round validation measurement: clean and PGD accuracy on a fixed subset.

Seeded, so the same weights always give the same numbers; run at the threat model's target eps
(not the ramped training eps), so rounds are comparable along a run and across runs.
"""

from __future__ import annotations

import torch

from ..attacks import pgd

__all__ = ["accuracy", "pgd_accuracy"]

VAL_SEED = 1234


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    was_training = model.training
    model.eval()
    try:
        correct = sum((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
                      for i in range(0, len(x), batch_size))
    finally:
        model.train(was_training)
    return correct / max(1, len(x))


def pgd_accuracy(model, x, y, *, eps: float, steps: int, norm: str = "linf", batch_size: int = 500) -> float:
    """Accuracy under PGD-``steps`` with one random start and step 2.5 eps / steps (Madry's rule)."""
    if eps == 0:
        return accuracy(model, x, y, batch_size)
    g = torch.Generator(device=x.device).manual_seed(VAL_SEED)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = pgd(model, xb, yb, eps=eps, step_size=2.5 * eps / steps, steps=steps, norm=norm, generator=g)
        with torch.no_grad():
            was_training = model.training
            model.eval()
            correct += (model(x_adv).argmax(1) == yb).sum().item()
            model.train(was_training)
    return correct / max(1, len(x))
