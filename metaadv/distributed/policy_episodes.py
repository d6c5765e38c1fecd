"""``metaadv policy train``'s episodes as Ray tasks: a batch side by side, one CPU each.

The meta-trainer (:mod:`metaadv.training.policy_train`) is Ray-free; it hands each batch to the
runner this module makes. The batch's config and policy weights go to the object store once.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from ..errors import UserError
from .ray_session import ensure_ray

__all__ = ["ray_episode_runner"]


@contextmanager
def ray_episode_runner(address: str | None, parallel: int) -> Iterator[Callable]:
    """Join ``address`` (or start a local Ray of ``min(parallel, CPUs)`` CPUs) and yield a batch runner
    ``run_batch(episode_fn, config, net_state, seeds) -> results`` (in the seeds' order); a Ray this
    started is shut down on exit."""
    import ray

    started = ensure_ray(address, None if address else max(1, min(parallel, os.cpu_count() or 1)))

    def run_batch(episode_fn: Callable, config: dict, net_state: dict, seeds: list) -> list:
        task = ray.remote(num_cpus=1)(episode_fn)
        config_ref, weights_ref = ray.put(config), ray.put(net_state)
        pending = {task.remote(config_ref, weights_ref, seed): i for i, seed in enumerate(seeds)}
        results: list = [None] * len(seeds)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                for ref in pending:
                    ray.cancel(ref)
                first = str(exc).strip().splitlines()[-1][:300]
                raise UserError(f"the episode on seed {seeds[i]} failed ({first}); the finished batches are kept: "
                                "continue with --resume") from None
        return results

    try:
        yield run_batch
    finally:
        if started:
            ray.shutdown()
