"""How many Ray Train workers a run gets, with what resources, and which device each trains on.

Ray-free until :meth:`WorkerSpec.scaling_config` is called, so the CLI checks the flags (and
``--workers 1``, the plain in-process loop, never imports Ray).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UserError

__all__ = ["WorkerSpec", "check_device_request", "worker_device"]


@dataclass(frozen=True)
class WorkerSpec:
    """``workers`` data-parallel processes, each holding ``cpus_per_worker`` CPUs and
    ``gpus_per_worker`` GPUs. One worker without a GPU is the plain loop (no Ray); one worker
    with a GPU runs under Ray Train (the single-GPU Train smoke of benchmarks/gpu_check.py)."""

    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def __post_init__(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise UserError(f"--workers must be a whole number >= 1, got {self.workers!r}")
        for name, low in (("gpus_per_worker", 0.0), ("cpus_per_worker", None)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise UserError(f"--{name.replace('_', '-')} expects a number, got {value!r}")
        if self.gpus_per_worker < 0:
            raise UserError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker:g}")
        if self.cpus_per_worker <= 0:
            raise UserError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker:g}")
        if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
            raise UserError(f"--gpus-per-worker above 1 must be a whole number, got {self.gpus_per_worker:g}")

    @property
    def uses_ray(self) -> bool:
        return self.workers > 1 or self.gpus_per_worker > 0

    def resources(self) -> dict[str, float]:
        """One worker's Ray resources."""
        res = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker > 0:
            res["GPU"] = float(self.gpus_per_worker)
        return res

    def total(self) -> dict[str, float]:
        return {k: v * self.workers for k, v in self.resources().items()}

    def threads(self) -> int:
        """torch intra-op threads per worker: its whole CPUs, at least one."""
        return max(1, int(self.cpus_per_worker))

    def scaling_config(self):
        from ray.train import ScalingConfig

        return ScalingConfig(num_workers=self.workers, use_gpu=self.gpus_per_worker > 0, resources_per_worker=self.resources())


def check_device_request(device: str, spec: WorkerSpec) -> None:
    """Refuse a ``device`` the workers' resources cannot honour, before anything starts.

    Devices follow resources: a worker with no GPU in its resources trains on the CPU even on a
    GPU node (Ray 2.60 no longer hides the node's GPUs from actors that asked for none, so
    ``auto`` would silently share ``cuda:0``); a worker with a GPU trains on the one Ray gave it.
    """
    if device.startswith("cuda") and spec.gpus_per_worker == 0:
        raise UserError(f"--device {device} with --workers needs --gpus-per-worker > 0: a worker without a GPU "
                        "in its resources trains on the CPU")
    if device == "cpu" and spec.gpus_per_worker > 0:
        raise UserError("--device cpu reserves GPUs it would not use; drop --gpus-per-worker or use --device auto")
    if ":" in device:
        raise UserError(f"--device {device}: with --workers each worker trains on the GPU Ray assigns it; "
                        "use --device auto or cuda")


def worker_device(spec: WorkerSpec) -> torch.device:
    """The device of the calling Ray Train worker: its own GPU if its resources hold one, else the CPU."""
    if spec.gpus_per_worker == 0:
        return torch.device("cpu")
    import ray.train.torch

    device = ray.train.torch.get_device()
    if device.type != "cuda":
        raise RuntimeError(f"this worker asked for {spec.gpus_per_worker:g} GPU but torch sees none ({device})")
    return device
