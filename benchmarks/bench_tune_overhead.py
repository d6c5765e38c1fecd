"""Ray Tune overhead of metaadv's PBT adapter: 4 trials on 2 CPUs, compute-bound rounds.

    overhead = wall time of Tuner.fit / (summed round compute of all trials / concurrency)

1.0 would be perfect packing of the rounds onto the CPUs. Target <= 1.15 with 20 s rounds (a bare
Ray Tune PBT loop with 4 s rounds measured 1.39 on such a machine). Each round is fixed work (float32
matrix products) sized in the driver to last ``--round-seconds`` on one core; the trials measure
the wall and CPU time of every round themselves. The run goes through the real adapter
(``make_trainable``: checkpoint on every report, restore after each PBT pause or exploit) with a
synthetic run kind whose checkpoint is the size of a small CNN's with Adam state (4 MB).

Also printed: the fixed costs beside it (starting Ray, one trial end to end, one report with its
checkpoint, one restore). Quick look: ``--round-seconds 2``; the measured run: the defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from metaadv.tune.experiment import Size
from metaadv.tune.kinds import RunKind

MATRIX = 256  # one product: 2 * 256^3 = 34 MFLOP


def _burn(iterations: int) -> None:
    a = torch.randn(MATRIX, MATRIX)
    for _ in range(iterations):
        a = torch.tanh(a @ a * (1.0 / MATRIX))


def calibrate(seconds: float) -> int:
    """Matrix products per ``seconds`` on one thread, now."""
    torch.set_num_threads(1)
    _burn(5)
    n, start = 50, time.perf_counter()
    _burn(n)
    return max(1, int(n * seconds / (time.perf_counter() - start)))


class SyntheticRun:
    """The run-object contract (step/done/round/state_dict) with compute-bound rounds."""

    def __init__(self, config: dict):
        self.config = config
        self.rows: list[dict] = []
        self.weights = torch.zeros(1_000_000)  # 4 MB, like small-cnn weights + Adam moments

    @property
    def round(self) -> int:
        return len(self.rows)

    @property
    def done(self) -> bool:
        return self.round >= self.config["rounds"]

    def step(self) -> dict:
        wall, cpu = time.perf_counter(), time.thread_time()
        _burn(self.config["work"])
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        score = (self.rows[-1]["bench/score"] if self.rows else 0.0) - abs(self.config["lr"] - 1e-3) * 100 + 1
        row = {"round": self.round + 1, "bench/score": score, "bench/round_seconds": wall, "bench/round_cpu": cpu,
               "bench/restored": int(self.__dict__.pop("restored", False)), "hp/lr": self.config["lr"]}
        self.rows.append(row)
        return row

    def state_dict(self) -> dict:
        return {"kind": "synthetic", "rows": self.rows, "weights": self.weights}


def _restore(run: SyntheticRun, state: dict) -> None:
    # The payload is already read (read_checkpoint in the trainable); this is the load into the run.
    run.rows, run.weights = [dict(r) for r in state["rows"]], state["weights"].clone()
    run.restored = True  # marks the first row after a restore: its iteration time includes the restore


SYNTHETIC = RunKind(build=SyntheticRun, restore=_restore, diverged=(FloatingPointError,))


def experiment(args, work: int):
    from metaadv.tune.experiment import Experiment, Size
    from metaadv.tune.space import LogRange

    size = Size(args.trials, {"rounds": args.rounds, "work": work})
    return Experiment(name="bench_pbt", description="overhead benchmark", kind="synthetic", space={"lr": LogRange(1e-4, 1e-2)},
                      sizes={"smoke": size, "full": size}, scheduler="pbt", metric="bench/score", mode="max",
                      scheduler_options={"perturbation_interval": args.interval, "quantile_fraction": 0.25})


def fit(exp, storage: str, name: str):
    """The CLI's own path (run_experiment), timed around Tuner.fit and its setup."""
    from metaadv.tune.runner import RunOptions, run_experiment

    start = time.perf_counter()
    grid = run_experiment(exp, RunOptions(size="smoke", storage=storage, name=name, verbose=0), {"synthetic": SYNTHETIC})
    return grid, time.perf_counter() - start


def report(grid, wall: float, concurrency: int) -> dict:
    rows = [r for result in grid for _, r in result.metrics_dataframe.iterrows()]
    compute = sum(r["bench/round_seconds"] for r in rows)
    cpu = sum(r["bench/round_cpu"] for r in rows)
    extra = [(r["bench/restored"], r["time_this_iter_s"] - r["bench/round_seconds"]) for r in rows]
    plain, restored = ([e for flag, e in extra if flag == f] for f in (0, 1))
    return {"rounds": len(rows), "compute": compute, "cpu_share": cpu / compute, "overhead": wall / (compute / concurrency),
            "report": _median(plain), "restore": _median(restored), "restores": len(restored)}


def _median(values: list) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--round-seconds", type=float, default=20.0, help="compute per round, on one core (default 20)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per trial (default 4)")
    p.add_argument("--trials", type=int, default=4, help="PBT population (default 4)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs given to Ray; one per trial (default 2)")
    p.add_argument("--interval", type=int, default=2, help="PBT perturbation interval in rounds (default 2)")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    work = calibrate(args.round_seconds)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    ray_temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Unix socket paths are limited
    ray.init(num_cpus=args.cpus, include_dashboard=False, _temp_dir=ray_temp, log_to_driver=False)
    ray_start = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as storage:
        exp = experiment(args, work)
        _, trial_start = fit(exp.replace(sizes={k: Size(1, {"rounds": 1, "work": 0}) for k in ("smoke", "full")}), storage, "one")
        grid, wall = fit(exp, storage, "pbt")
        exploits = len((Path(grid.experiment_path) / "pbt_global.txt").read_text().splitlines()) \
            if (Path(grid.experiment_path) / "pbt_global.txt").exists() else 0
        r = report(grid, wall, min(args.cpus, args.trials))
    ray.shutdown()
    shutil.rmtree(ray_temp, ignore_errors=True)
    print(f"PBT, {args.trials} trials x {args.rounds} rounds of ~{args.round_seconds:g} s on {args.cpus} CPUs "
          f"({work} products/round; load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end)")
    print(f"  wall {wall:.1f} s   summed round compute {r['compute']:.1f} s ({r['rounds']} rounds; the rounds got "
          f"{100 * r['cpu_share']:.0f}% of a core, the rest went to other processes)   exploits {exploits}")
    print(f"  overhead = wall / (compute / {min(args.cpus, args.trials)}) = {r['overhead']:.3f}   target <= 1.15")
    print(f"  fixed costs: start Ray {ray_start:.1f} s   one trial end to end (Tuner.fit, 1 empty round) {trial_start:.1f} s   "
          f"report + checkpoint (median per round) {r['report']:.2f} s   "
          f"restart from a checkpoint (median of {r['restores']}) {r['restore']:.2f} s")


if __name__ == "__main__":
    main()
