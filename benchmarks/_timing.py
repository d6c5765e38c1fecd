"""Timing shared by the benchmarks: settings' rounds interleaved, on a clock that suits the device.

On a CPU the clock is this process's CPU time: on a shared machine, load that comes and goes
hits every setting alike and does not bill a setting for time spent waiting. With more than one
torch thread it sums the threads (the work done, not the wall time). On CUDA it is wall time
with the device synchronised.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

__all__ = ["add_round_args", "clock", "header", "interleaved_round_seconds"]


def add_round_args(p) -> None:
    """The flags every round benchmark takes."""
    p.add_argument("--steps-per-round", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per setting (median reported)")
    p.add_argument("--device", default="cpu")


def header(args) -> str:
    """The first line of a round benchmark's output: what was measured, on what."""
    unit = "CPU seconds" if torch.device(args.device).type == "cpu" else "wall seconds"
    return (f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
            f"{args.steps_per_round} steps x batch 100 per round, median of {args.rounds}, rounds in {unit}")


def clock(device: str) -> Callable[[], float]:
    if torch.device(device).type == "cuda":
        def cuda_clock() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return cuda_clock
    return time.process_time


def interleaved_round_seconds(trainers: dict, rounds: int, device: str) -> dict[str, tuple[float, float]]:
    """Median seconds of a round and grad evals per example, per setting.

    ``trainers`` maps a name to ``(Trainer, HParams)``, each already warmed up by one round.
    Rounds of the settings alternate, so slow drifts of the machine touch them all alike.
    """
    now = clock(device)
    times = {name: [] for name in trainers}
    start = {name: t.grad_evals for name, (t, _) in trainers.items()}
    for _ in range(rounds):
        for name, (trainer, hp) in trainers.items():
            t = now()
            trainer.train_round(hp)
            times[name].append(now() - t)
    out = {}
    for name, (trainer, _) in trainers.items():
        examples = rounds * trainer.config.steps_per_round * trainer.config.batch_size
        out[name] = (statistics.median(times[name]), (trainer.grad_evals - start[name]) / examples)
    return out
