"""The trainer: one round of one method with the hyperparameters a controller chose.

It owns the model, the optimizer and the batch stream, and counts the work it spends. It knows
nothing of controllers, files or Ray; :mod:`metaadv.training.run` wires those around it.
"""

from __future__ import annotations

import torch

from ..attacks.apgd_reference import APGD_INSTALL_HINT, apgd_available
from ..data import BatchStream, Splits
from ..errors import UserError
from ..models import build_model, model_kwargs
from .hparams import HParams
from .las import KL_SIZE, LasStrategy, check_las_workers
from .methods import StepContext, build_method
from .parallel import SINGLE_PROCESS, DataParallel
from .precision import resolve_precision, with_precision
from .validation import accuracy, apgd_accuracy, grad_alignment, pgd_accuracy, reward_check, round_generator, round_seed

__all__ = ["DivergedError", "GRAD_ALIGN_SIZE", "Trainer", "balanced_labels", "resolve_device"]

GRAD_ALIGN_SIZE = 100  # training examples of the per-round gradient-alignment check (the first ones, fixed)
APGD_STREAM = 4  # round_seed's stream of the per-round APGD-CE validation (1-3: the reward check, grad_align)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue meaningfully."""


def resolve_device(name: str) -> torch.device:
    from ..errors import UserError

    if name.split(":")[0] not in ("auto", "cpu", "cuda") or (":" in name and not name.split(":", 1)[1].isdigit()):
        raise UserError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def balanced_labels(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """A ``(len(y),)`` bool mask keeping ``n`` labels, ``n // K`` per class (the first ``n % K``
    classes one more), drawn at random within each class: the semi-supervised benchmarks' split."""
    classes = torch.unique(y).tolist()
    mask = torch.zeros(len(y), dtype=torch.bool)
    for i, c in enumerate(classes):
        members = (y == c).nonzero().flatten()
        k = n // len(classes) + (1 if i < n % len(classes) else 0)
        if k > len(members):
            from ..errors import UserError

            raise UserError(f"--labels {n} needs {k} labelled examples of class {c}, but the training split has {len(members)}")
        mask[members[torch.randperm(len(members), generator=generator)[:k]]] = True
    return mask


def _make_optimizer(config, params):
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


class Trainer:
    def __init__(self, config, splits: Splits, device: torch.device, parallel: DataParallel = SINGLE_PROCESS):
        self.config, self.device = config, device
        # Data parallelism (metaadv/training/parallel.py): one process holds every batch whole,
        # or this is one of several workers, each training on its slice of every global batch.
        self.parallel = parallel
        self.arch = config.arch or splits.info.arch
        self.model_kwargs = model_kwargs(splits.info)
        torch.manual_seed(config.seed)
        self.model = build_model(self.arch, **self.model_kwargs).to(device)
        self.optimizer = _make_optimizer(config, self.model.parameters())
        self.train_x, self.train_y = splits.train_x.to(device), splits.train_y.to(device)
        n_val = len(splits.val_x) if config.val_size == 0 else min(config.val_size, len(splits.val_x))
        self.val_x, self.val_y = splits.val_x[:n_val].to(device), splits.val_y[:n_val].to(device)
        # The policy's reward batches are drawn afresh each round from the whole validation split.
        self.pool_x, self.pool_y = splits.val_x.to(device), splits.val_y.to(device)
        if config.controller == "policy" and config.policy_reward_size > len(self.pool_y):
            raise UserError(f"policy_reward_size {config.policy_reward_size} exceeds the validation split "
                            f"({len(self.pool_y)} examples); pass a smaller --policy-reward-size")
        if config.val_attack == "apgd-ce" and not apgd_available():
            # Here, not in TrainConfig: a study declares such configs for sizes this machine may never run.
            raise UserError(f"val_attack apgd-ce runs the reference AutoAttack's APGD-CE; {APGD_INSTALL_HINT}")
        self.stream = BatchStream(len(self.train_x), config.batch_size, config.seed, device)
        self.labeled = self._labeled_mask(config.unlabeled_fraction, config.labels)
        self.method = build_method(config, splits.info, device)
        # Attack and training steps see the model through this (bf16 autocast, fp32 logits);
        # validation, checkpoints and evaluation use self.model itself, in fp32.
        self.precision = resolve_precision(config.precision, device)
        self.step_model = with_precision(parallel.wrap(self.model), self.precision, device)
        # Attacks go through the model itself, never through a data-parallel wrapper: they need
        # input gradients only, and DDP's forward would prepare a gradient all-reduce for them.
        self.attack_model = self.step_model if parallel.world_size == 1 else with_precision(self.model, self.precision, device)
        # --controller las: the per-example attack strategy (metaadv/training/las.py), trained with the
        # classifier and saved with it; las/kl is read on the first KL_SIZE validation examples.
        self.las = None
        if config.controller == "las":
            check_las_workers(config, parallel.world_size)
            self.las = LasStrategy(config, splits.info, device)
            self.kl_x = self.pool_x[:KL_SIZE]
        self.global_step = 0
        self.round_hp: HParams | None = None  # what the last round trained with, as its row shows it (train_round)
        self.grad_evals = 0  # training forward+backward passes, summed over examples
        self.eval_grad_evals = 0  # the same for the per-round validation attack
        self.reward_grad_evals = 0  # the same for the policy's reward check (a decision cost)

    def _labeled_mask(self, unlabeled_fraction: float, labels: int) -> torch.Tensor | None:
        g = torch.Generator().manual_seed(self.config.seed + 17)
        if labels > 0:
            return balanced_labels(self.train_y.cpu(), labels, g).to(self.device)
        if unlabeled_fraction <= 0:
            return None
        hidden = torch.randperm(len(self.train_y), generator=g)[: int(unlabeled_fraction * len(self.train_y))]
        mask = torch.ones(len(self.train_y), dtype=torch.bool)
        mask[hidden] = False
        return mask.to(self.device)

    def _set_hparams(self, hp: HParams) -> None:
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = hp.lr, hp.weight_decay

    def _step_generator(self) -> torch.Generator:
        # A fresh generator per step from (seed, step): attack noise is reproducible and a resumed
        # run draws exactly what the uninterrupted run drew, with no RNG state to save.
        return torch.Generator(device=self.device).manual_seed(self.config.seed * 1_000_003 + self.global_step)

    def train_round(self, hp: HParams, at_step=None, chosen: bool = True) -> dict[str, float]:
        """Train one round (an epoch, or ``steps_per_round`` steps); returns the ``train/*`` metrics.

        Each step trains with ``at_step(spent, i, n_steps)`` when given (a schedule counted in the
        cost: ``spent`` is the training cost of every process before step ``i``), else with
        ``hp`` at the step's share of the round (its within-round ramp). :attr:`round_hp` is then
        what the round's row shows: ``hp``, or the last step's values with ``eps_start`` the first
        step's eps.

        ``chosen``: the controller chose this round (False in the threat model's tail): only then does a
        per-example strategy (``--controller las``) plan the attacks and learn; in the tail ``hp``'s
        attack holds for every example. Its look-ahead passes count in ``cost/reward_grad_evals``.

        With several data-parallel processes each trains on its slice of every global batch; the
        loss sum is all-reduced every step (so all processes see a divergence at once), the
        correct, example and cost counts once a round, and the row counts the global batches.

        A budget (``budget_grad_evals``) ends the round at the step that reaches it, not at the
        round's end: runs whose rounds cost different amounts stop within one step of the same
        cost (whole rounds overshot it by up to a round, +6.5% on average for the study's policy
        runs). Under data parallelism the step's cost is all-reduced, so every process stops at
        the same step. With ``budget_counts="train+decisions"`` the budget counts the decision passes too
        (the policy's reward checks, made between rounds; LAS's look-aheads, step by step).
        """
        self._set_hparams(hp)
        first = step_hp = hp
        n_steps = self.config.steps_per_round or self.stream.steps_left_in_epoch()
        self.model.train()
        dp = self.parallel
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = grad_evals = 0
        las = self.las is not None and chosen
        budget, spent = self.config.budget_grad_evals, self.budget_spent()  # every process's work before this round
        decisions = self.config.budget_counts == "train+decisions"
        for i in range(n_steps):
            if at_step is None:
                step_hp = hp.at_fraction((i + 1) / n_steps)
            else:
                step_hp = at_step(spent, i, n_steps)
                self._set_hparams(step_hp)
                first = step_hp if i == 0 else first
            shard = dp.shard(self.stream.next_indices())
            idx = shard.indices
            x, y = self.train_x[idx], self.train_y[idx]
            # The strategy plans attacks once the schedule's eps is above 0 (its ramp's first step is clean).
            planned = las and step_hp.eps > 0
            actions, plan = self.las.act(x, self.global_step, step_hp.eps) if planned else (None, None)
            ctx = StepContext(norm=self.config.norm, generator=self._step_generator(),
                              labeled=None if self.labeled is None else self.labeled[idx],
                              vat_xi=self.config.vat_xi, vat_weight=self.config.vat_weight,
                              attack_model=self.attack_model, parallel=dp, loss_weight=shard.weight, plan=plan,
                              pgd_start=self.config.pgd_start)
            with shard.noise():
                out = self.method.step(self.step_model, x, y, step_hp, ctx)
            batch_loss = dp.sum(out.loss.detach() * shard.count)
            if not torch.isfinite(batch_loss):
                raise DivergedError(f"training loss became {(batch_loss / shard.total).item()} at step {self.global_step}; "
                                    "lower the learning rate or eps")
            self.optimizer.zero_grad(set_to_none=True)
            (out.loss if shard.weight == 1.0 else out.loss * shard.weight).backward()
            self.optimizer.step()
            if planned:  # the model just stepped on this batch's adversarial examples: the strategy's look-ahead
                look = self.las.observe(self.model, x, y, actions, out.adv_logits, self.global_step)
                self.reward_grad_evals += look
                spent += look if decisions else 0
            loss_sum += batch_loss
            correct += (out.adv_logits.detach()[: shard.count].argmax(1) == y[: shard.count]).sum()
            seen += shard.count
            local = round(out.passes * shard.count)  # passes may be a per-example mean (mixed attacks)
            self.grad_evals += local  # this process's work so far: what a diverged round reports
            grad_evals += local
            self.global_step += 1
            if budget or at_step is not None:
                spent += round(dp.sum(torch.tensor(float(local), dtype=torch.float64, device=self.device)).item())
                if budget and spent >= budget:
                    break
        self.round_hp = hp if at_step is None else step_hp.replace(eps_start=None if first.eps == step_hp.eps else first.eps)
        counts = dp.sum(torch.stack([correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=self.device),
                                     torch.tensor(float(grad_evals), dtype=torch.float64, device=self.device)]))
        correct_total, seen_total, grad_evals_total = counts.tolist()
        self.grad_evals += int(grad_evals_total) - grad_evals  # every process's work, once the round is whole
        extra = self.las.round_metrics(self.kl_x, acted=las) if self.las is not None else {}
        return {"train/loss": loss_sum.item() / seen_total, "train/adv_acc": correct_total / seen_total,
                **self.method.round_metrics(), **extra}

    def budget_spent(self) -> int:
        """What ``budget_grad_evals`` counts: the training passes, plus the decision passes
        (``cost/reward_grad_evals``) with ``budget_counts="train+decisions"``."""
        return self.grad_evals + (self.reward_grad_evals if self.config.budget_counts == "train+decisions" else 0)

    def validate(self, round_index: int = 0) -> dict[str, float]:
        """``val/*`` metrics at the threat model's target eps on the fixed validation subset.

        ``val_attack: pgd``: PGD-``val_pgd_steps`` from one fixed start, ``val_pgd_steps`` passes
        per example. ``apgd-ce``: the reference APGD-CE with ``val_apgd_iters`` iterations, its
        random start seeded by (seed, ``round_index``), ``val_apgd_iters + 1`` passes per example
        it attacks (those classified correctly). Either way the passes count in
        ``cost/eval_grad_evals``."""
        c = self.config
        clean = accuracy(self.model, self.val_x, self.val_y)
        if c.val_attack == "apgd-ce":
            robust, passes = apgd_accuracy(self.model, self.val_x, self.val_y, eps=c.eps, norm=c.norm,
                                           iters=c.val_apgd_iters, seed=round_seed(c.seed, round_index, APGD_STREAM))
            self.eval_grad_evals += passes
        else:
            robust = pgd_accuracy(self.model, self.val_x, self.val_y, eps=c.eps, steps=c.val_pgd_steps, norm=c.norm)
            if c.eps > 0:
                self.eval_grad_evals += c.val_pgd_steps * len(self.val_y)
        return {"val/clean_acc": clean, "val/robust_acc": robust, "val/eps": c.eps}

    def grad_align(self, round_index: int) -> float:
        """``train/grad_align``: :func:`~metaadv.training.validation.grad_alignment` at the target eps on the
        first ``GRAD_ALIGN_SIZE`` training examples, random points seeded by (seed, round) so a resumed run
        measures what the uninterrupted one did. Its two passes per example count in ``cost/eval_grad_evals``
        (monitoring, like validation)."""
        c = self.config
        if c.eps == 0:
            return 1.0  # no ball: both points are x itself
        x, y = self.train_x[:GRAD_ALIGN_SIZE], self.train_y[:GRAD_ALIGN_SIZE]
        value = grad_alignment(self.model, x, y, eps=c.eps, norm=c.norm, generator=round_generator(c.seed, round_index, 3, self.device))
        self.eval_grad_evals += 2 * len(y)
        return value

    def reward_check(self, round_index: int, *, before: bool) -> dict[str, float]:
        """The policy's measurement of round ``round_index`` (0-based) on that round's fresh batch.

        The batch (``policy_reward_size`` examples of the whole validation split) and PGD's random
        start are drawn from generators seeded by (seed, round), so ``before`` (the weights the round
        starts from) and after (the weights it ends with) see the same examples and the same start:
        a paired difference. ``before`` measures PGD only; after adds clean and FGSM accuracy.
        """
        c = self.config
        pick = round_generator(c.seed, round_index, 1)
        idx = torch.randperm(len(self.pool_y), generator=pick)[: c.policy_reward_size].to(self.device)
        start = round_generator(c.seed, round_index, 2, self.device)
        out, grad_evals = reward_check(self.model, self.pool_x[idx], self.pool_y[idx], eps=c.eps,
                                       steps=c.policy_reward_steps, norm=c.norm, start=start, full=not before)
        self.reward_grad_evals += grad_evals
        if before:
            return {"policy/robust_acc_before": out["robust_acc"]}
        return {f"policy/{k}": v for k, v in out.items()}

    @property
    def epoch(self) -> float:
        return self.stream.examples_seen / len(self.train_x)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "stream": self.stream.state_dict(),
            "global_step": self.global_step,
            "grad_evals": self.grad_evals,
            "eval_grad_evals": self.eval_grad_evals,
            "reward_grad_evals": self.reward_grad_evals,
            **({"las": self.las.state_dict()} if self.las is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.stream.load_state_dict(state["stream"])
        self.global_step = int(state["global_step"])
        self.grad_evals = int(state["grad_evals"])
        self.eval_grad_evals = int(state["eval_grad_evals"])
        # Checkpoints from before the reward check existed spent nothing on it.
        self.reward_grad_evals = int(state.get("reward_grad_evals", 0))
        if self.las is not None:
            if "las" not in state:
                raise UserError("this checkpoint holds no LAS strategy (it was not trained with --controller las)")
            self.las.load_state_dict(state["las"])
