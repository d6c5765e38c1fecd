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

Across runs (``metaadv policy train``): every decision ``t`` of an episode is credited with the
episode's return ``G`` (gamma = 1), compared with a baseline ``b_t`` of its own decision index
(:func:`index_baselines`, :func:`update_index_baselines`), and the batch's advantages are divided
by their root mean square ``sigma`` (:func:`episode_reinforce_loss`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["PolicyNet", "discounted_returns", "episode_reinforce_loss", "index_baselines", "log_prob_and_entropy",
           "reinforce_loss", "sample_actions", "update_index_baselines"]

SIGMA_FLOOR = 1e-3  # a tenth of a percent of accuracy: advantages below it are not scaled up


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


def index_baselines(baselines: Sequence[float], indices: torch.Tensor, fallback: float) -> torch.Tensor:
    """``b_t`` for each decision, ``(N,)``: ``baselines[t]`` for its decision index ``t``, or
    ``fallback`` where index ``t`` has no history yet (``t >= len(baselines)``)."""
    known = torch.as_tensor(list(baselines), dtype=torch.float32)
    out = torch.full(indices.shape, float(fallback), dtype=torch.float32)
    has = indices < len(known)
    out[has] = known[indices[has]]
    return out


def update_index_baselines(baselines: Sequence[float], counts: Sequence[int], episodes: Sequence[tuple[float, int]],
                           rate: float) -> tuple[list[float], list[int]]:
    """The per-index baselines after ``episodes``, each ``(return G, decisions T)``, in order.

    Every index ``t < T`` of an episode moves ``b_t <- b_t + r_t (G - b_t)`` with
    ``r_t = max(rate, 1 / n_t)`` (``n_t``: episodes seen at index ``t``, this one included): a plain
    mean over an index's first ``1 / rate`` episodes, then an exponential moving average.
    """
    b, n = list(baselines), list(counts)
    for ret, length in episodes:
        for t in range(length):
            if t == len(b):
                b.append(0.0)
                n.append(0)
            n[t] += 1
            b[t] += max(rate, 1.0 / n[t]) * (ret - b[t])
    return b, n


def episode_reinforce_loss(logits: Sequence[torch.Tensor], actions: torch.Tensor, returns: torch.Tensor,
                           baselines: torch.Tensor, entropy_coef: float) -> torch.Tensor:
    """``-mean_i[(G_i - b_i) / sigma * log pi(a_i | s_i) + c * H(pi(. | s_i))]`` over a batch's decisions.

    ``returns`` ``(N,)``: each decision's episode return; ``baselines`` ``(N,)``: its index's ``b_t``;
    ``sigma = max(sqrt(mean_i (G_i - b_i)^2), SIGMA_FLOOR)``, so the step size does not depend on
    the return's units or spread.
    """
    advantage = (returns - baselines).detach()
    sigma = max(advantage.pow(2).mean().sqrt().item(), SIGMA_FLOOR) if len(advantage) else 1.0
    return reinforce_loss(logits, actions, advantage / sigma, entropy_coef)
