"""Attacks on the support set of a few-shot task: the learner adapts on what the attacker gives it.

Two attackers, both PGD in the same eps-ball as the query attack (one projection, ``metaadv.attacks``):

- ``theta``: PGD against the meta-parameters theta, maximising the support loss before adaptation
  (the attacker does not model adaptation; ``meta-evaluate --attack-support``).
- ``unrolled``: PGD that maximises the *adapted* model's loss on the task's clean queries,
  differentiating through the inner loop: ``max_delta L(theta'(S + delta), Q)`` with
  ``theta'(S) = theta - alpha grad L(theta, S)`` repeated ``inner_steps`` times. It knows the
  learner's adaptation rule, so it is the adaptive attacker of Oldewage, Bronskill and Turner
  ("Adversarial support set attack", arXiv:2211.12990). The query set is then attacked as usual,
  against the model adapted on the poisoned support.

Each unrolled step costs ``inner_steps`` passes over the support and one over the queries (counted
in ``grad_evals`` like that), plus the double backward through the inner loop that a pass count
does not see (as in second-order MAML).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks import pgd
from ..attacks.pgd import ascent_step
from ..attacks.projection import per_example, project, random_start
from .inner import adapt, forward
from .tasks import Task

__all__ = ["SUPPORT_ATTACKS", "attack_support", "unrolled_objective"]

SUPPORT_ATTACKS = ("none", "theta", "unrolled")


def unrolled_objective(model, theta: dict, xs: torch.Tensor, task: Task, *, inner_steps: int,
                       inner_lr: float) -> torch.Tensor:
    """``L(theta'(xs), Q)``: the clean-query loss after adapting on support images ``xs``.

    Differentiable w.r.t. ``xs``: the inner steps keep their graph (``first_order=False``).
    """
    leaves = {k: p.detach().requires_grad_(True) for k, p in theta.items()}
    adapted = adapt(model, leaves, xs, task.ys, steps=inner_steps, lr=inner_lr, first_order=False)
    return F.cross_entropy(forward(model, adapted, task.xq), task.yq)


def _unrolled_pgd(model, theta, task: Task, *, eps: float, step_size: float, steps: int, inner_steps: int,
                  inner_lr: float, norm: str, generator) -> torch.Tensor:
    xs = task.xs.detach()
    eps_b, step_b = per_example(eps, xs), per_example(step_size, xs)
    delta = random_start(xs, eps_b, norm, generator)
    with torch.enable_grad():
        for _ in range(steps):
            x = (xs + delta).requires_grad_(True)
            loss = unrolled_objective(model, theta, x, task, inner_steps=inner_steps, inner_lr=inner_lr)
            (grad,) = torch.autograd.grad(loss, x)
            delta = project(ascent_step(delta, grad, step_b, norm), xs, eps_b, norm)
    return (xs + delta).detach()


def attack_support(mode: str, model, theta: dict, task: Task, *, eps: float, steps: int, norm: str, inner_steps: int,
                   inner_lr: float, generator=None) -> tuple[torch.Tensor, int]:
    """The support images under attack ``mode``, and the passes it spent (summed over examples).

    ``model`` is in eval mode and ``theta`` its detached meta-parameters; step size
    ``2.5 eps / steps`` as the query attack's.
    """
    step_size = 2.5 * eps / steps
    n_s, n_q = len(task.ys), len(task.yq)
    if mode == "theta":
        x = pgd(model, task.xs, task.ys, eps=eps, step_size=step_size, steps=steps, norm=norm, generator=generator)
        return x, steps * n_s
    if mode == "unrolled":
        x = _unrolled_pgd(model, theta, task, eps=eps, step_size=step_size, steps=steps, inner_steps=inner_steps,
                          inner_lr=inner_lr, norm=norm, generator=generator)
        return x, steps * (inner_steps * n_s + n_q)
    raise ValueError(f"unknown support attack {mode!r}; choose one of {', '.join(SUPPORT_ATTACKS[1:])}")
