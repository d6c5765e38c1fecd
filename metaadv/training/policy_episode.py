"""One episode of ``metaadv policy train``: a whole training run driven by a frozen policy.

The episode is a plain :class:`TrainingRun` on its own seed, with the policy controller acting
with the meta-policy's weights and never updating them (``policy_frozen``). What comes back is
what the meta-trainer needs: the return (the last row's ``val/robust_acc``, the validation
split's PGD accuracy at the target eps), the run's cost, and the decisions the policy made.
Ray-free: the Ray adapter (:mod:`metaadv.distributed.policy_episodes`) runs it as a task.
"""

from __future__ import annotations

from ..config import TrainConfig
from .policy import PolicyController
from .run import TrainingRun
from .trainer import DivergedError

__all__ = ["COST_COLUMNS", "EPISODE_SEED_BASE", "episode_config", "episode_seed", "run_episode"]

# Meta-training episode e trains on seed EPISODE_SEED_BASE + e. Deployed and judged runs use seeds
# below it (studies use 0, 1, ...): a policy is never tested on a seed it was trained on.
EPISODE_SEED_BASE = 30_000
EPISODE_SEED_SPAN = 10_000  # episodes per meta-training at most, so the range is [30_000, 40_000)
# What one episode cost, in the metrics row's units (forward+backward passes times examples):
# training, the policy's per-round reward check (its state), the per-round validation attack.
COST_COLUMNS = ("cost/grad_evals", "cost/reward_grad_evals", "cost/eval_grad_evals")


def episode_seed(episode: int) -> int:
    return EPISODE_SEED_BASE + episode


def episode_config(config: TrainConfig, seed: int) -> TrainConfig:
    """The run an episode trains: ``config`` on ``seed``, the policy controller frozen, no policy file
    (the meta-policy's weights are handed over directly, so a worker needs no file)."""
    return TrainConfig.from_dict({**config.to_dict(), "seed": seed, "controller": "policy", "policy_frozen": True,
                                  "policy_file": ""})


def run_episode(config: dict, net_state: dict, seed: int) -> dict:
    """Train ``config`` (a TrainConfig's dict, plus an optional ``val_eps``) on ``seed`` with the policy weights ``net_state``.

    Returns ``return``, ``diverged``, ``rounds``, ``seconds``, the three :data:`COST_COLUMNS` and
    ``decisions`` (:meth:`PolicyController.decision_record`). A run whose loss diverges ends
    there with return 0 (no robust accuracy left to count), its last decision included: a failed
    run is a bad outcome of its decisions, not a missing episode.
    """
    values = dict(config)
    val_eps = values.pop("val_eps", None)  # as a Tune trial does (metaadv.tune.kinds): the policy trains at eps,
    train_config = episode_config(TrainConfig.from_dict(values), seed)  # the return is validated at val_eps
    controller = PolicyController(train_config)
    controller.net.load_state_dict(net_state)
    run_config = train_config if val_eps is None else train_config.replace(eps=float(val_eps))
    run = TrainingRun(run_config, controller=controller)
    diverged = False
    try:
        while not run.done:
            run.step()
    except DivergedError:
        diverged = True
    t = run.trainer
    return {
        "return": 0.0 if diverged or not run.rows else float(run.rows[-1]["val/robust_acc"]),
        "diverged": diverged, "rounds": len(run.rows), "seconds": run.seconds,
        "cost/grad_evals": int(t.grad_evals), "cost/reward_grad_evals": int(t.reward_grad_evals),
        "cost/eval_grad_evals": int(t.eval_grad_evals),
        "decisions": {k: v.clone() for k, v in controller.decision_record(include_pending=diverged).items()},
    }

