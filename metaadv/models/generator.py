"""Perturbation generators and the AdvGAN discriminator.

``PerturbationGenerator`` maps a batch of images (and, optionally, the sign of the classifier's
input gradient) to a perturbation inside the threat model in one forward pass: the adversarial
transformation network of Baluja & Fischer 2017 (arXiv:1703.09387), and the generator of AdvGAN
(Xiao et al. 2018, arXiv:1801.02610). ``RecursiveGenerator`` is one step of a learned attack
unrolled for K steps, each reading a fresh input gradient: the recursive generator of L2L-DA
(Jang et al., ICCV 2019, "Adversarial Defense via Learning to Generate Diverse Attacks").
Images are ``(B, C, H, W)`` in [0, 1]; eps is in [0, 1] pixel units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import per_example, project

__all__ = ["Discriminator", "PerturbationGenerator", "RecursiveGenerator", "bounded_perturbation", "normalized_grad"]


def bounded_perturbation(raw: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Squash an unbounded ``raw`` output into the eps-ball with ``x + delta`` in [0, 1].

    L-inf: ``eps * tanh(raw)``, smooth and inside the ball, so the generator's gradient never
    vanishes at the boundary the way a hard clamp's does. L2: the ball projection. Either way the
    result goes through :func:`metaadv.attacks.project`, the one projection everybody uses.
    """
    eps_b = per_example(eps, x)
    delta = eps_b * torch.tanh(raw) if norm == "linf" else raw
    return project(delta, x, eps_b, norm)


def encoder_decoder(c_in: int, width: int, c_out: int) -> tuple[nn.Module, nn.Module]:
    """The generators' body: two 3x3 convolutions (the second at stride 2: a 7-pixel receptive
    field at half resolution), then one 3x3 convolution back to ``c_out`` channels after upsampling."""
    encode = nn.Sequential(
        nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
    )
    return encode, nn.Conv2d(width, c_out, 3, padding=1)


class PerturbationGenerator(nn.Module):
    """A small fully convolutional generator: ``(B, C, H, W)`` -> raw perturbation ``(B, C, H, W)``.

    conv - strided conv - upsample - conv: the middle layer works at half resolution, so the
    generator costs a fraction of the classifier's forward pass (its time is the overhead that
    cost/grad_evals does not count).

    With ``grad_input=True`` it also reads ``sign(grad_x loss)`` (one extra classifier pass per
    example) and adds ``gain * sign`` to its output: it starts as FGSM without a random start
    (Goodfellow et al. 2015) and learns what FGSM misses, instead of starting from nothing.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, grad_input: bool = True):
        super().__init__()
        self.in_channels, self.width, self.grad_input = in_channels, width, grad_input
        self.encode, self.decode = encoder_decoder(in_channels * (2 if grad_input else 1), width, in_channels)
        # tanh(2) = 0.96: the initial L-inf output is almost eps * sign, i.e. FGSM.
        self.gain = nn.Parameter(torch.tensor(2.0 if grad_input else 0.0), requires_grad=grad_input)
        # NHWC convolutions: about 2x faster forward+backward on CPU for so few channels.
        self.to(memory_format=torch.channels_last)

    def kwargs(self) -> dict:
        """Constructor arguments (stored beside the weights in checkpoints)."""
        return {"in_channels": self.in_channels, "width": self.width, "grad_input": self.grad_input}

    def forward(self, x: torch.Tensor, grad_sign: torch.Tensor | None = None) -> torch.Tensor:
        if self.grad_input and grad_sign is None:
            raise ValueError("this generator reads the input-gradient sign; pass grad_sign")
        h = self.encode(torch.cat([2 * x - 1, grad_sign], dim=1) if self.grad_input else 2 * x - 1)
        raw = self.decode(F.interpolate(h, size=x.shape[-2:], mode="nearest"))
        return raw + self.gain * grad_sign if self.grad_input else raw

    def perturb(self, x: torch.Tensor, eps, norm: str, grad_sign: torch.Tensor | None = None) -> torch.Tensor:
        """``delta`` with ``||delta|| <= eps`` and ``x + delta`` in [0, 1]; differentiable in the weights."""
        return bounded_perturbation(self(x, grad_sign), x, eps, norm)


def normalized_grad(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` scaled per example to unit root-mean-square (L2L-DA normalises each image's gradient;
    unit RMS rather than unit norm keeps the generator's input on the scale of the pixels at any size)."""
    flat = grad.flatten(1)
    rms = flat.norm(dim=1).clamp_min(1e-12) / flat.shape[1] ** 0.5
    return grad / rms.view(-1, *([1] * (grad.dim() - 1)))


class RecursiveGenerator(nn.Module):
    """One step of a learned attack: ``[x, delta_t, grad_t (, noise)] -> delta_{t+1}`` (L2L-DA's generator).

    Reads the image, the running perturbation (in units of the ball: ``delta / eps`` for L-inf,
    ``delta * sqrt(d) / eps`` for L2, so both are about [-1, 1] per pixel), the classifier's input
    gradient at ``x + delta_t`` normalised per example (:func:`normalized_grad`) and, with
    ``noise=True``, a Gaussian noise map (L2L-DA's z, for diverse attacks). The update is
    ``step * tanh(raw)`` (L-inf) or ``step * raw / max(||raw||_2, sqrt(d))`` (L2): at most one step
    long, smooth, so the generator's gradient does not die inside the step. ``raw`` adds
    ``gain * grad_t`` (gain learnable, initially 2): the untrained generator is a soft-sign PGD
    step, and training learns corrections to it, as :class:`PerturbationGenerator` starts as FGSM.
    The new perturbation goes through the one shared projection.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, noise: bool = False):
        super().__init__()
        self.in_channels, self.width, self.noise = in_channels, width, noise
        self.encode, self.decode = encoder_decoder(in_channels * (4 if noise else 3), width, in_channels)
        self.gain = nn.Parameter(torch.tensor(2.0))
        self.to(memory_format=torch.channels_last)

    def kwargs(self) -> dict:
        """Constructor arguments (stored beside the weights in checkpoints)."""
        return {"in_channels": self.in_channels, "width": self.width, "noise": self.noise}

    def forward(self, x: torch.Tensor, delta_in: torch.Tensor, grad_n: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.noise != (noise is not None):
            raise ValueError("this generator reads a noise map" if self.noise else "this generator reads no noise map")
        parts = [2 * x - 1, delta_in, grad_n] + ([noise] if noise is not None else [])
        h = self.encode(torch.cat(parts, dim=1))
        return self.decode(F.interpolate(h, size=x.shape[-2:], mode="nearest")) + self.gain * grad_n

    def step(self, x: torch.Tensor, delta: torch.Tensor, grad_n: torch.Tensor, eps: torch.Tensor, step: torch.Tensor,
             norm: str, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``delta_{t+1}`` from ``delta_t``: inside the eps-ball, ``x + delta`` in [0, 1]; differentiable in the
        weights and in ``delta``. ``eps`` and ``step`` are shaped by :func:`metaadv.attacks.per_example`."""
        d = x[0].numel()
        unit = eps if norm == "linf" else eps / d**0.5  # the ball's size per pixel
        raw = self(x, delta / unit.clamp_min(1e-12), grad_n, noise)
        if norm == "linf":
            update = torch.tanh(raw)
        else:
            norms = raw.flatten(1).norm(dim=1).clamp_min(d**0.5).view(-1, *([1] * (x.dim() - 1)))
            update = raw / norms
        return project(delta + step * update, x, eps, norm)


class Discriminator(nn.Module):
    """AdvGAN's discriminator: ``(B, C, H, W)`` in [0, 1] -> one logit per image (real = clean).

    Strided convolutions then a global average, so one network serves 8x8 and 32x32 images alike.
    """

    def __init__(self, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1),
        )
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1).squeeze(1)
