"""Cost of one MAML meta-step against inner steps, second-order vs first-order (CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_meta.py [--inner 1 3 5] [--repeats 3]

Second-order MAML keeps every inner step on the autograd graph, so its memory should grow with
the inner steps; first-order MAML frees each step's graph, so its memory should stay flat (Finn
et al. 2017, arXiv:1703.03400, section 5.2; Nichol et al. 2018, arXiv:1803.02999).

Time: mean wall seconds of ``--repeats`` full outer steps (meta-batch of tasks, per-task
backward, Adam step) after one warm-up step, without the profiler.
Memory: peak bytes held by torch's CPU allocator during one outer step, above what was held
when it began, from torch.profiler's allocation/free events (``profile_memory=True``; the
running sum of the ``[memory]`` events' sizes in time order). tracemalloc would not see tensor
memory: torch allocates it outside Python's allocator.
Ratios are to first-order with one inner step, all measured in this one process.
Tasks come from random images of the data set's shape: cost does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import time

import torch

from metaadv.meta import ClassPool, MetaConfig, MetaData
from metaadv.meta.learner import MetaLearner


def _synthetic_data(shape=(1, 28, 28), classes=10, per_class=40) -> MetaData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(classes * per_class, *shape, generator=g)
    y = torch.arange(classes * per_class) % classes
    pool = ClassPool(x, y, name="synthetic")
    return MetaData("mnist5k", shape, (0.1307,), (0.3081,), {"train": pool, "val": pool})


def _peak_bytes(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak


def measure(data: MetaData, args, inner_steps: int, first_order: bool) -> tuple[float, int]:
    config = MetaConfig(method="maml", first_order=first_order, inner_steps=inner_steps, ways=args.ways,
                        shots=args.shots, queries=args.queries, meta_batch=args.meta_batch, val_tasks=0,
                        device="cpu")
    learner = MetaLearner(config, data, torch.device("cpu"))
    hp = config.hparams()
    learner.outer_step(hp)  # warm-up: first-call overheads, Adam state, .grad buffers
    start = time.perf_counter()
    for _ in range(args.repeats):
        learner.outer_step(hp)
    seconds = (time.perf_counter() - start) / args.repeats
    return seconds, _peak_bytes(lambda: learner.outer_step(hp))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inner", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--ways", type=int, default=3)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    data = _synthetic_data()
    print(f"# MAML meta-step on CPU: small-cnn 1x28x28, {args.ways}-way {args.shots}-shot {args.queries} queries, "
          f"meta-batch {args.meta_batch}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("# time: mean of %d outer steps; memory: peak torch CPU allocation in one outer step "
          "(torch.profiler profile_memory events)" % args.repeats)
    results = {(fo, k): measure(data, args, k, fo) for fo in (False, True) for k in args.inner}
    base_s, base_b = results[(True, args.inner[0])]
    print(f"{'mode':<13}{'inner':>6}{'s/step':>9}{'x time':>8}{'peak MiB':>10}{'x mem':>7}")
    for (fo, k), (s, b) in results.items():
        mode = "first-order" if fo else "second-order"
        print(f"{mode:<13}{k:>6}{s:>9.3f}{s / base_s:>8.2f}{b / 2**20:>10.2f}{b / base_b:>7.2f}")


if __name__ == "__main__":
    main()
