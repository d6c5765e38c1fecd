"""The few-shot task sampler: shapes, permuted labels, seeding, and class splits that never mix."""

from __future__ import annotations

import pytest
import torch

from metaadv.errors import UserError
from metaadv.meta import CLASS_SPLITS, ClassPool, load_meta_data



def _indexed_pool(n_classes=5, per_class=7, rotations=False, size=4) -> ClassPool:
    """Image i is filled with i everywhere except a mark in one corner, so content identifies it."""
    n = n_classes * per_class
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).repeat(1, 1, size, size)
    x[:, :, 0, 0] = -1.0  # an asymmetric mark makes rotations visible
    y = torch.arange(n) % n_classes * 10  # class ids 0, 10, 20, ... (not 0..C-1 on purpose)
    return ClassPool(x, y, rotations=rotations, name="toy")


def test_shapes_labels_and_no_repeats():
    pool = _indexed_pool()
    task = pool.sample(3, 2, 4, torch.Generator().manual_seed(0))
    assert task.xs.shape == (6, 1, 4, 4) and task.xq.shape == (12, 1, 4, 4)
    assert task.ys.tolist() == [0, 0, 1, 1, 2, 2] and task.yq.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    ids = torch.cat([task.xs, task.xq])[:, 0, 1, 1].long()
    assert len(set(ids.tolist())) == len(ids), "an image appears twice in one task"
    # Every image belongs to the class behind its label.
    labels = torch.cat([task.ys, task.yq])
    assert torch.equal(ids % 5 * 10, task.classes[labels])


def test_labels_are_permuted_per_task():
    pool = _indexed_pool()
    g = torch.Generator().manual_seed(1)
    label_of_class_0 = set()
    for _ in range(40):
        task = pool.sample(3, 1, 1, g)
        hits = (task.classes == 0).nonzero().flatten().tolist()
        label_of_class_0.update(hits)
    assert label_of_class_0 == {0, 1, 2}


def test_seeded():
    pool = _indexed_pool()
    a = pool.sample_many(5, 3, 2, 2, seed=7)
    b = pool.sample_many(5, 3, 2, 2, seed=7)
    c = pool.sample_many(5, 3, 2, 2, seed=8)
    assert all(torch.equal(s.xs, t.xs) and torch.equal(s.xq, t.xq) for s, t in zip(a, b))
    assert any(not torch.equal(s.xs, t.xs) for s, t in zip(a, c))


def test_rotations_are_extra_classes():
    pool = _indexed_pool(n_classes=2, per_class=3, rotations=True)
    assert pool.num_classes == 8
    g = torch.Generator().manual_seed(0)
    seen_turns = set()
    for _ in range(20):
        task = pool.sample(4, 1, 1, g)
        for j, k in enumerate(task.rotations.tolist()):
            seen_turns.add(k)
            img = task.xs[task.ys == j][0]
            original = pool.x[int(img[0, 1, 1])]  # the fill value survives rotation
            assert torch.equal(img, torch.rot90(original, k, dims=(-2, -1)))
    assert seen_turns == {0, 1, 2, 3}


def test_check_rejects_impossible_tasks():
    pool = _indexed_pool(n_classes=3, per_class=4)
    with pytest.raises(UserError, match="ways=4"):
        pool.check(4, 1, 1)
    with pytest.raises(UserError, match="shots \\+ queries = 5"):
        pool.check(3, 2, 3)
    pool.check(3, 2, 2)


def test_digits_meta_splits_never_mix():
    data = load_meta_data("digits")
    train_cls, test_cls = CLASS_SPLITS["digits"]
    assert data.pools["train"].labels.tolist() == list(train_cls)
    assert data.pools["val"].labels.tolist() == list(train_cls)
    assert data.pools["test"].labels.tolist() == list(test_cls)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        assert set(data.pools["train"].sample(3, 1, 2, g).classes.tolist()) <= set(train_cls)
        assert set(data.pools["test"].sample(3, 1, 2, g).classes.tolist()) <= set(test_cls)
    # Meta-validation holds other images than meta-train: no image tensor is in both.
    train_x, val_x = data.pools["train"].x.flatten(1), data.pools["val"].x.flatten(1)
    assert len(train_x) + len(val_x) == 1797 - len(data.pools["test"].x)
    overlap = (torch.cdist(val_x, train_x).min(dim=1).values == 0).sum().item()
    assert overlap <= 2  # sklearn's digits hold a handful of exact duplicates; none come from the split
