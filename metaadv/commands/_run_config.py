"""How ``metaadv train`` and ``metaadv meta`` turn their flags into a run's config, fresh or resumed."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from ..config import read_config_file
from ..errors import UserError

S = argparse.SUPPRESS  # flags not given stay out of the namespace, so a --config file is not overridden by defaults

# Namespace entries that steer the command rather than the run.
NOT_CONFIG = frozenset({"config", "command", "_run", "out", "resume", "quiet", "save_policy",
                        "workers", "gpus_per_worker", "cpus_per_worker", "address"})


def given_values(args: argparse.Namespace) -> dict:
    """What was given explicitly: the ``--config`` file's keys, with the flags given on top."""
    values = read_config_file(args.config) if hasattr(args, "config") else {}
    values.update({k: v for k, v in vars(args).items() if k not in NOT_CONFIG})
    return values


def run_config(args: argparse.Namespace, config_cls, read_checkpoint: Callable[[str], dict]):
    """The config of a fresh run, or, with ``--resume``, the stored config with what was given on top.

    A resumed run's folder loop then refuses anything that differs from the stored run.
    """
    given = given_values(args)
    if not args.resume:
        return config_cls.from_dict(given)
    stored = read_checkpoint(os.path.join(args.out, "checkpoint.pt"))["config"]
    return config_cls.from_dict({**stored, **given})


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """``--workers N --gpus-per-worker G --cpus-per-worker C [--address ADDR]``: Ray Train data parallelism."""
    g = p.add_argument_group("data-parallel workers (Ray Train; docs/cluster.md)")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="data-parallel workers, each training on its slice of every batch (default 1: the plain "
                        "in-process loop, no Ray)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="GPUs per worker (default 0: workers train on the CPU even on a GPU node)")
    g.add_argument("--cpus-per-worker", type=float, default=None, metavar="C",
                   help="CPUs per worker, fractions allowed (default 1); torch uses its whole CPUs as threads")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="join this Ray cluster ('auto', host:port) instead of starting a local one")


def worker_spec(args: argparse.Namespace):
    """The workers asked for; ``None`` for the plain in-process loop. Flags that need Ray Train
    without asking for it are refused rather than ignored."""
    from ..distributed.workers import WorkerSpec

    spec = WorkerSpec(args.workers, args.gpus_per_worker, 1.0 if args.cpus_per_worker is None else args.cpus_per_worker)
    if spec.uses_ray:
        return spec
    for flag, value in (("--cpus-per-worker", args.cpus_per_worker), ("--address", args.address)):
        if value is not None:
            raise UserError(f"{flag} applies to Ray Train runs; add --workers N (N > 1) or --gpus-per-worker")
    return None


def warn_if_bf16_is_emulated(precision: str, device: str) -> None:
    """Say at start, in one line on stderr, that an explicit bf16 request will be emulated here.

    A device that cannot be resolved here (a GPU that only the Ray workers have) is not judged.
    """
    from ..training.precision import emulated_bf16_warning
    from ..training.trainer import resolve_device

    try:
        line = emulated_bf16_warning(precision, resolve_device(device))
    except UserError:
        return
    if line:
        print(f"metaadv: {line}", file=sys.stderr, flush=True)
