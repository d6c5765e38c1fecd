"""The meta-learner: one round of outer steps, and the per-round meta-validation.

It owns the model (theta), the Adam outer optimizer and the work counters. Tasks of outer step
``t`` come from a generator seeded with ``(seed, t)``, so a resumed run draws exactly the tasks
the uninterrupted run would have drawn, with no RNG state to save.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..models import build_model
from .algorithms import METHOD_STEPS, MetaContext
from .config import MetaConfig, MetaHParams
from .data import MetaData
from .evaluate import evaluate_tasks
from .inner import make_transductive
from ..training.parallel import SINGLE_PROCESS, DataParallel
from ..training.precision import autocast, resolve_precision

__all__ = ["MetaLearner", "build_meta_model"]

VAL_SEED = 1234


def build_meta_model(arch: str, model_kwargs: dict) -> torch.nn.Module:
    """A classifier for few-shot tasks, its BatchNorm layers (if any) made transductive."""
    return make_transductive(build_model(arch, **model_kwargs))


class MetaLearner:
    """With a ``parallel`` of several workers (metaadv/training/parallel.py) every worker draws the
    whole meta-batch from the same seeded stream, computes the meta-gradients of its contiguous
    share of the tasks, and the sum of the workers' sums is all-reduced before the Adam step:
    first- and second-order alike (DDP has no double backward, and the meta-batch loop frees
    each task's graph with its own backward pass, which DDP's once-per-step reduction does not
    fit), so the step is the single-process one up to floating-point summation order.
    """

    def __init__(self, config: MetaConfig, data: MetaData, device: torch.device, parallel: DataParallel = SINGLE_PROCESS):
        self.config, self.device = config, device
        self.parallel = parallel
        for split in ("train", "val"):
            data.pools[split].check(config.ways, config.shots, config.queries)
        if "test" in data.pools:
            data.pools["test"].check(config.ways, config.shots, config.queries)
        self.pool = data.pools["train"]
        self.arch = config.arch or data.default_arch
        self.model_kwargs = data.model_kwargs(config.ways)
        torch.manual_seed(config.seed)
        self.model = build_meta_model(self.arch, self.model_kwargs).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.meta_lr)
        # A fixed, seeded set of meta-validation tasks: the same for every round and every method.
        self.val_tasks = data.pools["val"].sample_many(config.val_tasks, config.ways, config.shots, config.queries,
                                                       VAL_SEED)
        self.step_fn = METHOD_STEPS[config.method]
        # Inner loops, attacks and task losses under autocast (the losses are cross-entropies,
        # which autocast computes in fp32); the outer update and validation stay fp32.
        self.precision = resolve_precision(config.precision, device)
        self.global_step = 0
        self.grad_evals = 0  # meta-training forward+backward passes, summed over examples
        self.eval_grad_evals = 0  # the same for the per-round validation

    def _context(self) -> MetaContext:
        c = self.config
        g = torch.Generator(device=self.device).manual_seed(c.seed * 1_000_003 + self.global_step)
        return MetaContext(first_order=c.first_order, attack=c.attack, attack_steps=c.attack_steps,
                           step_ratio=c.step_ratio, norm=c.norm, generator=g)

    def _tasks(self) -> list:
        c = self.config
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + self.global_step)
        return [self.pool.sample(c.ways, c.shots, c.queries, g).to(self.device) for _ in range(c.meta_batch)]

    def outer_step(self, hp: MetaHParams) -> tuple[float, float]:
        """One Adam step on the meta-batch's averaged meta-gradient; returns (loss, accuracy)."""
        for group in self.optimizer.param_groups:
            group["lr"] = hp.meta_lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        ctx, n, dp = self._context(), self.config.meta_batch, self.parallel
        tasks = self._tasks()  # every worker draws all of them: the stream stays the single process's
        shard = dp.shard(torch.arange(n))
        loss_sum = correct_sum = 0.0
        passes, bad = 0, None
        for t in shard.indices[: shard.count].tolist():
            with autocast(self.precision, self.device):
                out = self.step_fn(self.model, tasks[t], hp, ctx)
            if not torch.isfinite(out.loss):
                if dp.world_size == 1:
                    self._diverged(out.loss.item())
                bad = out.loss.item()  # the other workers must still reach the all-reduce below
                break
            if out.meta_grad is None:
                (out.loss / n).backward()  # per task, so each task's graph is freed before the next
            else:
                for name, p in self.model.named_parameters():
                    g = out.meta_grad[name] / n
                    p.grad = g if p.grad is None else p.grad + g
            loss_sum += out.loss.item()
            correct_sum += out.correct
            passes += out.passes
            self.grad_evals += out.passes
        if dp.world_size > 1:
            totals = dp.sum(torch.tensor([loss_sum, correct_sum, float(passes), float(bad is not None)],
                                         dtype=torch.float64))
            loss_sum, correct_sum, all_passes, n_bad = totals.tolist()
            if n_bad:
                self._diverged(math.nan if bad is None else bad)  # another worker's loss when this one's is fine
            self.grad_evals += int(all_passes) - passes  # every worker's tasks, not only this one's
            dp.sum_gradients(self.model.parameters())
        self.optimizer.step()
        self.global_step += 1
        return loss_sum / n, correct_sum / n

    @property
    def over_budget(self) -> bool:
        budget = self.config.budget_grad_evals
        return budget > 0 and self.grad_evals >= budget

    def _diverged(self, loss: float) -> None:
        raise UserError(f"meta-training loss became {loss} at outer step {self.global_step}; "
                        "lower --inner-lr or --meta-lr")

    def train_round(self, hp: MetaHParams) -> dict[str, float]:
        """``steps_per_round`` outer steps, fewer if the budget runs out first (at least one)."""
        losses, accs = [], []
        for _ in range(self.config.steps_per_round):
            loss, acc = self.outer_step(hp)
            losses.append(loss)
            accs.append(acc)
            if self.over_budget:
                break
        return {"train/loss": sum(losses) / len(losses), "train/acc": sum(accs) / len(accs)}

    def validate(self, hp: MetaHParams) -> dict[str, float]:
        """Clean and PGD query accuracy on the fixed meta-validation tasks, at ``hp.eps``."""
        c = self.config
        if not self.val_tasks:
            return {"val/clean_acc": float("nan"), "val/robust_acc": float("nan"), "val/eps": hp.eps}
        result = evaluate_tasks(self.model, self.val_tasks, device=self.device, seed=VAL_SEED,
                                inner_steps=c.eval_inner_steps or hp.inner_steps, inner_lr=hp.inner_lr,
                                eps=hp.eps, pgd_steps=c.val_pgd_steps, norm=c.norm)
        self.eval_grad_evals += result.passes
        s = result.summary()
        return {"val/clean_acc": s["clean_acc"], "val/robust_acc": s["robust_acc"], "val/eps": hp.eps}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "global_step": self.global_step, "grad_evals": self.grad_evals,
                "eval_grad_evals": self.eval_grad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["global_step"])
        self.grad_evals = int(state["grad_evals"])
        self.eval_grad_evals = int(state["eval_grad_evals"])
