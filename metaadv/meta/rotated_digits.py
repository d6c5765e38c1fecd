"""``mnist5k-rot``: every MNIST digit at 0, 90, 180 and 270 degrees as its own class.

More classes from the same images, the way MAML's Omniglot setup multiplies characters by four
rotations (Santoro et al. 2016; Finn et al. 2017, arXiv:1703.03400). The split is by *digit*:
digits 0-5 (all their kept rotations) are meta-train, digits 6-9 meta-test, so no digit's
rotations straddle the split.

A rotation that makes a digit look like another kept class is dropped (one of each such pair
stays), so that a task never asks to tell apart two classes no reader could:

- 6 and 9 are each other's half turn (6 at 180 is 9 at 0, 6 at 270 is 9 at 90, ...);
- 1, 8 and (in handwriting) 5 look alike at 0 and 180 degrees, hence also at 90 and 270;
- 0 looks alike at every quarter turn (many handwritten zeros are nearly round).

So 0 keeps only 0 degrees, 1, 5, 6, 8 and 9 keep 0 and 90 degrees, and 2, 3, 4 and 7 keep all
four turns. The 27 classes that remain (``d@a`` = digit d turned a degrees counterclockwise):

- meta-train (17): 0@0, 1@0 1@90, 2@0 2@90 2@180 2@270, 3@0 3@90 3@180 3@270,
  4@0 4@90 4@180 4@270, 5@0 5@90;
- meta-test (10): 6@0 6@90, 7@0 7@90 7@180 7@270, 8@0 8@90, 9@0 9@90.

The pairs were confirmed by measurement (docs/meta-learning.md, "mnist5k-rot"): a softmax
regression on all 40 rotated classes confuses them most (rate i -> j plus j -> i: 1@0/1@180 0.73,
8@0/8@180 0.26, 6@180/9@0 0.21, 0@0/0@180 0.21, 5@0/5@180 0.14; the next pair 0.07), and with 0@180
gone 0@0/0@90 still 0.17-0.20. ``tests/test_meta_rotated.py`` checks that a classifier tells the 27
kept classes apart as well as it tells two upright digits apart, and that the same check flags
6@180 and 9@0 when both are kept.

Rotations turn about the digit's centre, not the image's: MNIST puts the centre of mass of every
digit at pixel (14, 14), and ``torch.rot90`` about the image centre (13.5, 13.5) moves it to 13 on
the turned axes, so a turned digit is shifted back by one pixel (zero fill). Otherwise a pixel
offset, not the shape, would tell 0@0 from 0@180.

Class ids are ``4 * digit + quarter_turns``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KEPT_TURNS", "ROT_SPLIT", "class_id", "class_name", "kept_classes", "rotated_classes", "turn_digits"]

HALF_TURN_ALIKE = (1, 5, 6, 8, 9)  # keep only 0 and 90 degrees of these digits
QUARTER_TURN_ALIKE = (0,)  # keep only 0 degrees
KEPT_TURNS = {d: (0,) if d in QUARTER_TURN_ALIKE else (0, 1) if d in HALF_TURN_ALIKE else (0, 1, 2, 3) for d in range(10)}
ROT_SPLIT = ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9))  # (meta-train digits, meta-test digits)


def class_id(digit: int, turns: int) -> int:
    return 4 * digit + turns


def class_name(cid: int) -> str:
    """``"6@90"`` for class id 25."""
    return f"{cid // 4}@{90 * (cid % 4)}"


def kept_classes(digits: tuple[int, ...], kept: dict[int, tuple[int, ...]] | None = None) -> list[int]:
    """Class ids of ``digits`` at their kept turns (``kept`` overrides :data:`KEPT_TURNS`, for tests)."""
    kept = KEPT_TURNS if kept is None else kept
    return [class_id(d, k) for d in digits for k in kept[d]]


def turn_digits(x: torch.Tensor, turns: int) -> torch.Tensor:
    """Images ``(B, 1, 28, 28)`` turned ``turns`` quarter turns counterclockwise about pixel (14, 14)."""
    out = torch.rot90(x, turns, dims=(-2, -1))
    if turns % 4 in (1, 2):  # the centre's row moved from 14 to 13: one row down
        out = F.pad(out, (0, 0, 1, 0))[..., : x.shape[-2], :]
    if turns % 4 in (2, 3):  # the centre's column moved from 14 to 13: one column right
        out = F.pad(out, (1, 0, 0, 0))[..., :, : x.shape[-1]]
    return out


def rotated_classes(x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of digit ``c // 4`` turned ``c % 4`` times, for each class id ``c`` in ``classes``.

    ``y`` holds digit labels; the result's labels are class ids. One rot90 per class, not per image.
    """
    xs, ys = [], []
    for c in classes:
        mask = y == c // 4
        xs.append(turn_digits(x[mask], c % 4))
        ys.append(torch.full((int(mask.sum()),), c, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)
