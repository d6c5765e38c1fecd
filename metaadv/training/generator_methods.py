"""Training against a learned attacker: meta-generator and meta-adversarial training (AdvGAN, the
same with a discriminator: :mod:`.advgan`).

Each classifier step first trains a perturbation generator against the current classifier
(``gen_steps`` Adam steps of gradient ascent on the classifier's loss), then updates the
classifier on the generator's examples, each followed by ``gen_final_steps`` signed-gradient
steps (FGSM-SDI, Jia et al. 2022, arXiv:2110.05007); a fraction ``1 - gen_fraction`` of each
batch is attacked by PGD instead. This is adversarial training with a learned attacker. Three
attackers (``gen_arch``):

- ``recursive``: L2L-DA's recursive generator (Jang et al., ICCV 2019), unrolled for
  ``gen_unroll`` steps of at most ``gen_step_ratio * eps`` from ``delta_0 = 0`` (``gen_start``:
  or a uniform random point of the ball), each reading a fresh input gradient
  (:mod:`metaadv.training.generator_unroll`); optional noise input and diversity term;
- ``onestep``: an adversarial transformation network (Baluja & Fischer 2017, arXiv:1703.09387),
  reading ``x`` and optionally ``sign(grad_x loss)``; ``advgan`` uses it with AdvGAN's objective
  (Xiao et al. 2018, arXiv:1801.02610): a C&W margin, plus ``alpha`` times a GAN loss against a
  discriminator, plus ``beta`` times a hinge on the perturbation's L2 norm;
- ``noise``: the control, no generator: a uniform random point of the ball, then the final steps
  (with one final step this is Wong et al. 2020's FGSM from a random start).

Cost (``StepOutput.passes``) counts backward passes through the *classifier* (each with its
forward): every gradient read (the gradient-sign input, each unroll step's read, each final step
but a first one that reuses the generator loss's gradient), each generator loss term, PGD's
steps, and the update (1, or 2 with a clean term). Generator- and discriminator-only passes are
not counted.

``frozen`` (config ``gen_frozen``): the control that isolates the learning. The generator keeps its
initial weights; it makes its examples once per batch with no loss terms and no update, so it spends
no passes on learning (the first final step then reads its own gradient, one pass, where the learned
generator reuses its loss term's): with ``gen_steps=1`` and the last step's loss only, the frozen and
the learned generator spend the same classifier passes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..attacks import cross_entropy, frozen_eval, pgd
from ..attacks._common import input_grad
from ..attacks.noise import draw
from ..attacks.projection import per_example, random_start
from ..models.generator import PerturbationGenerator, RecursiveGenerator
from .generator_unroll import final_steps, unroll, unroll_passes
from .hparams import HParams
from .methods import StepContext, StepOutput, _mixed_loss, attacker, register_method
from .parallel import SINGLE_PROCESS, DataParallel

__all__ = ["GEN_ARCHS", "GEN_STARTS", "GeneratorTraining", "cw_margin", "grad_sign", "perturbation_norm"]

GEN_ARCHS = ("recursive", "onestep", "noise")
GEN_STARTS = ("zero", "random")  # the recursive generator's delta_0: L2L-DA's zero, or a uniform point of the ball


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Untargeted C&W loss ``max(Z_y - max_{i != y} Z_i, -kappa)`` per example (AdvGAN's L_adv)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).amax(1)
    return (true - other).clamp_min(-kappa)


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example size of ``delta`` in the threat model's norm, ``(B,)``."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _random_point(x, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    return random_start(x, torch.full((len(x), 1, 1, 1), eps, device=x.device, dtype=x.dtype), norm, generator)


def grad_sign(model, x, y, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """``sign(grad_x CE)`` at a random point of the eps-ball: one classifier pass per example.

    The random start is Wong et al. 2020's fix for FGSM training's catastrophic overfitting.
    """
    with frozen_eval(model):
        grad, _, _ = input_grad(model, x + _random_point(x, eps, norm, generator), y, cross_entropy)
    return grad.sign()


class GeneratorTraining:
    """The ``meta-generator`` method: a :class:`~metaadv.training.methods.Method` with a learned attacker.

    Its objective is plain gradient ascent on the classifier's cross-entropy; ``gen/loss`` is
    the generator's own (minimised) loss, here ``-CE`` (for ``recursive``, weighted over the unroll's
    steps by ``discount ** (K - t)``: the last step's alone by default).
    """

    def __init__(self, in_channels: int, *, arch: str = "onestep", width: int = 16, grad_input: bool = True,
                 noise: bool = False, diversity: float = 0.0, discount: float = 0.0, start: str = "zero",
                 frozen: bool = False, train_copies: int = 1, seed: int = 0, device: torch.device | str = "cpu"):
        if arch not in GEN_ARCHS:
            raise ValueError(f"unknown generator architecture {arch!r}; expected one of {GEN_ARCHS}")
        if diversity > 0 and not (arch == "recursive" and noise):
            raise ValueError("the diversity term compares two noise draws: it needs arch='recursive' and noise=True")
        if start not in GEN_STARTS:
            raise ValueError(f"unknown start {start!r}; expected one of {GEN_STARTS}")
        if frozen and (arch == "noise" or diversity > 0):
            raise ValueError("a frozen generator needs a generator (not arch='noise') and trains no diversity term")
        if train_copies not in (1, 2) or (train_copies == 2 and diversity <= 0):
            raise ValueError("train_copies is 1, or 2 (both noise draws of the diversity term) with diversity > 0")
        self.frozen, self.train_copies = frozen, train_copies
        self.arch, self.diversity, self.discount, self.start = arch, diversity, discount, start
        with torch.random.fork_rng(devices=[]):  # explicit init, and the global stream is left alone
            torch.manual_seed(seed)
            if arch == "onestep":
                self.gen = PerturbationGenerator(in_channels, width, grad_input).to(device)
            elif arch == "recursive":
                self.gen = RecursiveGenerator(in_channels, width, noise).to(device)
            else:
                self.gen = None  # the noise control learns nothing
        params = [p for p in self.gen.parameters() if p.requires_grad] if self.gen is not None else []
        self.gen_opt = torch.optim.Adam(params, lr=1e-3) if params else None
        self._tally: dict[str, float] = {}

    # -- the generator's objective ------------------------------------------------------------
    def generator_loss(self, model, x, y, delta, hp: HParams, norm: str, x_in=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(loss to minimise, classifier logits on x + delta, extra scalars for the tally).

        ``x_in`` is the classifier's input node (``x + delta``, made by the caller so that its gradient is
        the classifier term's alone: the first final step reuses it)."""
        logits = model(x + delta if x_in is None else x_in)
        return -F.cross_entropy(logits, y), logits, {}

    def after_generator_step(self, x, x_adv, hp: HParams, *, parallel: DataParallel = SINGLE_PROCESS,
                             weight: float = 1.0) -> dict:
        """Hook for AdvGAN's discriminator update; returns extra scalars for the tally."""
        return {}

    # -- training ------------------------------------------------------------------------------
    def train_generator(self, model, x, y, hp: HParams, norm: str, rng: torch.Generator | None, *,
                        parallel: DataParallel = SINGLE_PROCESS, weight: float = 1.0) -> tuple[torch.Tensor, int]:
        """``gen_steps`` updates against ``model``, then ``gen_final_steps`` gradient steps; returns
        (x_adv, classifier passes summed over the examples).

        x_adv is the last generator step's examples, made just before that step's update: remaking them
        with the updated generator would cost one more generator pass for a change of one Adam step.

        Data-parallel (``parallel`` of several workers, each holding a slice of the batch): the
        loss is scaled by the slice's ``weight`` and the generator's gradients averaged over
        workers before each step, so every worker's generator takes the global batch's step.
        """
        if self.gen_opt is not None:
            for group in self.gen_opt.param_groups:
                group["lr"] = hp.gen_lr
        if self.frozen:
            delta, descent, passes, loss, logits, extra = self._frozen_examples(model, x, y, hp, norm, rng)
        elif self.arch == "noise":
            delta, descent, passes, loss, logits, extra = _random_point(x, hp.eps, norm, rng), None, 0, 0.0, None, {}
        elif self.arch == "recursive":
            delta, descent, passes, loss, logits, extra = self._train_recursive(model, x, y, hp, norm, rng, parallel, weight)
        else:
            delta, descent, passes, loss, logits, extra = self._train_onestep(model, x, y, hp, norm, rng, parallel, weight)
        # gen/* describe the generator's own examples (before the final steps): how strong the learned part is.
        n = len(y) if weight else 0  # a placeholder slice (metaadv/training/parallel.py) holds no examples
        fooled = (logits.argmax(1) != y).sum().item() if logits is not None and n else 0
        self._count(n, loss, fooled, perturbation_norm(delta[: len(y)], norm).sum().item() if n else 0.0, extra,
                    share=weight / parallel.world_size)
        copies = len(delta) // len(y)  # 2: both noise draws' examples train the classifier (train_copies)
        if copies > 1:
            x, y = x.repeat(copies, 1, 1, 1), y.repeat(copies)
        self._parallel = parallel
        # Per example, with no parameter update: the first step's gradient is the slice's rows of the
        # global batch's (up to the weight's positive scale, which the step's sign or direction drops).
        eps_b = per_example(hp.eps, x)
        delta, final_passes = final_steps(model, x, y, delta, steps=hp.gen_final_steps, eps_b=eps_b,
                                          step_b=eps_b * hp.gen_final_ratio, norm=norm, descent_grad=descent)
        return (x + delta).detach(), passes + len(y) * final_passes

    def _frozen_examples(self, model, x, y, hp: HParams, norm: str, rng):
        """The frozen generator's examples: its reads (the gradient sign; the unroll's K gradients) and no
        loss term, no update. No descent gradient comes back: the first final step pays for its own read."""
        n = len(y)
        with frozen_eval(model), torch.enable_grad():
            if self.arch == "onestep":
                sign = grad_sign(model, x, y, hp.eps, norm, rng) if self.gen.grad_input else None
                delta = self.gen.perturb(x, hp.eps, norm, sign)
                with torch.no_grad():
                    logits = model(x + delta)
                return delta.detach(), None, n * (1 if sign is not None else 0), -F.cross_entropy(logits, y).item(), logits, {}
            eps_b = per_example(hp.eps, x)
            delta0 = _random_point(x, hp.eps, norm, rng) if self.start == "random" else torch.zeros_like(x)
            grad0, _, _ = input_grad(model, x + delta0, y, cross_entropy)
            noise = draw(torch.randn, x.shape, rng, x.device, x.dtype) if self.gen.noise else None
            out = unroll(model, self.gen, x, y, delta0=delta0, grad0=grad0, eps_b=eps_b, step_b=eps_b * hp.gen_step_ratio,
                         steps=hp.gen_unroll, norm=norm, discount=0.0, noise=noise)
        # The last step's cross-entropy is a forward only (logged as gen/loss, never back-propagated): not a pass.
        return out.delta.detach(), None, n * hp.gen_unroll, out.loss.item(), out.logits.detach(), {}

    def _train_onestep(self, model, x, y, hp: HParams, norm: str, rng, parallel: DataParallel, weight: float):
        sign = grad_sign(model, x, y, hp.eps, norm, rng) if self.gen.grad_input else None
        for _ in range(hp.gen_steps):
            with frozen_eval(model), torch.enable_grad():
                delta = self.gen.perturb(x, hp.eps, norm, sign)
                x_in = x + delta
                x_in.retain_grad()
                loss, logits, extra = self.generator_loss(model, x, y, delta, hp, norm, x_in)
                self.gen_opt.zero_grad(set_to_none=True)
                (loss if weight == 1.0 else loss * weight).backward()  # classifier frozen: generator gradients only
                parallel.average_gradients(self.gen.parameters())
                self.gen_opt.step()
            extra.update(self.after_generator_step(x, (x + delta).detach(), hp, parallel=parallel, weight=weight))
        passes = len(y) * (hp.gen_steps + (1 if sign is not None else 0))
        return delta.detach(), x_in.grad, passes, loss.item(), logits.detach(), extra

    def _train_recursive(self, model, x, y, hp: HParams, norm: str, rng, parallel: DataParallel, weight: float):
        eps_b = per_example(hp.eps, x)
        copies = 2 if self.diversity > 0 else 1  # the diversity term compares two noise draws per image
        with frozen_eval(model):
            delta0 = _random_point(x, hp.eps, norm, rng) if self.start == "random" else torch.zeros_like(x)
            grad0, _, _ = input_grad(model, x + delta0, y, cross_entropy)
        xs, ys, d0, g0, eps_bs = (t.repeat(copies, *([1] * (t.dim() - 1))) for t in (x, y, delta0, grad0, eps_b))
        for _ in range(hp.gen_steps):
            noise = draw(torch.randn, xs.shape, rng, x.device, x.dtype, copies=copies) if self.gen.noise else None
            with frozen_eval(model), torch.enable_grad():
                out = unroll(model, self.gen, xs, ys, delta0=d0, grad0=g0, eps_b=eps_bs, step_b=eps_bs * hp.gen_step_ratio,
                             steps=hp.gen_unroll, norm=norm, discount=self.discount, noise=noise)
                loss, extra = out.loss, {}
                if copies == 2:
                    spread = _diversity(out.delta, noise)
                    loss = loss - self.diversity * spread
                    extra["diversity"] = spread.item()
                self.gen_opt.zero_grad(set_to_none=True)
                (loss if weight == 1.0 else loss * weight).backward()
                parallel.average_gradients(self.gen.parameters())
                # L2L-DA clips the generator's gradient: back-propagation through the unroll can spike.
                # Clipped once averaged, so every worker clips the global batch's gradient alike.
                torch.nn.utils.clip_grad_norm_(self.gen.parameters(), 1.0)
                self.gen_opt.step()
        n = len(y)
        passes = n + copies * n * hp.gen_steps * unroll_passes(hp.gen_unroll, self.discount)
        keep = n * self.train_copies  # L2L-DA trains the classifier on both draws' examples
        descent = out.x_last.grad[:keep] if out.x_last.grad is not None else None
        return out.delta[:keep].detach(), descent, passes, loss.item(), out.logits[:n].detach(), extra

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
        if len(x_adv) != len(y):  # train_copies 2: L2L-DA's classifier loss over [x, adv_1, adv_2]
            loss, logits_adv, passes = _copies_loss(model, x, x_adv, y, hp.adv_mix)
        else:
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
        if self.gen is None:  # the noise control has no loss and no examples of its own to fool with
            del row["gen/loss"], row["gen/fooling_rate"]
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
        if self.gen is None:
            return {"arch": self.arch}
        return {"arch": self.arch, "generator": self.gen.state_dict(), "generator_kwargs": self.gen.kwargs(),
                "gen_optimizer": self.gen_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("arch", "onestep") != self.arch:  # checkpoints from before gen_arch held a onestep generator
            raise ValueError(f"the checkpoint's generator is {state.get('arch', 'onestep')!r}, this run's {self.arch!r}")
        if self.gen is not None:
            self.gen.load_state_dict(state["generator"])
            self.gen_opt.load_state_dict(state["gen_optimizer"])


def _copies_loss(model, x, x_adv, y, adv_mix: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(1 - adv_mix) * CE(clean) + adv_mix * CE(every adversarial copy)``, ``x_adv`` holding ``len(x_adv) // len(x)``
    copies of the batch (L2L-DA's ``f_update_style=1``, the mean over [x, adv_1, adv_2], is ``adv_mix = 2/3``);
    one pass per example per term: the classifier's update costs ``copies`` (+ 1 with a clean term) passes."""
    copies = len(x_adv) // len(y)
    targets = y.repeat(copies)
    if adv_mix >= 1.0:
        logits_adv = model(x_adv)
        return F.cross_entropy(logits_adv, targets), logits_adv, copies
    logits = model(torch.cat([x, x_adv]))
    logits_clean, logits_adv = logits[: len(y)], logits[len(y):]
    loss = (1 - adv_mix) * F.cross_entropy(logits_clean, y) + adv_mix * F.cross_entropy(logits_adv, targets)
    return loss, logits_adv, copies + 1


def _diversity(delta: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """L2L-DA's (after DSGAN, Yang et al. 2019) mode-seeking term for two halves made with two noise draws
    of the same images: mean over images of ``mean|delta_1 - delta_2| / mean|z_1 - z_2|``; maximised."""
    d1, d2 = delta.chunk(2)
    z1, z2 = noise.chunk(2)
    return ((d1 - d2).abs().flatten(1).mean(1) / ((z1 - z2).abs().flatten(1).mean(1) + 1e-8)).mean()


def _generator_factory(config, info, device) -> GeneratorTraining:
    return GeneratorTraining(info.shape[0], arch=config.gen_arch, width=config.gen_width, grad_input=config.gen_grad_input,
                             noise=config.gen_noise, diversity=config.gen_diversity, discount=config.gen_step_discount,
                             start=config.gen_start, frozen=config.gen_frozen, train_copies=config.gen_train_copies,
                             seed=config.seed + 101, device=device)


# The recursive generator runs K times per classifier step: at width 8 it costs a third of width 16 on a CPU and
# attacks as well (benchmarks/bench_meta_adv.py, tests/test_recursive_generator.py).
RECURSIVE_DEFAULTS = {"co_guard": True, "gen_width": 8}
register_method("meta-generator", _generator_factory, RECURSIVE_DEFAULTS)
# meta-adv = meta-generator driven by the REINFORCE policy. The generator makes every example, so
# the policy leaves PGD's steps and step ratio alone; any of these can still be given explicitly.
register_method("meta-adv", _generator_factory, {**RECURSIVE_DEFAULTS, "controller": "policy", "policy_steps": (),
                                                 "policy_step_ratio": ()})
