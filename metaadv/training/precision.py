"""Mixed precision for attack and training steps: bf16 autocast around the classifier's forward.

Adversarial training spends most of its time in attack steps, and an L-inf step needs only the
sign of the input gradient, which bf16 keeps for almost every pixel. Only the model's forward
runs under ``torch.autocast(..., dtype=torch.bfloat16)``; its logits come back as fp32, so every
loss, the optimizer state and the backward's accumulation into fp32 parameters stay fp32 (bf16
has fp32's exponent range: no GradScaler). Validation and ``metaadv evaluate`` never use it.

Precisions: ``fp32`` (the default, so that tables and tests do not move with the machine),
``bf16``, and ``auto``: bf16 where the device computes it natively (a CUDA device with bf16
support; a CPU with AVX512-BF16 or AMX, as torch detects them), fp32 elsewhere, since emulated
bf16 is slower than fp32.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["PRECISIONS", "AutocastForward", "autocast", "native_bf16", "resolve_precision", "with_precision"]

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 in hardware rather than emulating it."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for this device; ``fp32`` and ``bf16`` stay as asked."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def autocast(precision: str, device: torch.device):
    """The autocast context for a resolved precision (a no-op context for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class AutocastForward(nn.Module):
    """``model`` whose forward runs under bf16 autocast and returns fp32 logits.

    The model is a registered child, so ``eval()``/``train()``, ``parameters()`` and the attacks'
    ``frozen_eval`` reach it; the wrapper holds no weights of its own and is never saved.
    """

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model = model
        self.device_type = device.type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            logits = self.model(x)
        return logits.float()


def with_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``model`` itself for fp32; wrapped in :class:`AutocastForward` for bf16."""
    return AutocastForward(model, device) if precision == "bf16" else model
