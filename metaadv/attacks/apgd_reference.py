"""APGD-CE alone, from the reference AutoAttack (Croce & Hein 2020, arXiv:2003.01690).

The searches' validation attack (``val_attack: apgd-ce``): PGD-10 from one fixed start rated
single-step training about 23 points too high here, so a search ranking on it picks gradient
masking. APGD-CE adapts its step size and keeps the best point, at the cost of ``iters + 1``
input-gradient passes per attacked example. It lives below :mod:`metaadv.training` (which
validates with it) and :mod:`metaadv.evaluation` (which runs the whole AutoAttack), so neither
imports the other. ``pyautoattack`` (the ``eval`` extra) is imported only when it runs.
"""

from __future__ import annotations

import importlib.util

import torch

from ._common import frozen_eval

__all__ = ["APGD_INSTALL_HINT", "apgd_available", "apgd_ce"]

APGD_INSTALL_HINT = "install the eval extra: pip install -e '.[eval]'"
_NORMS = {"linf": "Linf", "l2": "L2"}


def apgd_available() -> bool:
    return importlib.util.find_spec("pyautoattack") is not None


def apgd_ce(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, iters: int,
            seed: int) -> tuple[torch.Tensor, int]:
    """The reference APGD-CE (1 restart, ``iters`` iterations) on ``x (B, C, H, W)`` in [0, 1].

    Returns ``(x_adv, grad_evals)``: detached adversarial examples (an example the attack did not
    fool comes back as ``x``), and the input-gradient passes spent, summed over examples: the
    reference attacks only the examples the model classifies correctly, with one gradient at its
    random start and one per iteration, so ``(iters + 1)`` times their number. Forward-only passes
    are not counted. The random start comes from ``seed``: the reference seeds torch's global
    generator, which is restored afterwards, so the caller's random state is untouched.
    """
    from pyautoattack.autopgd_base import APGDAttack

    attack = APGDAttack(model, n_iter=iters, norm=_NORMS[norm], n_restarts=1, eps=eps, seed=seed, loss="ce",
                        device=x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    with frozen_eval(model), torch.random.fork_rng(devices=devices):
        with torch.no_grad():
            attacked = int((model(x).argmax(1) == y).sum().item())
        x_adv = attack.perturb(x, y) if attacked else x
    return x_adv.detach().to(dtype=x.dtype), (iters + 1) * attacked
