"""Training against a learned attacker: meta-generator, AdvGAN, and meta-adversarial training.

Each classifier step first trains a perturbation generator against the current classifier
(``gen_steps`` Adam steps of gradient ascent on the classifier's loss), then updates the
classifier on the generator's examples; a fraction ``1 - gen_fraction`` of each batch is attacked
by PGD instead. This is adversarial training with an adversarial transformation network as the
attacker (Baluja & Fischer 2017, arXiv:1703.09387); ``advgan`` swaps the generator's objective
for AdvGAN's (Xiao et al. 2018, arXiv:1801.02610): a C&W margin, plus ``alpha`` times a GAN loss
against a discriminator, plus ``beta`` times a hinge on the perturbation's L2 norm.

Cost (``StepOutput.passes``) counts forward+backward passes through the *classifier* only: the
gradient-sign input (1 per generator example), each generator step (1), PGD's steps, and the
update (1, or 2 with a clean term). Generator- and discriminator-only passes are not counted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..attacks import cross_entropy, frozen_eval, pgd
from ..attacks._common import input_grad
from ..attacks.projection import random_start
from ..models.generator import Discriminator, PerturbationGenerator
from .hparams import HParams
from .methods import StepContext, StepOutput, _mixed_loss, attacker, register_method
from .parallel import SINGLE_PROCESS, DataParallel

__all__ = ["AdvGANTraining", "GeneratorTraining", "cw_margin", "grad_sign", "perturbation_norm"]


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Untargeted C&W loss ``max(Z_y - max_{i != y} Z_i, -kappa)`` per example (AdvGAN's L_adv)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).amax(1)
    return (true - other).clamp_min(-kappa)


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example size of ``delta`` in the threat model's norm, ``(B,)``."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def grad_sign(model, x, y, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """``sign(grad_x CE)`` at a random point of the eps-ball: one classifier pass per example.

    The random start is Wong et al. 2020's fix for FGSM training's catastrophic overfitting.
    """
    with frozen_eval(model):
        start = x + random_start(x, torch.full((len(x), 1, 1, 1), eps, device=x.device, dtype=x.dtype), norm, generator)
        grad, _, _ = input_grad(model, start, y, cross_entropy)
    return grad.sign()


class GeneratorTraining:
    """The ``meta-generator`` method: a :class:`~metaadv.training.methods.Method` with a generator.

    Its objective is plain gradient ascent on the classifier's cross-entropy; ``gen/loss`` is
    the generator's own (minimised) loss, here ``-CE``.
    """

    def __init__(self, in_channels: int, *, width: int = 16, grad_input: bool = True, seed: int = 0,
                 device: torch.device | str = "cpu"):
        with torch.random.fork_rng(devices=[]):  # explicit init, and the global stream is left alone
            torch.manual_seed(seed)
            self.gen = PerturbationGenerator(in_channels, width, grad_input).to(device)
        self.gen_opt = torch.optim.Adam([p for p in self.gen.parameters() if p.requires_grad], lr=1e-3)
        self._tally: dict[str, float] = {}

    # -- the generator's objective ------------------------------------------------------------
    def generator_loss(self, model, x, y, delta, hp: HParams, norm: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(loss to minimise, classifier logits on x + delta, extra scalars for the tally)."""
        logits = model(x + delta)
        return -F.cross_entropy(logits, y), logits, {}

    def after_generator_step(self, x, x_adv, hp: HParams, *, parallel: DataParallel = SINGLE_PROCESS,
                             weight: float = 1.0) -> dict:
        """Hook for AdvGAN's discriminator update; returns extra scalars for the tally."""
        return {}

    # -- training ------------------------------------------------------------------------------
    def train_generator(self, model, x, y, hp: HParams, norm: str, rng: torch.Generator | None, *,
                        parallel: DataParallel = SINGLE_PROCESS, weight: float = 1.0) -> tuple[torch.Tensor, int]:
        """``gen_steps`` updates against ``model``; returns (x_adv, classifier passes).

        x_adv is the last step's examples, made just before that step's update: remaking them with
        the updated generator would cost one more generator pass for a change of one Adam step.

        Data-parallel (``parallel`` of several workers, each holding a slice of the batch): the
        loss is scaled by the slice's ``weight`` and the generator's gradients averaged over
        workers before each step, so every worker's generator takes the global batch's step.
        """
        sign = grad_sign(model, x, y, hp.eps, norm, rng) if self.gen.grad_input else None
        for group in self.gen_opt.param_groups:
            group["lr"] = hp.gen_lr
        for _ in range(hp.gen_steps):
            with frozen_eval(model), torch.enable_grad():
                delta = self.gen.perturb(x, hp.eps, norm, sign)
                loss, logits, extra = self.generator_loss(model, x, y, delta, hp, norm)
                self.gen_opt.zero_grad(set_to_none=True)
                (loss if weight == 1.0 else loss * weight).backward()  # classifier frozen: generator gradients only
                parallel.average_gradients(self.gen.parameters())
                self.gen_opt.step()
            extra.update(self.after_generator_step(x, (x + delta).detach(), hp, parallel=parallel, weight=weight))
        delta = delta.detach()
        n = len(y) if weight else 0  # a placeholder slice (metaadv/training/parallel.py) holds no examples
        self._count(n, loss.item(), (logits.argmax(1) != y).sum().item() if n else 0,
                    perturbation_norm(delta, norm).sum().item() if n else 0.0, extra,
                    share=weight / parallel.world_size)
        self._parallel = parallel
        return (x + delta).detach(), len(y) * (hp.gen_steps + (1 if sign is not None else 0))

    def step(self, model, x, y, hp: HParams, ctx: StepContext) -> StepOutput:
        x_adv, attack_passes = x, 0
        if hp.eps > 0:
            # The batch is already a random draw, so its first gen_fraction is a random subset.
            n_gen = round(hp.gen_fraction * len(y))
            parts = []
            # Data-parallel with gen_fraction < 1, each worker splits its own slice: the same share
            # of examples goes to each attacker, not the same examples as in one process. Every
            # worker gives the generator at least one, so all take part in its gradient all-reduce.
            if ctx.parallel.world_size > 1 and hp.gen_fraction > 0:
                n_gen = max(n_gen, 1)
            frozen = attacker(model, ctx)
            if n_gen:
                x_gen, attack_passes = self.train_generator(frozen, x[:n_gen], y[:n_gen], hp, ctx.norm, ctx.generator,
                                                            parallel=ctx.parallel, weight=ctx.loss_weight)
                parts.append(x_gen)
            if n_gen < len(y):
                parts.append(pgd(frozen, x[n_gen:], y[n_gen:], eps=hp.eps, step_size=hp.step_size, steps=hp.steps,
                                 norm=ctx.norm, generator=ctx.generator))
                attack_passes += (len(y) - n_gen) * hp.steps
            x_adv = torch.cat(parts)
        loss, logits_adv, passes = _mixed_loss(model, x, x_adv, y, hp.adv_mix)
        # Per example, so the trainer's passes * batch gives the exact total (a float when mixed).
        return StepOutput(loss, logits_adv, passes + attack_passes / len(y))

    # -- the row and the checkpoint ------------------------------------------------------------
    def _count(self, n: int, loss: float, fooled: int, norm_sum: float, extra: dict, share: float = 1.0) -> None:
        """Tally one batch. Per-batch means (the losses) count with this process's ``share`` of the
        global batch, so that their sum over data-parallel processes is the global batch's mean."""
        t = self._tally
        means = {"batches": 1, "loss": loss, **extra}
        for key, value in {"n": n, "fooled": fooled, "norm": norm_sum, **{k: share * v for k, v in means.items()}}.items():
            t[key] = t.get(key, 0.0) + value

    def round_metrics(self) -> dict[str, float]:
        """``gen/*`` for the round just trained (NaN when the generator made no examples); resets."""
        t, self._tally = self._reduce_tally(self._tally), {}
        batches, n = t.pop("batches", 0), t.pop("n", 0)
        nan = math.nan
        row = {"gen/loss": t.pop("loss", nan) / max(batches, 1), "gen/fooling_rate": t.pop("fooled", nan) / max(n, 1),
               "gen/perturbation_norm": t.pop("norm", nan) / max(n, 1)}
        row.update({f"gen/{k}": v / max(batches, 1) for k, v in t.items()})
        return row

    def _reduce_tally(self, tally: dict) -> dict:
        """The tally summed over data-parallel processes (each holds its slices' part)."""
        parallel = getattr(self, "_parallel", SINGLE_PROCESS)
        if parallel.world_size == 1 or not tally:
            return tally
        keys = list(tally)  # the same order on every process: the same batches added the same keys
        totals = parallel.sum(torch.tensor([float(tally[k]) for k in keys], dtype=torch.float64))
        return dict(zip(keys, totals.tolist()))

    def state_dict(self) -> dict:
        return {"generator": self.gen.state_dict(), "generator_kwargs": self.gen.kwargs(),
                "gen_optimizer": self.gen_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.load_state_dict(state["generator"])
        self.gen_opt.load_state_dict(state["gen_optimizer"])


class AdvGANTraining(GeneratorTraining):
    """The ``advgan`` method: AdvGAN's generator objective (Xiao et al. 2018, Eq. 4) and discriminator.

    ``L_G = L_adv + alpha * L_GAN + beta * L_hinge`` with ``L_adv`` the C&W margin (kappa = 0),
    ``L_GAN`` the non-saturating form ``-log D(x + delta)`` of the paper's ``log(1 - D(x + delta))``,
    and ``L_hinge = max(0, ||delta||_2 - c)``, ``c = hinge * eps * sqrt(C H W)`` for L-inf (a fraction
    of the largest L2 norm the ball allows) or ``hinge * eps`` for L2. D learns clean = real.
    """

    def __init__(self, in_channels: int, *, alpha: float = 1.0, beta: float = 1.0, hinge: float = 0.5,
                 width: int = 16, grad_input: bool = False, seed: int = 0, device: torch.device | str = "cpu"):
        super().__init__(in_channels, width=width, grad_input=grad_input, seed=seed, device=device)
        self.alpha, self.beta, self.hinge = alpha, beta, hinge
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.disc = Discriminator(in_channels).to(device)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def hinge_bound(self, x: torch.Tensor, eps: float, norm: str) -> float:
        return self.hinge * eps * (math.sqrt(x[0].numel()) if norm == "linf" else 1.0)

    def generator_loss(self, model, x, y, delta, hp: HParams, norm: str):
        logits = model(x + delta)
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


def _generator_factory(config, info, device) -> GeneratorTraining:
    return GeneratorTraining(info.shape[0], width=config.gen_width, grad_input=config.gen_grad_input,
                             seed=config.seed + 101, device=device)


def _advgan_factory(config, info, device) -> AdvGANTraining:
    return AdvGANTraining(info.shape[0], alpha=config.advgan_alpha, beta=config.advgan_beta, hinge=config.advgan_hinge,
                          width=config.gen_width, grad_input=config.gen_grad_input, seed=config.seed + 101, device=device)


register_method("meta-generator", _generator_factory)
register_method("advgan", _advgan_factory, {"gen_grad_input": False})  # G(x) alone, as in the paper
# meta-adv = meta-generator driven by the REINFORCE policy. The generator makes every example, so
# the policy leaves PGD's steps and step ratio alone; any of these can still be given explicitly.
register_method("meta-adv", _generator_factory, {"controller": "policy", "policy_steps": (), "policy_step_ratio": ()})
