"""The ``torch.distributed`` side of data parallelism: :class:`TorchDistributed` joins the round
loops' numbers over the processes of an initialised process group (gloo on CPU, NCCL on GPU).

Ray-free: Ray Train (:mod:`metaadv.distributed.train`) starts the processes and the group; the
tests also start them with ``torch.multiprocessing``. The classifier is wrapped in
``DistributedDataParallel`` (``ray.train.torch.prepare_model`` under Ray); modules DDP cannot
serve (a perturbation generator trained against a frozen classifier, a meta-batch's per-task
backward passes, second-order meta-gradients: DDP has no double backward) have their gradients
all-reduced by hand, in one flat buffer per call as DDP's buckets do.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..training.parallel import Shard, split

__all__ = ["TorchDistributed", "has_batchnorm"]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class TorchDistributed:
    """The :class:`~metaadv.training.parallel.DataParallel` of an initialised process group.

    ``wrap`` gives DDP by default; ``wrap_model`` replaces it (Ray Train's ``prepare_model``).
    ``average_gradients=False`` is the negative control of the tests: every process steps on its
    own slice's gradient, so the processes drift apart and away from the single-process run.
    """

    def __init__(self, *, wrap_model: Callable[[nn.Module], nn.Module] | None = None, average_gradients: bool = True):
        if not dist.is_initialized():
            raise RuntimeError("TorchDistributed needs an initialised torch.distributed process group")
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()
        self._wrap_model = wrap_model
        self._average = average_gradients

    def shard(self, indices: torch.Tensor) -> Shard:
        return split(indices, self.world_size, self.rank)

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self._average:
            return model
        if self._wrap_model is not None:
            return self._wrap_model(model)
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        out = value.detach().to(self._device(), copy=True)  # NCCL reduces CUDA tensors only
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(value.device)

    def max(self, value: float) -> float:
        out = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return float(out.item())

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        if self._average:
            self._reduce_gradients(params, 1.0 / self.world_size)

    def sum_gradients(self, params: Iterable[torch.Tensor]) -> None:
        if self._average:
            self._reduce_gradients(params, 1.0)

    def _reduce_gradients(self, params: Iterable[torch.Tensor], scale: float) -> None:
        """All-reduce the ``.grad`` of trainable ``params`` in one flat buffer, times ``scale``.

        A parameter without a gradient on every process keeps none (the optimizer then skips it,
        as it would in one process); one with a gradient somewhere gets the sum, zeros elsewhere.
        """
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        device = params[0].device
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                         + [present])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        grads, present = flat[: -len(params)], flat[-len(params):]
        start = 0
        for p, seen in zip(params, present.tolist()):
            n = p.numel()
            if seen:
                g = grads[start : start + n].view(p.shape)
                # In the parameter's memory layout (the generators are channels_last), as autograd
                # would make it: a gradient accumulated into it later keeps to the layout contract.
                p.grad = torch.empty_like(p).copy_(g * scale if scale != 1.0 else g)
            start += n

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
