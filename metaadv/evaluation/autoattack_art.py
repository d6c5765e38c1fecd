"""AutoAttack (Croce & Hein, 2020, arXiv:2003.01690) through adversarial-robustness-toolbox (ART).

A second opinion (``metaadv evaluate --aa-impl art``), not the judge: ART's AutoAttack is
untargeted only (no APGD-T, no FAB-T) and weaker than the reference one in
:mod:`.autoattack`. ART is an optional dependency (the ``eval`` extra) and is imported only
when this runs.

Versions (``aa_version``):

- ``standard``: ART's default AutoAttack list, APGD-CE and APGD-DLR (100 iterations, 5 random
  starts each), DeepFool (100 iterations, overshoot 1e-3, 10 candidate classes) and Square
  (5,000 queries, 5 restarts). The black-box Square attack is what catches gradient masking,
  and it dominates the cost on a CPU.
- ``fast``: APGD-CE and APGD-DLR only, 100 iterations, one random start each: far cheaper, still
  a stronger white-box attack than plain PGD, but no gradient-free component.

APGD's first step is 2 eps, as in the paper. ART keeps, per example, the first attack that fools
the model; the examples it returns are then verified here, not trusted: DeepFool is not
eps-bounded, so anything outside the threat model or outside [0, 1] counts as not fooled.
"""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import torch

from ..attacks import frozen_eval
from ..errors import UserError
from .checks import keep_in_threat_model

__all__ = ["ART_VERSIONS", "art_autoattack", "art_available", "make_art_autoattack"]

ART_VERSIONS = ("standard", "fast")
INSTALL_HINT = "install the eval extra: pip install -e '.[eval]'"


def art_available() -> bool:
    """True when ART (and ``multiprocess``, which its AutoAttack imports) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("art", "multiprocess"))


def _classifier(model: torch.nn.Module, x: torch.Tensor, num_classes: int):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=num_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if x.device.type == "cuda" else "cpu")


def _attack_list(clf, eps: float, norm, version: str, batch_size: int) -> list:
    from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack

    restarts = 5 if version == "standard" else 1
    apgd = [AutoProjectedGradientDescent(estimator=clf, norm=norm, eps=eps, eps_step=2 * eps, max_iter=100,
                                         targeted=False, nb_random_init=restarts, batch_size=batch_size,
                                         loss_type=loss, verbose=False)
            for loss in ("cross_entropy", "difference_logits_ratio")]
    if version == "fast":
        return apgd
    return apgd + [DeepFool(classifier=clf, max_iter=100, epsilon=1e-3, nb_grads=10, batch_size=batch_size, verbose=False),
                   SquareAttack(estimator=clf, norm=norm, max_iter=5000, eps=eps, p_init=0.8, nb_restarts=5,
                                batch_size=batch_size, verbose=False)]


def make_art_autoattack(model: torch.nn.Module, x_example: torch.Tensor, *, eps: float, norm: str = "linf",
                    version: str = "standard", batch_size: int = 256):
    """Build ART's AutoAttack for ``model`` once; returns ``attack(x, y) -> x_adv`` for batches.

    ``x_example`` fixes the input shape and device. Raises :class:`UserError` when ART is
    missing or refuses the model (for instance because it outputs probabilities).
    """
    if version not in ART_VERSIONS:
        raise UserError(f"unknown AutoAttack version {version!r} for --aa-impl art; choose one of {', '.join(ART_VERSIONS)}")
    if not art_available():
        raise UserError(f"AutoAttack needs adversarial-robustness-toolbox; {INSTALL_HINT}")
    from art.attacks.evasion import AutoAttack

    with torch.no_grad(), frozen_eval(model):
        num_classes = model(x_example[:1]).shape[1]
    art_norm = np.inf if norm == "linf" else 2
    try:
        clf = _classifier(model, x_example, num_classes)
        aa = AutoAttack(estimator=clf, norm=art_norm, eps=eps, eps_step=2 * eps,
                        attacks=_attack_list(clf, eps, art_norm, version, batch_size), batch_size=batch_size)
    except ValueError as exc:  # ART's refusals are ValueErrors with a readable first line
        raise UserError(f"AutoAttack (ART) refused the model: {str(exc).splitlines()[0]}") from None

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Parameter gradients off: ART's backward would otherwise leave .grad on the weights.
        with frozen_eval(model):
            x_np = x.detach().cpu().numpy().astype(np.float32)
            x_adv = aa.generate(x=x_np, y=y.detach().cpu().numpy())
        return torch.from_numpy(x_adv).to(device=x.device, dtype=x.dtype)

    return attack


def art_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   version: str = "standard", batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """ART's AutoAttack on ``x`` ``(B, C, H, W)`` in [0, 1] with true labels ``y``; verified, detached ``x_adv``.

    ART draws from ``random``, NumPy's and torch's global generators, so all three are seeded.
    """
    seed_everything(seed)
    x_adv = make_art_autoattack(model, x, eps=eps, norm=norm, version=version, batch_size=batch_size)(x, y)
    return keep_in_threat_model(x, x_adv, eps, norm).detach()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
