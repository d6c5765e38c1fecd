"""The ``policy`` controller: a REINFORCE meta-optimizer of the per-round hyperparameters.

After each round it reads the metrics row as its state and picks the next round's
hyperparameters from declared grids. The reward of round r's choice comes from the policy's own
**reward check** (``TrainingRun.step``, ``Trainer.reward_check``): a fresh batch of
``policy_reward_size`` validation examples drawn for round r, attacked by PGD-``policy_reward_steps``
from a random start, both seeded by (seed, r), once with the weights round r starts from and once
with those it ends with (the same examples, the same start: a paired difference), plus FGSM and
clean accuracy after the round:

    reward_r = (pgd_after_r - pgd_before_r) - lambda * cost_r - mu * max(0, fgsm_after_r - pgd_after_r)
    cost_r   = round r's (cost/grad_evals + cost/reward_grad_evals) / (11 * examples trained in round r)

so ``cost = 1`` is one round of PGD-10 adversarial training and a clean round costs 1/11, and the
reward check's own attack is part of the cost. The last term penalises a model that beats the weak
attack but not the strong one (gradient masking, catastrophic overfitting).

A choice is credited with its round's reward (``policy_return="immediate"``) or with the
truncated discounted return ``G_r = sum_{k<n} gamma^k reward_{r+k}`` (``"discounted"``,
``policy_gamma``, ``n = policy_horizon``), known n - 1 rounds later. The update is REINFORCE
(Williams 1992) with a moving-average baseline ``b`` of the returns and an entropy bonus:
``psi <- psi + beta * grad[(G - b) / sigma * log pi(a | s) + c * H(pi(. | s))]`` by plain SGD,
where ``sigma`` is a moving standard deviation of ``G - b`` (so ``beta`` and ``c`` do not depend
on the reward's units).

Grids (``policy_<dim>`` config keys; an empty grid leaves that dimension to the fixed schedule):
``eps`` as fractions of the target eps, ``step_ratio``, ``steps``, ``lr_mult`` (times the
schedule's lr), ``weight_decay`` and ``adv_mix`` as values.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import UserError
from ..models.policy import PolicyNet, discounted_returns, log_prob_and_entropy, reinforce_loss, sample_actions
from .controllers import ScheduleController, register_controller
from .hparams import HParams

__all__ = ["GRID_DIMS", "PolicyController", "apply_choices", "policy_grids", "state_features"]

GRID_DIMS = ("eps", "step_ratio", "steps", "lr_mult", "weight_decay", "adv_mix")
# The reward check's numbers, not the logged val/* ones: what the policy decides on is what its cost counts.
ROW_FEATURES = ("policy/clean_acc", "policy/robust_acc", "train/adv_acc")
PGD10_PASSES = 11  # per example: 10 attack steps + 1 update; the unit of cost
_SIGMA_FLOOR = 1e-3  # a tenth of a percent of accuracy: below this, reward differences are noise


def apply_choices(hp: HParams, choices: dict[str, float], eps_target: float) -> HParams:
    """The schedule's ``hp`` with the policy's grid values in force (eps and lr are relative)."""
    changes = {k: v for k, v in choices.items() if k in ("step_ratio", "weight_decay", "adv_mix")}
    if "eps" in choices:
        changes["eps"] = choices["eps"] * eps_target
        if getattr(hp, "eps_start", None) is not None:
            changes["eps_start"] = None  # the policy's eps holds for the whole round, no schedule ramp inside it
    if "steps" in choices:
        changes["steps"] = choices["steps"]  # HParams refuses a non-integer, then stores an int
    if "lr_mult" in choices:
        changes["lr"] = hp.lr * choices["lr_mult"]
    return hp.replace(**changes)


def policy_grids(config) -> dict[str, tuple[float, ...]]:
    """The non-empty grids of ``config``, each value checked; a bad one is a one-line UserError."""
    grids = {}
    for dim in GRID_DIMS:
        values = tuple(float(v) for v in getattr(config, f"policy_{dim}"))
        flag = f"--policy-{dim.replace('_', '-')}"
        if len(set(values)) != len(values):
            raise UserError(f"{flag} lists a value twice: {values}")
        for v in values:
            try:
                apply_choices(config.hparams(), {dim: v}, config.eps)
            except UserError as exc:
                raise UserError(f"bad value {v:g} in the {flag} grid: {exc}") from None
        if values:
            grids[dim] = values
    return grids


def state_features(row: dict | None, change: float, progress: float, actions: list[int], grids: dict) -> torch.Tensor:
    """The policy's state, every entry in about [-1, 1]: accuracies, squashed loss and robust-accuracy
    ``change`` over the round (the reward check's paired difference), the fraction of the run done, and each grid's index in [0, 1]."""
    row = row or {}
    accs = [float(row.get(k, 0.0)) for k in ROW_FEATURES]
    loss = math.tanh(float(row.get("train/loss", 0.0)) / 2.0)  # a 10-class guess (2.3) -> 0.82
    change = math.tanh(10.0 * change)
    idx = [a / (len(g) - 1) if len(g) > 1 else 0.0 for a, g in zip(actions, grids.values())]
    return torch.tensor([*accs, loss, change, progress, *idx], dtype=torch.float32)


class PolicyController:
    """REINFORCE over factorised categorical choices from the grids; see the module docstring."""

    wants_reward_check = True  # the round loop measures policy/* on a fresh batch for it

    def __init__(self, config):
        self.schedule = ScheduleController(config)
        self.grids = policy_grids(config)
        if not self.grids:
            raise UserError("--controller policy needs at least one non-empty --policy-* grid")
        self.eps_target, self.rounds, self.budget = config.eps, config.rounds, config.budget_grad_evals
        self.batch_size = config.batch_size
        self.cost_weight, self.entropy_coef, self.rate = config.policy_cost_weight, config.policy_entropy, config.policy_baseline_rate
        self.gap_weight = config.policy_gap_weight
        self.gamma = config.policy_gamma
        self.horizon = config.policy_horizon if config.policy_return == "discounted" else 1
        self.frozen = config.policy_frozen
        self.state = state_features(None, 0.0, 0.0, [0] * len(self.grids), self.grids)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 202)
            self.net = PolicyNet(len(self.state), [len(g) for g in self.grids.values()], config.policy_hidden)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=config.policy_lr)
        self.rng = torch.Generator().manual_seed(config.seed + 203)  # the policy's own draws, saved and restored
        self.baseline, self.var, self.updates = 0.0, 0.0, 0
        self.prev = {"grad_evals": 0, "reward_grad_evals": 0, "step": 0}
        self.pending: dict | None = None
        self.window: list[dict] = []  # choices waiting for their return: {"state", "actions", "round", "reward"}
        # Every observed decision, for a meta-trainer that credits them after the run (metaadv policy train).
        self.decisions: list[dict] = []  # {"index", "round", "state", "actions", "entropy"}
        self.last: dict[str, float] = {}
        if config.policy_file:
            load_policy_file(self, config.policy_file)

    def propose(self, round_index: int) -> HParams:
        with torch.no_grad():
            logits = self.net(self.state[None])
        actions = sample_actions(logits, self.rng)
        entropy = log_prob_and_entropy(logits, actions)[1].item()
        self.pending = {"state": self.state, "actions": actions[0].tolist(), "entropy": entropy, "round": round_index}
        choices = {dim: grid[a] for (dim, grid), a in zip(self.grids.items(), self.pending["actions"])}
        return apply_choices(self.schedule.propose(round_index), choices, self.eps_target)

    def observe(self, row: dict) -> None:
        try:
            after, before, fgsm = row["policy/robust_acc"], row["policy/robust_acc_before"], row["policy/fgsm_acc"]
        except KeyError as exc:
            raise UserError(f"the policy controller needs its reward check in the row (missing {exc}); "
                            "drive it with metaadv.training.run.TrainingRun") from None
        change = after - before
        examples = max(1, (row["step"] - self.prev["step"]) * self.batch_size)
        spent = (row["cost/grad_evals"] - self.prev["grad_evals"]) + (row["cost/reward_grad_evals"] - self.prev["reward_grad_evals"])
        cost = spent / (PGD10_PASSES * examples)
        gap = max(0.0, fgsm - after)
        reward = change - self.cost_weight * cost - self.gap_weight * gap
        pending, self.pending = self.pending, None
        if pending is not None:
            self.decisions.append({"index": len(self.decisions), "round": row["round"] - 1, "state": pending["state"],
                                   "actions": pending["actions"], "entropy": pending["entropy"]})
            self.last = {"policy/reward": reward, "policy/entropy": pending["entropy"], "policy/cost": cost, "policy/gap": gap}
            self.window.append({"state": pending["state"], "actions": pending["actions"], "round": row["round"], "reward": reward})
            if len(self.window) == self.horizon:  # the oldest choice's n rewards are all in
                ret = discounted_returns([d["reward"] for d in self.window], self.gamma, self.horizon)[0]
                self._credit(self.window.pop(0), ret)
        self.prev = {"grad_evals": row["cost/grad_evals"], "reward_grad_evals": row["cost/reward_grad_evals"], "step": row["step"]}
        progress = row["round"] / self.rounds
        if self.budget:
            progress = max(progress, row["cost/grad_evals"] / self.budget)
        actions = pending["actions"] if pending else [0] * len(self.grids)
        self.state = state_features(row, change, min(progress, 1.0), actions, self.grids)

    def row_metrics(self) -> dict[str, float]:
        """``policy/*`` of the round just observed: its reward, the entropy of the distribution its
        hyperparameters were drawn from, its cost and FGSM-minus-PGD gap; and the return completed
        this round (``policy/return``, credited to the choice of round ``policy/return_round``) with
        the baseline it was compared with."""
        return dict(self.last)

    def decision_record(self, *, include_pending: bool = False) -> dict[str, torch.Tensor]:
        """The decisions of this run as tensors: ``states`` ``(T, state_dim)``, ``actions`` ``(T, K)``
        grid indices, ``index`` ``(T,)`` (0, 1, ... in the order made), ``round`` ``(T,)`` (0-based) and
        ``entropy`` ``(T,)`` of the distribution each was drawn from. ``include_pending`` adds a
        decision proposed but never observed (the round that diverged)."""
        decisions = list(self.decisions)
        if include_pending and self.pending is not None:
            decisions.append({**self.pending, "index": len(decisions)})
        k, d = len(self.grids), len(self.state)
        return {
            "states": torch.stack([x["state"] for x in decisions]) if decisions else torch.zeros(0, d),
            "actions": torch.tensor([x["actions"] for x in decisions], dtype=torch.long).reshape(-1, k),
            "index": torch.tensor([x["index"] for x in decisions], dtype=torch.long),
            "round": torch.tensor([x["round"] for x in decisions], dtype=torch.long),
            "entropy": torch.tensor([x["entropy"] for x in decisions], dtype=torch.float32),
        }

    def _credit(self, decision: dict, ret: float) -> None:
        self.last.update({"policy/return": ret, "policy/return_round": decision["round"], "policy/baseline": self.baseline})
        self._learn(decision, ret)
        self._track(ret)

    def _learn(self, decision: dict, ret: float) -> None:
        """One REINFORCE step, once two returns have given the baseline a mean and a spread."""
        if self.frozen or self.updates < 2:
            return
        advantage = (ret - self.baseline) / max(math.sqrt(self.var), _SIGMA_FLOOR)
        advantage = max(-5.0, min(5.0, advantage))  # one freak round must not wreck the policy
        loss = reinforce_loss(self.net(decision["state"][None]), torch.tensor([decision["actions"]]), advantage,
                              self.entropy_coef)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def _track(self, ret: float) -> None:
        """Moving average and variance of the returns; a plain mean over the first 1/rate of them."""
        self.updates += 1
        rate = max(self.rate, 1.0 / self.updates)
        deviation = ret - self.baseline if self.updates > 1 else 0.0
        self.baseline = ret if self.updates == 1 else self.baseline + rate * deviation
        self.var = (1 - rate) * self.var + rate * deviation**2 if self.updates > 1 else 0.0

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.opt.state_dict(), "rng": self.rng.get_state(),
                "baseline": self.baseline, "var": self.var, "updates": self.updates, "state": self.state,
                "prev": dict(self.prev), "pending": self.pending, "window": [dict(d) for d in self.window],
                "last": dict(self.last), "decisions": [dict(d) for d in self.decisions]}

    def load_state_dict(self, state: dict) -> None:
        if "window" not in state:
            raise UserError("this checkpoint's policy predates the policy's own reward check (its rewards meant "
                            "something else); start the run afresh instead of resuming it")
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        self.baseline, self.var, self.updates = float(state["baseline"]), float(state["var"]), int(state["updates"])
        self.state, self.prev, self.pending, self.last = state["state"], dict(state["prev"]), state["pending"], dict(state["last"])
        self.window = [dict(d) for d in state["window"]]
        self.decisions = [dict(d) for d in state.get("decisions", [])]  # absent in checkpoints older than the record


def save_policy_file(controller: PolicyController, path: str | Path) -> None:
    """The policy's weights and grids, to drive another run (``--policy-file``)."""
    from ..checkpoint import save_checkpoint

    net = controller.net
    save_checkpoint({"kind": "policy", "grids": {k: list(v) for k, v in controller.grids.items()},
                     "state_dim": net.state_dim, "hidden": net.hidden, "net": net.state_dict()}, path)


def load_policy_file(controller: PolicyController, path: str | Path) -> None:
    """Load weights saved by :func:`save_policy_file`; the grids must be this run's grids."""
    from ..checkpoint import read_checkpoint

    if not Path(path).is_file():
        raise UserError(f"policy file {str(path)!r} not found")
    payload = read_checkpoint(path)
    if payload.get("kind") != "policy":
        raise UserError(f"{str(path)!r} is not a policy file (save one with --save-policy)")
    grids = {k: tuple(v) for k, v in payload["grids"].items()}
    if grids != controller.grids:
        raise UserError(f"policy file {str(path)!r} was trained on grids {grids}, this run's are {controller.grids}; "
                        "pass the same --policy-* grids")
    try:
        controller.net.load_state_dict(payload["net"])
    except RuntimeError as exc:
        raise UserError(f"policy file {str(path)!r} does not fit this policy (--policy-hidden "
                        f"{controller.net.hidden}, file {payload.get('hidden')}): {str(exc).splitlines()[0]}") from None


register_controller("policy", PolicyController)
