"""A picture of what the attacks did: clean images, adversarial images, and the perturbations."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

__all__ = ["ShownExamples", "save_examples"]


class ShownExamples:
    """Which adversarial to draw for each of the first ``keep`` examples, updated attack by attack.

    One that fools the model beats one that does not; among equals the ``preferred`` attack's
    (PGD: its perturbation is the most typical picture), else the first. Examples never attacked
    (clean errors) keep their clean image.
    """

    def __init__(self, x: torch.Tensor, pred_clean: torch.Tensor, keep: int):
        self.keep = min(keep, len(x))
        self.rank: list = [None] * self.keep
        self.pred_clean = pred_clean[: self.keep].clone()
        self.x, self.pred = list(x[: self.keep]), list(self.pred_clean)

    def update(self, idx: torch.Tensor, x_adv: torch.Tensor, pred: torch.Tensor, fooled: torch.Tensor, preferred: bool) -> None:
        """``idx`` ``(b,)``: the examples' positions; ``x_adv``, ``pred``, ``fooled`` for those examples."""
        sel = idx < self.keep
        for j, i in zip(sel.nonzero().flatten().tolist(), idx[sel].tolist()):
            rank = (bool(fooled[j]), preferred)
            if self.rank[i] is None or rank > self.rank[i]:
                self.rank[i], self.x[i], self.pred[i] = rank, x_adv[j], pred[j]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_adv, pred_clean, pred_adv)`` of the kept examples."""
        if not self.keep:
            return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        return torch.stack(self.x), self.pred_clean, torch.stack(self.pred)


def _as_image(t: torch.Tensor):
    """``(C, H, W)`` in [0, 1] -> an array imshow understands (``(H, W)`` grey or ``(H, W, 3)``)."""
    t = t.detach().cpu().clamp(0, 1)
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def save_examples(path: str | Path, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pred_clean: torch.Tensor,
                  pred_adv: torch.Tensor, *, norm: str = "linf", max_examples: int = 8, title: str = "") -> Path:
    """Save a 3-row grid (clean / adversarial / perturbation) of up to ``max_examples`` images as a PNG.

    ``x`` and ``x_adv`` are ``(B, C, H, W)`` in [0, 1] with 1 or 3 channels. Each perturbation
    is scaled to its own largest pixel (grey = 0), so even eps = 2/255 is visible; its real size
    in the threat model's norm is in the title. Written through a temporary file and a rename.
    """
    # A bare Figure on the Agg canvas: no display, and no change to pyplot's global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = min(max_examples, len(x))
    if k == 0:
        raise ValueError("no examples to draw")
    fig = Figure(figsize=(1.6 * k, 5.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, k, squeeze=False)
    grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if x.shape[1] == 1 else {}
    for j in range(k):
        delta = (x_adv[j] - x[j]).detach().cpu()
        size = delta.abs().max().item() if norm == "linf" else delta.norm().item()
        shown = delta / (2 * max(delta.abs().max().item(), 1e-12)) + 0.5
        cells = [(x[j], f"y={int(y[j])} pred={int(pred_clean[j])}"), (x_adv[j], f"adv pred={int(pred_adv[j])}"),
                 (shown, f"{norm} {size:.3f}")]
        for row, (img, text) in enumerate(cells):
            ax = axes[row][j]
            ax.imshow(_as_image(img), **grey)
            ax.set_title(text, fontsize=8, color="red" if row == 1 and int(pred_adv[j]) != int(y[j]) else "black")
            ax.axis("off")
    for row, label in enumerate(("clean", "adversarial", "perturbation (scaled)")):
        axes[row][0].text(-0.15, 0.5, label, transform=axes[row][0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
