"""Run code in a few forked processes joined in a gloo process group: the data-parallel tests' setup.

Forked, not spawned: a fork shares the parent's imports, so a group starts in a second instead of
the half minute that re-importing torch takes on a busy 2-core machine. Each process returns one
picklable value through a file. No Ray here: Ray Train's own wiring is tested in
tests/test_distributed_ray.py; what this checks is the arithmetic every worker does.
"""

from __future__ import annotations

import contextlib
import math
import os
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _child(rank: int, fn: Callable, world_size: int, folder: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        result = fn(rank, *args)
        torch.save({"result": result}, os.path.join(folder, f"rank{rank}.pt"))
    except BaseException:
        Path(folder, f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def run_group(fn: Callable, world_size: int, folder: Path, *args) -> list:
    """``[fn(rank, *args) for rank in range(world_size)]``, each in its own process of one group."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mp.start_processes(_child, args=(fn, world_size, str(folder), args), nprocs=world_size, start_method="fork")
    except mp.ProcessRaisedException:
        errors = "\n".join(p.read_text() for p in sorted(folder.glob("rank*.err")))
        raise AssertionError(f"a worker failed:\n{errors}") from None
    return [torch.load(folder / f"rank{r}.pt", weights_only=False)["result"] for r in range(world_size)]


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest ``||a_k - b_k|| / ||b_k||`` over the tensors of two state dicts (floating ones)."""
    assert a.keys() == b.keys()
    worst = 0.0
    for k, ref in b.items():
        if ref.is_floating_point():
            worst = max(worst, ((a[k] - ref).norm() / ref.norm().clamp_min(1e-12)).item())
    return worst


def same_rows(got: list[dict], want: list[dict]) -> bool:
    """Equal rows but for ``cost/seconds``: the same columns in the same order, numbers to 1e-5."""
    def same(a, b):
        if isinstance(b, float) and isinstance(a, (int, float)):
            return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
        return a == b

    return len(got) == len(want) and all(
        list(g) == list(w) and all(same(g[k], w[k]) for k in w if k != "cost/seconds") for g, w in zip(got, want))


@contextlib.contextmanager
def float64():
    """Build and train in float64: new tensors and modules (the default dtype) and the embedded
    data sets. Adversarial training is chaotic (sign steps, clamps: a last-bit difference can become
    a different perturbation), so weight-for-weight agreement after several steps only holds
    independently of the CPU's rounding in float64, where that rounding sits near 1e-16."""
    from metaadv.data import registry

    loaders = {name: getattr(registry, name) for name in ("load_sklearn_digits", "load_mnist5k")}

    def in_float64(load):
        def wrapped():
            x, y = load()
            return x.double(), y
        return wrapped

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    for name, load in loaders.items():
        setattr(registry, name, in_float64(load))
    try:
        yield
    finally:
        torch.set_default_dtype(default)
        for name, load in loaders.items():
            setattr(registry, name, load)
