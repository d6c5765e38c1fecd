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

__all__ = ["PRECISIONS", "AutocastForward", "autocast", "cpu_vector_flags", "emulated_bf16_warning", "native_bf16",
           "resolve_precision", "with_precision"]

PRECISIONS = ("auto", "fp32", "bf16")
# A PGD-10 AT round under bf16 autocast against fp32, on a 2-core AMD EPYC with AVX2 and FMA but no
# AVX-512 or AMX (two 20-step rounds each, one process; issue 19): emulated bf16 is no saving.
EMULATED_BF16_SLOWDOWN = 10.6


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 in hardware rather than emulating it."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def cpu_vector_flags() -> str:
    """The CPU's vector flags that decide its kernels (avx2, fma, avx512*, amx*), as lscpu lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return "unknown"
    flags = [f for f in line.split(":", 1)[-1].split() if f in ("avx2", "fma") or f.startswith(("avx512", "amx"))]
    return " ".join(flags) or "no avx2"


def emulated_bf16_warning(precision: str, device: torch.device) -> str | None:
    """One line to print at the start of a run that asked for bf16 where it is emulated; else None."""
    if precision != "bf16" or native_bf16(device):
        return None
    where = f"this CPU ({cpu_vector_flags()})" if device.type == "cpu" else f"device {device}"
    return (f"warning: --precision bf16 on {where} is emulated, not native (no AVX512-BF16 or AMX): expect it "
            f"to be slower than fp32 (a PGD-10 AT round took {EMULATED_BF16_SLOWDOWN}x as long on an AVX2 CPU); "
            "--precision auto picks fp32 here")


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
