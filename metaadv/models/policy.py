"""The REINFORCE policy network and the math of its update (Williams 1992).

A policy reads a state vector ``s`` ``(state_dim,)`` and outputs one categorical distribution per
action dimension (factorised: ``pi(a | s) = prod_k pi_k(a_k | s)``), so a grid of hyperparameters
with K dimensions of n_k values needs sum(n_k) logits, not prod(n_k).

REINFORCE ascends ``E[(r - b) log pi(a | s)] + c * H(pi(. | s))``: the likelihood-ratio gradient
with a baseline ``b`` (Williams 1992, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning", Machine Learning 8) and an entropy bonus that keeps it
exploring (Williams & Peng 1991). :func:`reinforce_loss` is the negative of that objective, so
an optimizer's descent step is the ascent step ``psi <- psi + beta * grad``.

With delayed credit the advantage is ``G_t - b`` for a return ``G_t`` instead of one reward:
:func:`discounted_returns` gives the truncated n-step discounted return (Sutton & Barto 2018,
sec. 7.1 and 13.4 "REINFORCE with baseline"; the baseline is then an estimate of ``E[G]``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["PolicyNet", "discounted_returns", "log_prob_and_entropy", "reinforce_loss", "sample_actions"]


class PolicyNet(nn.Module):
    """``s (B, state_dim)`` -> a list of logits ``(B, n_k)``, one per action dimension.

    One tanh hidden layer; the heads start at zero, so the first policy is uniform over every
    grid (maximum entropy) whatever the initial weights of the hidden layer.
    """

    def __init__(self, state_dim: int, choices: Sequence[int], hidden: int = 32):
        super().__init__()
        self.state_dim, self.choices, self.hidden = state_dim, tuple(int(n) for n in choices), hidden
        self.body = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.choices)
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, s: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(s)
        return [head(h) for head in self.heads]


def log_prob_and_entropy(logits: Sequence[torch.Tensor], actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log pi(a | s)`` and ``H(pi(. | s))`` summed over the factorised dimensions, each ``(B,)``.

    ``logits``: K tensors ``(B, n_k)``; ``actions``: ``(B, K)`` integer indices.
    """
    log_p = torch.zeros(actions.shape[0], device=actions.device)
    entropy = torch.zeros_like(log_p)
    for k, z in enumerate(logits):
        logp_k = torch.log_softmax(z, dim=1)
        log_p = log_p + logp_k.gather(1, actions[:, k : k + 1]).squeeze(1)
        entropy = entropy - (logp_k.exp() * logp_k).sum(1)
    return log_p, entropy


def reinforce_loss(logits: Sequence[torch.Tensor], actions: torch.Tensor, advantage: torch.Tensor | float,
                   entropy_coef: float) -> torch.Tensor:
    """``-mean[(r - b) * log pi(a | s) + c * H(pi(. | s))]``; ``advantage`` is ``r - b``, not differentiated."""
    log_p, entropy = log_prob_and_entropy(logits, actions)
    advantage = torch.as_tensor(advantage, dtype=log_p.dtype, device=log_p.device).detach()
    return -(advantage * log_p + entropy_coef * entropy).mean()


@torch.no_grad()
def sample_actions(logits: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per dimension from ``pi(. | s)``, ``(B, K)``; ``generator`` makes it reproducible."""
    draws = [torch.multinomial(torch.softmax(z, dim=1), 1, generator=generator) for z in logits]
    return torch.cat(draws, dim=1)


def discounted_returns(rewards: Sequence[float], gamma: float, horizon: int) -> list[float]:
    """Truncated n-step returns ``G_t = sum_{k=0}^{n-1} gamma^k r_{t+k}`` with ``n = horizon``.

    One return per ``t`` whose ``n`` rewards are all known, i.e. ``len(rewards) - horizon + 1`` of
    them (none if fewer rewards than ``horizon``). ``horizon = 1`` gives the rewards themselves.
    """
    if horizon < 1 or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"need horizon >= 1 and gamma in [0, 1], got {horizon} and {gamma}")
    weights = [gamma**k for k in range(horizon)]
    return [sum(w * r for w, r in zip(weights, rewards[t : t + horizon])) for t in range(len(rewards) - horizon + 1)]
