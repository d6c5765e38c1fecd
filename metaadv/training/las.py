"""``--controller las``: a per-example learned attack strategy, LAS-AT (Jia et al., "LAS-AT: Adversarial
Training with Learnable Attack Strategy", CVPR 2022, arXiv:2203.06616) adapted to small data sets.

A strategy network (:class:`~metaadv.models.strategy.StrategyNet`) reads each training image and
samples its attack: eps as a fraction of the schedule's eps in force (``las_eps``; the target once
the schedule's eps ramp is over), PGD steps (``las_steps``) and the step size as a fraction of its
own eps (``las_step_ratio``). The schedule gives eps, lr and weight decay step by step
(:class:`LasController`); the trainer runs the method's attack with the per-example plan
(:class:`~metaadv.training.methods.AttackPlan`).

Every ``las_interval`` batches it learns by REINFORCE from **per-example** rewards (the authors
use one reward per batch, every 20 batches):

    R_i = w_loss * min(CE_i, 10) + w_robust * robust_i + w_clean * clean_i

``CE_i``: the classifier's cross-entropy on example i's adversarial example, from the training
step's own forward pass (the strategy is the adversary: it wants strong attacks). ``robust_i``,
``clean_i``: whether the one-step look-ahead classifier gets example i right under PGD-
``las_lookahead_steps`` (one random start, the target eps, step 2.5 eps / steps) and clean, on the
batch's first ``las_lookahead_size`` examples. The look-ahead is the classifier right after the
trainer's step on this batch's adversarial examples: a copy taking that same step with the same
optimizer would hold the same weights, so none is made. Each term has a moving-average baseline;
the look-ahead terms are known on a subset of S of the B examples, so the estimator weighs them
by B / S (:func:`per_example_advantages`): an unbiased gradient of the mean per-example reward.

See docs/las.md for the flags, what changed from the authors' settings and why, and cost accounting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._eps_bounds import eps_error
from ..attacks import pgd
from ..errors import UserError
from ..models.policy import reinforce_loss, sample_actions
from ..models.strategy import StrategyNet
from .controllers import ScheduleController, register_controller
from .hparams import HParams
from .methods import PLANNED_METHODS, AttackPlan
from .validation import round_generator

__all__ = ["KL_SIZE", "LAS_DIMS", "LOSS_CAP", "LasController", "LasStrategy", "check_las_config", "check_las_workers",
           "kl_to_uniform", "las_grids", "lookahead_correct", "per_example_advantages"]

LAS_DIMS = ("eps", "steps", "step_ratio")
LOSS_CAP = 10.0  # the authors clamp their attack-loss reward to [0, 10]; one exploding CE must not own the batch
KL_SIZE = 200  # las/kl: held-out digits, the first ones of the validation split
_DRAW_STREAM, _LOOKAHEAD_STREAM = 5, 6  # round_generator streams, indexed by optimizer step (rounds use 1-3)


def las_grids(config) -> dict[str, tuple[float, ...]]:
    """``{"eps": fractions, "steps": ints, "step_ratio": ratios}``, each checked; one line on error."""
    grids = {}
    for dim in LAS_DIMS:
        values = tuple(float(v) for v in getattr(config, f"las_{dim}"))
        flag = f"--las-{dim.replace('_', '-')}"
        if not values:
            raise UserError(f"{flag} is empty; give at least one value (or leave the flag out for the default grid)")
        if len(set(values)) != len(values):
            raise UserError(f"{flag} lists a value twice: {values}")
        for v in values:
            if error := _grid_value_error(dim, v, config):
                raise UserError(f"bad value {v:g} in the {flag} grid: {error}")
        grids[dim] = values
    return grids


def _grid_value_error(dim: str, v: float, config) -> str:
    if dim == "eps":
        if not 0.0 < v <= 2.0:
            return "eps choices are fractions of --eps in (0, 2] (LAS-AT's 3-14/255 around 8/255 is 0.375-1.75)"
        error = eps_error(config, v * config.eps)
        return f"{v:g} x --eps {config.eps:g} = {v * config.eps:g}: {error}; lower --eps or the grid" if error else ""
    if dim == "steps":
        return "" if v >= 1 and v.is_integer() else "attack steps must be whole numbers >= 1"
    return "" if v > 0 else "step ratios (step size / the example's eps) must be > 0"


def check_las_config(c) -> None:
    """Refuse a ``--controller las`` config that cannot run, one line each, before anything is written."""
    if c.method not in PLANNED_METHODS:
        raise UserError(f"--controller las plans a PGD attack per example; --method {c.method} has none it can plan "
                        f"(use {' or '.join(PLANNED_METHODS)})")
    if c.eps <= 0:
        raise UserError("--controller las draws eps as fractions of --eps; give --eps > 0")
    for name in ("las_interval", "las_hidden", "las_lookahead_size", "las_lookahead_steps"):
        if getattr(c, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(c, name)}"
                            + (" (the strategy learns every N batches)" if name == "las_interval" else ""))
    if c.las_lr <= 0 or not 0 < c.las_baseline_rate <= 1:
        raise UserError(f"las_lr must be > 0 and las_baseline_rate in (0, 1], got {c.las_lr} and {c.las_baseline_rate}")
    for name in ("las_loss_weight", "las_robust_weight", "las_clean_weight"):
        if getattr(c, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(c, name)}")
    las_grids(c)


def check_las_workers(config, workers: int) -> None:
    """The strategy learns from whole batches in one process: refused with data-parallel workers, for now."""
    if getattr(config, "controller", "") == "las" and workers > 1:
        raise UserError("--controller las with --workers above 1 is not supported for now; train it with --workers 1")


def per_example_advantages(r_loss: torch.Tensor, r_robust: torch.Tensor, r_clean: torch.Tensor,
                           baseline: tuple[float, float, float], weights: tuple[float, float, float]) -> torch.Tensor:
    """``A_i = w_l (L_i - b_l) + [i < S] (B / S) (w_r (R_i - b_r) + w_c (C_i - b_c))``, shape ``(B,)``.

    ``r_loss (B,)`` is known for every example, ``r_robust``, ``r_clean (S,)`` for the first S. With
    ``-mean_i A_i log pi(a_i | x_i)`` as the loss, the loss term is averaged over B and the look-ahead
    terms over S: an unbiased estimate of the gradient of E[w_l L + w_r R + w_c C].
    """
    b, s = len(r_loss), len(r_robust)
    adv = weights[0] * (r_loss - baseline[0])
    look = weights[1] * (r_robust - baseline[1]) + weights[2] * (r_clean - baseline[2])
    return torch.cat([adv[:s] + (b / s) * look, adv[s:]])


def lookahead_correct(model, x, y, *, eps: float, steps: int, norm: str, generator: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-example correctness (float 0/1, ``(S,)``) under PGD-``steps`` from one random start (step
    2.5 eps / steps) and clean, in eval mode; and the input-gradient passes spent, ``steps * S``."""
    x_adv = pgd(model, x, y, eps=eps, step_size=2.5 * eps / steps, steps=steps, norm=norm, generator=generator)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            robust, clean = (model(torch.cat([x_adv, x])).argmax(1) == y.repeat(2)).float().chunk(2)
    finally:
        model.train(was_training)
    return robust, clean, steps * len(y)


def kl_to_uniform(logits: list[torch.Tensor]) -> torch.Tensor:
    """``KL(pi(. | x) || uniform)`` summed over the factorised dimensions, per example ``(B,)``."""
    total = torch.zeros(logits[0].shape[0], dtype=torch.float64, device=logits[0].device)
    for z in logits:
        logp = torch.log_softmax(z.double(), dim=1)
        total = total + (logp.exp() * (logp + math.log(z.shape[1]))).sum(1)
    return total


class LasStrategy:
    """The strategy, its optimizer and baselines, held by the trainer (and saved in its checkpoint).

    ``act`` plans a batch's attacks; after the trainer's step, ``observe`` tallies the choices and,
    every ``las_interval`` batches (unless frozen), measures the look-ahead and takes a REINFORCE step.
    Its draws come from generators seeded by (seed, optimizer step): a resumed run draws what the
    uninterrupted one drew, with no RNG state to keep.
    """

    def __init__(self, config, info, device: torch.device):
        self.config, self.device = config, device
        self.grids = las_grids(config)
        self.eps_grid, self.steps_grid, self.ratio_grid = (torch.tensor(self.grids[d], device=device) for d in LAS_DIMS)
        self.steps_grid = self.steps_grid.long()
        self.weights = (config.las_loss_weight, config.las_robust_weight, config.las_clean_weight)
        with torch.random.fork_rng(devices=[]):  # the classifier's initialisation does not depend on LAS
            torch.manual_seed(config.seed + 303)
            self.net = StrategyNet(info.shape[0], [len(g) for g in self.grids.values()], config.las_hidden,
                                   info.mean, info.std).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.las_lr)
        self.baseline: list[float] = [0.0, 0.0, 0.0]
        self.batches = self.updates = 0  # batches planned, REINFORCE steps taken (run totals)
        self._reset_tally()

    def _reset_tally(self) -> None:
        self._choices: list[torch.Tensor] = []  # (B, 3): eps, steps, step_ratio per example
        self._rewards: list[torch.Tensor] = []  # (4,): reward and its three terms, one per update

    def act(self, x: torch.Tensor, step: int, eps: float | None = None) -> tuple[torch.Tensor, AttackPlan]:
        """Sample each example's attack: ``(actions (B, 3), AttackPlan)``. Each example's eps is its
        fraction of ``eps``, the schedule's eps in force (its ramp, then the target; default the target)."""
        with torch.no_grad():
            logits = self.net(x)
        actions = sample_actions(logits, round_generator(self.config.seed, step, _DRAW_STREAM, self.device))
        eps = self.eps_grid[actions[:, 0]] * (self.config.eps if eps is None else eps)
        ratio = self.ratio_grid[actions[:, 2]]
        plan = AttackPlan(eps=eps, step_size=ratio * eps, steps=self.steps_grid[actions[:, 1]])
        self._choices.append(torch.stack([eps.double(), plan.steps.double(), ratio.double()], 1).cpu())
        return actions, plan

    def observe(self, model, x, y, actions, adv_logits: torch.Tensor, step: int) -> int:
        """After the trainer's step on this batch: learn if it is an update batch; returns the
        look-ahead's input-gradient passes (``cost/reward_grad_evals``)."""
        self.batches += 1
        if self.config.las_frozen or self.batches % self.config.las_interval:
            return 0
        c = self.config
        r_loss = F.cross_entropy(adv_logits.detach().float(), y, reduction="none").clamp(max=LOSS_CAP)
        s = min(c.las_lookahead_size, len(y))
        robust, clean, passes = lookahead_correct(model, x[:s], y[:s], eps=c.eps, steps=c.las_lookahead_steps, norm=c.norm,
                                                  generator=round_generator(c.seed, step, _LOOKAHEAD_STREAM, self.device))
        self.learn(x, actions, r_loss, robust, clean)
        return passes

    def learn(self, x, actions, r_loss: torch.Tensor, r_robust: torch.Tensor, r_clean: torch.Tensor) -> None:
        """One REINFORCE step from per-example rewards, then the baselines move towards this batch's means."""
        means = [r_loss.mean().item(), r_robust.mean().item(), r_clean.mean().item()]
        baseline = tuple(means) if self.updates == 0 else tuple(self.baseline)  # the first batch centres itself
        advantages = per_example_advantages(r_loss, r_robust, r_clean, baseline, self.weights)
        loss = reinforce_loss(self.net(x), actions, advantages, 0.0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates += 1
        rate = max(self.config.las_baseline_rate, 1.0 / self.updates)  # a plain mean over the first 1/rate batches
        self.baseline = [b + rate * (m - b) for b, m in zip(self.baseline, means)]
        reward = sum(w * m for w, m in zip(self.weights, means))
        self._rewards.append(torch.tensor([reward, *means], dtype=torch.float64))

    def kl(self, x: torch.Tensor) -> float:
        """``las/kl``: mean KL(current || initial) on ``x``; the initial strategy is uniform (zero-initialised heads)."""
        with torch.no_grad():
            return kl_to_uniform(self.net(x)).mean().item()

    def round_metrics(self, heldout: torch.Tensor, acted: bool) -> dict[str, float]:
        """``las/*`` of the round just trained (the choices only if the strategy acted); resets the tally."""
        row: dict[str, float] = {}
        if acted and self._choices:
            choices = torch.cat(self._choices)
            q = torch.quantile(choices, torch.tensor([0.1, 0.9], dtype=torch.float64), dim=0)
            for j, name in enumerate(LAS_DIMS):
                row.update({f"las/{name}_mean": choices[:, j].mean().item(), f"las/{name}_q10": q[0, j].item(),
                            f"las/{name}_q90": q[1, j].item()})
        if self._rewards:
            r = torch.stack(self._rewards).mean(0).tolist()
            row.update({"las/reward": r[0], "las/reward_loss": r[1], "las/reward_robust": r[2], "las/reward_clean": r[3]})
        row.update({"las/updates": self.updates, "las/kl": self.kl(heldout)})
        self._reset_tally()
        return row

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.opt.state_dict(), "baseline": list(self.baseline),
                "batches": self.batches, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["optimizer"])
        self.baseline = [float(b) for b in state["baseline"]]
        self.batches, self.updates = int(state["batches"]), int(state["updates"])


class LasController(ScheduleController):
    """The schedule's eps, lr and weight decay, step by step: the trainer's strategy draws each
    example's eps as a fraction of the schedule's eps in force, so its eps ramp (the first
    ``eps_ramp_fraction`` of the budget; 0: none) warms the strategy's attacks up as it does a fixed
    schedule's. (Without it, a pilot at the medium budget trained one of three seeds to chance:
    PGD-AT from scratch at up to 1.75 x 0.3 on mnist5k.) The attack's steps and step size are the
    strategy's; ``hp/eps`` in the row is the schedule's eps the fractions multiplied."""


register_controller("las", LasController)
