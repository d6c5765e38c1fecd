"""Shuffled mini-batches drawn from in-memory tensors on the training device.

No per-item Python loop and no DataLoader: an epoch is one seeded permutation, a batch is one
index into tensors that already live on the device. The stream's whole state is two integers
(epoch, position), so a checkpoint restores it exactly.
"""

from __future__ import annotations

import torch

__all__ = ["BatchStream"]


class BatchStream:
    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, torch.device(device)
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, None

    def _permutation(self) -> torch.Tensor:
        if self._perm_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
            self._perm_epoch = self.epoch
        return self._perm

    def next_indices(self) -> torch.Tensor:
        """Indices of the next batch; the last batch of an epoch may be smaller."""
        perm = self._permutation()
        idx = perm[self.position : self.position + self.batch_size]
        self.position += len(idx)
        if self.position >= self.n:
            self.epoch, self.position = self.epoch + 1, 0
        return idx

    def steps_left_in_epoch(self) -> int:
        return -(-(self.n - self.position) // self.batch_size)

    @property
    def examples_seen(self) -> int:
        return self.epoch * self.n + self.position

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
