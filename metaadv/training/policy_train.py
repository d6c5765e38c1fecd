"""``metaadv policy train``: one REINFORCE policy meta-trained across whole training runs.

An **episode** is a full training run (:func:`metaadv.training.policy_episode.run_episode`) on its
own seed (``EPISODE_SEED_BASE + e``), the policy acting with the current meta-policy weights and
frozen inside the run. Episodes run in batches of ``parallel`` (Ray tasks side by side, or in
this process); after each batch the policy takes one REINFORCE step (Williams 1992) on all the
batch's decisions:

    loss = -mean_i [ (G_i - b_{t_i}) / sigma * log pi(a_i | s_i) + c * H(pi(. | s_i)) ]

``G_i``: the return of decision i's episode, its final ``val/robust_acc`` (gamma = 1: every
decision of an episode gets the same return); ``b_t``: a baseline per decision index ``t``, the
moving average over earlier episodes of the returns at that index (an index no earlier episode
reached uses the batch's mean return); ``sigma``: the root mean square of the batch's
advantages. The step is Adam's (``lr``). The math is in :mod:`metaadv.models.policy`.

The folder gets ``policy.pt`` (a ``--policy-file``), ``episodes.csv``, ``meta_state.pt`` after
every batch (``resume=True`` reruns the batch that was in flight) and ``summary.json`` at the end.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import TrainConfig
from ..errors import UserError
from ..models.policy import episode_reinforce_loss, index_baselines, update_index_baselines
from .metrics import write_metrics_csv
from .policy import PolicyController, save_policy_file
from .policy_episode import COST_COLUMNS, EPISODE_SEED_SPAN, episode_seed, run_episode

__all__ = ["FILES", "MetaSettings", "break_even_models", "meta_cost", "prepare", "read_stored_state", "run_serially",
           "train_policy"]

FILES = {"policy": "policy.pt", "episodes": "episodes.csv", "state": "meta_state.pt", "summary": "summary.json",
         "config": "config.json"}
STATE_KIND = "policy-meta"

# run_batch(episode_fn, config_dict, net_state, seeds) -> one result per seed, in the seeds' order.
BatchRunner = Callable[[Callable, dict, dict, list], list]


@dataclass(frozen=True)
class MetaSettings:
    """How the meta-training runs: ``episodes`` (E), ``parallel`` (episodes per batch and update),
    Adam's ``lr``, the entropy bonus ``entropy`` (c) and the baselines' moving-average ``baseline_rate``."""

    episodes: int = 64
    parallel: int = 8
    lr: float = 0.02
    entropy: float = 0.01
    baseline_rate: float = 0.2
    # The threat model the return is validated at, where it differs from the training eps (a study
    # that trains at 0.3 and validates at 0.2, as its Tune trials do); None: the config's eps.
    val_eps: float | None = None

    def __post_init__(self):
        if not 2 <= self.episodes <= EPISODE_SEED_SPAN:
            raise UserError(f"--episodes must be between 2 and {EPISODE_SEED_SPAN} (a baseline needs more than one "
                            f"episode), got {self.episodes}")
        if self.parallel < 1:
            raise UserError(f"--parallel must be >= 1 (episodes per batch), got {self.parallel}")
        if not self.lr > 0:
            raise UserError(f"--meta-lr must be > 0, got {self.lr}")
        if not self.entropy >= 0:
            raise UserError(f"--meta-entropy must be >= 0, got {self.entropy}")
        if not 0 < self.baseline_rate <= 1:
            raise UserError(f"--meta-baseline-rate must be in (0, 1], got {self.baseline_rate}")


def run_serially(episode_fn: Callable, config: dict, net_state: dict, seeds: list) -> list:
    """The batch runner without Ray: one episode after another in this process."""
    return [episode_fn(config, net_state, seed) for seed in seeds]


def meta_cost(rows: list[dict]) -> float:
    """The meta-training's cost: the sum over episodes of :data:`COST_COLUMNS` (grad evals)."""
    return float(sum(row[c] for row in rows for c in COST_COLUMNS))


def break_even_models(meta_cost: float, per_model_cost_learned: float, per_model_cost_handmade: float) -> int | None:
    """The fewest deployed models N >= 1 with ``(meta_cost + N * learned) / N <= handmade``, or None if
    no N does (the learned policy's models cost no less than the hand-made row's)."""
    if meta_cost < 0 or per_model_cost_learned < 0 or per_model_cost_handmade < 0:
        raise ValueError("costs must be >= 0")
    saving = per_model_cost_handmade - per_model_cost_learned
    if saving < 0 or (saving == 0 and meta_cost > 0):
        return None
    if meta_cost == 0:
        return 1
    n = max(1, math.ceil(meta_cost / saving))
    while n > 1 and meta_cost + (n - 1) * per_model_cost_learned <= (n - 1) * per_model_cost_handmade:
        n -= 1  # float rounding in the division
    while meta_cost + n * per_model_cost_learned > n * per_model_cost_handmade:
        n += 1
    return n


class _MetaTrainer:
    """The policy, its optimizer and baselines, and what the finished episodes left: one batch at a time."""

    def __init__(self, config: TrainConfig, settings: MetaSettings):
        self.config, self.settings = config, settings
        self.controller = PolicyController(config)  # the fresh run's initial policy (or --policy-file's)
        self.net = self.controller.net
        self.opt = torch.optim.Adam(self.net.parameters(), lr=settings.lr)
        self.baselines: list[float] = []
        self.counts: list[int] = []
        self.rows: list[dict] = []
        self.batches = 0

    @property
    def episodes_done(self) -> int:
        return len(self.rows)

    @property
    def finished(self) -> bool:
        return self.episodes_done >= self.settings.episodes

    def next_episodes(self) -> list[int]:
        start = self.episodes_done
        return list(range(start, min(start + self.settings.parallel, self.settings.episodes)))

    def run_batch(self, run_batch: BatchRunner, episode_fn: Callable) -> dict:
        episodes = self.next_episodes()
        weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        config = self.config.to_dict()
        if self.settings.val_eps is not None:
            config["val_eps"] = float(self.settings.val_eps)
        results = run_batch(episode_fn, config, weights, [episode_seed(e) for e in episodes])
        loss = self.update(results)
        for e, r in zip(episodes, results):
            self.rows.append(_episode_row(e, self.batches, r))
        self.batches += 1
        returns = [r["return"] for r in results]
        return {"batch": self.batches - 1, "episodes": episodes, "mean_return": sum(returns) / len(returns), "loss": loss}

    def update(self, results: list[dict]) -> float | None:
        """One REINFORCE step on the batch's decisions, then the baselines take in its returns."""
        decisions = [r["decisions"] for r in results]
        index = torch.cat([d["index"] for d in decisions])
        loss_value = None
        if len(index):
            returns = torch.cat([torch.full((len(d["index"]),), float(r["return"])) for r, d in zip(results, decisions)])
            fallback = sum(r["return"] for r in results) / len(results)
            baselines = index_baselines(self.baselines, index, fallback)
            states = torch.cat([d["states"] for d in decisions])
            actions = torch.cat([d["actions"] for d in decisions])
            loss = episode_reinforce_loss(self.net(states), actions, returns, baselines, self.settings.entropy)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_value = loss.item()
        self.baselines, self.counts = update_index_baselines(
            self.baselines, self.counts, [(float(r["return"]), len(d["index"])) for r, d in zip(results, decisions)],
            self.settings.baseline_rate)
        return loss_value

    def state_dict(self) -> dict:
        return {"kind": STATE_KIND, "config": self.config.to_dict(), "settings": asdict(self.settings),
                "net": self.net.state_dict(), "optimizer": self.opt.state_dict(), "baselines": list(self.baselines),
                "counts": list(self.counts), "rows": [dict(r) for r in self.rows], "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["optimizer"])
        self.baselines, self.counts = [float(b) for b in state["baselines"]], [int(n) for n in state["counts"]]
        self.rows, self.batches = [dict(r) for r in state["rows"]], int(state["batches"])

    def save(self, out: Path) -> None:
        """Every file after a batch: the state last, so a stop between them reruns the batch."""
        save_policy_file(self.controller, out / FILES["policy"])
        write_metrics_csv(self.rows, out / FILES["episodes"])
        save_checkpoint(self.state_dict(), out / FILES["state"])

    def summary(self) -> dict:
        per_column = {c: float(sum(r[c] for r in self.rows)) for c in COST_COLUMNS}
        total = meta_cost(self.rows)
        last = [r["return"] for r in self.rows if r["batch"] == self.batches - 1]
        first = [r["return"] for r in self.rows if r["batch"] == 0]
        return {
            "episodes": self.episodes_done, "batches": self.batches, "parallel": self.settings.parallel,
            "optimizer": "adam", "lr": self.settings.lr, "entropy": self.settings.entropy,
            "baseline_rate": self.settings.baseline_rate,
            "seeds": [episode_seed(0), episode_seed(self.episodes_done - 1)],
            "return": "final val/robust_acc at the target eps (validation split), gamma = 1",
            "meta_cost": {"total_grad_evals": total, "columns": list(COST_COLUMNS), "per_column": per_column,
                          "per_episode_mean": total / max(1, self.episodes_done)},
            "mean_return_first_batch": sum(first) / max(1, len(first)),
            "mean_return_last_batch": sum(last) / max(1, len(last)),
            "diverged_episodes": sum(int(r["diverged"]) for r in self.rows),
            "policy_file": FILES["policy"],
        }


def _episode_row(episode: int, batch: int, result: dict) -> dict:
    entropy = result["decisions"]["entropy"]
    costs = {c: int(result[c]) for c in COST_COLUMNS}
    return {"episode": episode, "seed": episode_seed(episode), "batch": batch, "return": float(result["return"]),
            "diverged": int(result["diverged"]), "rounds": int(result["rounds"]),
            "decisions": len(result["decisions"]["index"]),
            "entropy": float(entropy.mean()) if len(entropy) else float("nan"),
            **costs, "cost/total": sum(costs.values()), "seconds": round(float(result["seconds"]), 3)}


def train_policy(config: TrainConfig, out_dir: str | Path, settings: MetaSettings, *, resume: bool = False,
                 run_batch: BatchRunner = run_serially, episode_fn: Callable = run_episode,
                 on_batch: Callable[[dict], None] | None = None) -> dict:
    """Meta-train to ``settings.episodes`` episodes in ``out_dir``; returns the summary.

    ``run_batch`` runs a batch of episodes (:func:`run_serially`, or the Ray adapter's);
    ``episode_fn(config_dict, net_state, seed) -> result`` is one episode (tests inject a toy).
    Bad input is refused before anything is written: call :func:`prepare` first to check it
    without running anything.
    """
    trainer = prepare(config, out_dir, settings, resume=resume)
    out = Path(out_dir)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        (out / FILES["config"]).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    while not trainer.finished:
        info = trainer.run_batch(run_batch, episode_fn)
        trainer.save(out)
        if on_batch:
            on_batch(info)
    summary = trainer.summary()
    (out / FILES["summary"]).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def prepare(config: TrainConfig, out_dir: str | Path, settings: MetaSettings, *, resume: bool = False) -> _MetaTrainer:
    """The meta-trainer, fresh or restored from ``out_dir``, after every check; writes nothing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder for the policy training")
    state_path = out / FILES["state"]
    if not resume:
        if state_path.exists():
            if (out / FILES["summary"]).exists():
                raise UserError(f"{str(out)!r} already holds a finished policy training (its policy.pt deploys); "
                                "choose another --out")
            raise UserError(f"{str(out)!r} already holds a policy training; add --resume to continue it or choose another --out")
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{str(out)!r} holds other files, not a policy training; choose a new or empty --out")
        return _MetaTrainer(config, settings)
    state = read_stored_state(out)
    if state["config"] != config.to_dict() or state["settings"] != asdict(settings):
        changed = [k for k, v in config.to_dict().items() if state["config"].get(k) != v]
        changed += [f"--{k.replace('_', '-')}" for k, v in asdict(settings).items() if state["settings"].get(k) != v]
        raise UserError(f"--resume continues the stored policy training; these settings differ from it: {', '.join(changed)}")
    trainer = _MetaTrainer(config, settings)
    trainer.load_state_dict(state)
    return trainer


def read_stored_state(out: str | Path) -> dict:
    """The ``meta_state.pt`` of a policy training folder, refusing any other kind of file."""
    path = Path(out) / FILES["state"]
    if not path.is_file():
        raise UserError(f"nothing to resume: {str(path)!r} not found (start without --resume)")
    return read_checkpoint(path, kind=STATE_KIND)
