"""The ``advgan`` method: a one-step generator trained with AdvGAN's objective and discriminator
(Xiao et al. 2018, arXiv:1801.02610), inside :class:`.generator_methods.GeneratorTraining`'s
loop (its passes counted the same way)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.generator import Discriminator
from .generator_methods import GeneratorTraining, cw_margin
from .hparams import HParams
from .methods import register_method
from .parallel import SINGLE_PROCESS, DataParallel

__all__ = ["AdvGANTraining"]


class AdvGANTraining(GeneratorTraining):
    """The ``advgan`` method: AdvGAN's generator objective (Xiao et al. 2018, Eq. 4) and discriminator.

    ``L_G = L_adv + alpha * L_GAN + beta * L_hinge`` with ``L_adv`` the C&W margin (kappa = 0),
    ``L_GAN`` the non-saturating form ``-log D(x + delta)`` of the paper's ``log(1 - D(x + delta))``,
    and ``L_hinge = max(0, ||delta||_2 - c)``, ``c = hinge * eps * sqrt(C H W)`` for L-inf (a fraction
    of the largest L2 norm the ball allows) or ``hinge * eps`` for L2. D learns clean = real.
    """

    def __init__(self, in_channels: int, *, alpha: float = 1.0, beta: float = 1.0, hinge: float = 0.5,
                 width: int = 16, grad_input: bool = False, frozen: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu"):
        super().__init__(in_channels, arch="onestep", width=width, grad_input=grad_input, frozen=frozen, seed=seed,
                         device=device)
        self.alpha, self.beta, self.hinge = alpha, beta, hinge
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.disc = Discriminator(in_channels).to(device)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def hinge_bound(self, x: torch.Tensor, eps: float, norm: str) -> float:
        return self.hinge * eps * (math.sqrt(x[0].numel()) if norm == "linf" else 1.0)

    def generator_loss(self, model, x, y, delta, hp: HParams, norm: str, x_in=None):
        logits = model(x + delta if x_in is None else x_in)
        adv = cw_margin(logits, y).mean()
        d_fake = self.disc(x + delta)
        gan = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        hinge = (delta.flatten(1).norm(dim=1) - self.hinge_bound(x, hp.eps, norm)).clamp_min(0).mean()
        loss = adv + self.alpha * gan + self.beta * hinge
        return loss, logits, {"adv_loss": adv.item(), "gan_loss": gan.item(), "hinge_loss": hinge.item()}

    def after_generator_step(self, x, x_adv, hp: HParams, *, parallel: DataParallel = SINGLE_PROCESS,
                             weight: float = 1.0) -> dict:
        for group in self.disc_opt.param_groups:
            group["lr"] = hp.gen_lr
        d_real, d_fake = self.disc(x), self.disc(x_adv)
        loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.disc_opt.zero_grad(set_to_none=True)
        (loss if weight == 1.0 else loss * weight).backward()
        parallel.average_gradients(self.disc.parameters())
        self.disc_opt.step()
        return {"disc_loss": loss.item()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "discriminator": self.disc.state_dict(), "disc_optimizer": self.disc_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.disc.load_state_dict(state["discriminator"])
        self.disc_opt.load_state_dict(state["disc_optimizer"])


def _advgan_factory(config, info, device) -> AdvGANTraining:
    return AdvGANTraining(info.shape[0], alpha=config.advgan_alpha, beta=config.advgan_beta, hinge=config.advgan_hinge,
                          width=config.gen_width, grad_input=config.gen_grad_input, frozen=config.gen_frozen,
                          seed=config.seed + 101, device=device)


# G(x) alone, as in the paper; the guard against catastrophic overfitting on for every generator method.
register_method("advgan", _advgan_factory, {"gen_grad_input": False, "gen_arch": "onestep", "co_guard": True})
