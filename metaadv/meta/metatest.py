"""The meta-test of a finished run: 600 (by default) seeded tasks of unseen classes.

The tasks depend only on the data set, the task shape and ``seed``, so every method's checkpoint
is measured on exactly the same tasks and the same PGD random starts.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..errors import UserError
from ..training.trainer import resolve_device
from .config import MetaConfig
from .data import load_meta_data
from .evaluate import evaluate_tasks
from .learner import build_meta_model
from .run import read_meta_checkpoint

__all__ = ["meta_test"]


def _task_stream(pool, n: int, ways: int, shots: int, queries: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield pool.sample(ways, shots, queries, g)


def meta_test(checkpoint: str | Path, *, tasks: int = 600, eps: float | None = None, pgd_steps: int = 20,
              inner_steps: int | None = None, attack_support: bool = False, queries: int | None = None,
              seed: int = 0, device: str = "auto", data_dir: str | None = None) -> dict:
    """Few-shot accuracy of ``checkpoint`` on meta-test tasks, clean and under PGD, with 95% CIs.

    ``eps`` (default: the run's), ``inner_steps`` (default: the run's evaluation steps) and
    ``queries`` (default: the run's) may be overridden; ways and shots are the run's, since the
    model's head has ``ways`` outputs and the meta-learned initialisation is tuned to ``shots``.
    """
    if tasks < 1 or pgd_steps < 1:
        raise UserError(f"tasks and pgd_steps must be >= 1, got {tasks} and {pgd_steps}")
    state = read_meta_checkpoint(checkpoint)
    config = MetaConfig.from_dict(state["config"])
    eps = config.eps if eps is None else eps
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"eps must be in [0, 1] (pixel units), got {eps}")
    for name, value in (("inner_steps", inner_steps), ("queries", queries)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    steps = inner_steps or config.test_inner_steps
    queries = queries or config.queries
    dev = resolve_device(device)
    data = load_meta_data(config.dataset, data_dir or config.data_dir or None, config.download, ("test",))
    pool = data.pools["test"]
    pool.check(config.ways, config.shots, queries)
    model = build_meta_model(state["arch"], state["model_kwargs"])
    try:
        model.load_state_dict(state["learner"]["model"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"checkpoint weights do not fit {state['arch']!r}: {str(exc).splitlines()[0]}") from None
    model.to(dev)
    start = time.perf_counter()
    result = evaluate_tasks(model, _task_stream(pool, tasks, config.ways, config.shots, queries, seed), device=dev,
                            seed=seed, inner_steps=steps, inner_lr=config.inner_lr, eps=eps, pgd_steps=pgd_steps,
                            norm=config.norm, attack_support=attack_support)
    return {"checkpoint": str(checkpoint), "method": config.method, "dataset": config.dataset,
            "ways": config.ways, "shots": config.shots, "queries": queries, "inner_steps": steps,
            "inner_lr": config.inner_lr, "eps": eps, "norm": config.norm, "pgd_steps": pgd_steps,
            "attack_support": attack_support, "seed": seed, **result.summary(),
            "grad_evals": result.passes, "seconds": round(time.perf_counter() - start, 3)}
