"""The real torchvision loading path, on small files written in each data set's own format.

MNIST / Fashion-MNIST: big-endian IDX files under ``<root>/MNIST/raw`` and
``<root>/FashionMNIST/raw``, named without ``.gz`` (torchvision 0.29 checks only that those four
files exist; it verifies no checksum when ``download=False``). CIFAR-10: pickled batches under
``<root>/cifar-10-batches-py``; torchvision checks every file's md5, so the tests point the class's
expected md5s at the files they wrote and the integrity check still runs against real files.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from metaadv.data import load_splits
from metaadv.errors import UserError

_RAW = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}


def _balanced_labels(per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)


def _random_images(n: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images[0].flat[0], images[0].flat[1] = 0, 255  # both ends of the pixel range occur
    return images


# ---- writers -------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: a zero word-half, type code 0x08 (unsigned byte), rank; big-endian dims; raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_mnist(root: Path, name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = root / _RAW[name]
    raw.mkdir(parents=True)
    data = {
        "train_x": _random_images(120, (28, 28), rng), "train_y": _balanced_labels(12, rng),
        "test_x": _random_images(20, (28, 28), rng), "test_y": _balanced_labels(2, rng),
    }
    _write_idx(raw / "train-images-idx3-ubyte", data["train_x"])
    _write_idx(raw / "train-labels-idx1-ubyte", data["train_y"])
    _write_idx(raw / "t10k-images-idx3-ubyte", data["test_x"])
    _write_idx(raw / "t10k-labels-idx1-ubyte", data["test_y"])
    # Back to (N, C, H, W), the layout the loader returns.
    return {k: (v[:, None] if k.endswith("_x") else v) for k, v in data.items()}


def _write_cifar10(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Five training batches of 20 and a test batch of 20: rows of 3072 bytes, channel-major."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x = _random_images(100, (3, 32, 32), rng)
    train_y = _balanced_labels(10, rng)
    test_x, test_y = _random_images(20, (3, 32, 32), rng), _balanced_labels(2, rng)
    batches = [(f"data_batch_{i + 1}", train_x[20 * i : 20 * (i + 1)], train_y[20 * i : 20 * (i + 1)]) for i in range(5)]
    for file_name, x, y in batches + [("test_batch", test_x, test_y)]:
        entry = {"batch_label": file_name, "data": x.reshape(len(x), 3072), "labels": [int(v) for v in y]}
        (folder / file_name).write_bytes(pickle.dumps(entry))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}))
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_md5s_of_written_files(monkeypatch):
    """Call with the data folder once written: torchvision then expects exactly those files."""

    def point_at(folder: Path) -> None:
        cls = datasets.CIFAR10
        monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})

    return point_at


# ---- checks --------------------------------------------------------------------------------


def _as_bytes(x: torch.Tensor) -> np.ndarray:
    """[0, 1] floats back to the stored bytes, insisting that they were exactly k / 255."""
    levels = (x * 255).round()
    assert torch.equal(x, levels / 255), "pixels are not the stored bytes divided by 255"
    return levels.to(torch.uint8).numpy()


def _check_round_trip(splits, written, shape) -> None:
    c_h_w = tuple(shape)
    for name in ("train", "val", "test"):
        x, y = splits.split(name)
        assert x.shape[1:] == c_h_w and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= 0 and x.max() <= 1
    # The official test split passes through untouched, in order.
    assert np.array_equal(_as_bytes(splits.test_x), written["test_x"])
    assert np.array_equal(splits.test_y.numpy(), written["test_y"])
    assert splits.test_x.min() == 0 and splits.test_x.max() == 1
    # Train and val together are exactly the written training set, each image with its label.
    label_of = {img.tobytes(): int(lab) for img, lab in zip(written["train_x"], written["train_y"])}
    assert len(label_of) == len(written["train_x"])
    seen = {}
    for name in ("train", "val"):
        x, y = splits.split(name)
        keys = [img.tobytes() for img in _as_bytes(x)]
        assert all(label_of.get(k) == int(lab) for k, lab in zip(keys, y)), f"{name}: image/label pairs changed"
        seen[name] = set(keys)
    assert not seen["train"] & seen["val"], "the validation carve-out overlaps train"
    assert seen["train"] | seen["val"] == set(label_of)
    assert len(splits.train_x) + len(splits.val_x) == len(written["train_x"])


# ---- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_family_loads_real_idx_files(tmp_path, name):
    written = _write_mnist(tmp_path, name)
    splits = load_splits(name, data_dir=tmp_path)
    _check_round_trip(splits, written, (1, 28, 28))
    # val_fraction 1/12 of 12 per class: one of each class.
    assert torch.bincount(splits.val_y, minlength=10).tolist() == [1] * 10
    assert len(splits.train_x) == 110


def test_mnist_and_fashion_mnist_read_their_own_folders(tmp_path):
    _write_mnist(tmp_path, "mnist", seed=0)
    fashion = _write_mnist(tmp_path, "fashion-mnist", seed=1)
    splits = load_splits("fashion-mnist", data_dir=str(tmp_path))  # a str works as well as a Path
    assert np.array_equal(_as_bytes(splits.test_x), fashion["test_x"])


def test_cifar10_loads_real_pickled_batches(tmp_path, cifar_md5s_of_written_files):
    written = _write_cifar10(tmp_path)
    cifar_md5s_of_written_files(tmp_path / "cifar-10-batches-py")
    splits = load_splits("cifar10", data_dir=tmp_path)
    _check_round_trip(splits, written, (3, 32, 32))
    assert torch.bincount(splits.val_y, minlength=10).tolist() == [1] * 10
    # Channel order survives: channel 0 of a loaded image is the first 1024 bytes of its row.
    assert np.array_equal(_as_bytes(splits.test_x[3, 0]), written["test_x"][3].reshape(3072)[:1024].reshape(32, 32))


def test_cifar10_files_failing_the_md5_check_are_a_user_error(tmp_path):
    """Without the md5 patch our files are not the real CIFAR-10: torchvision's check must fire."""
    _write_cifar10(tmp_path)
    with pytest.raises(UserError, match="corrupted"):
        load_splits("cifar10", data_dir=tmp_path)


# ---- user errors ---------------------------------------------------------------------------


def _assert_one_clear_line(message: str, *needles: str) -> None:
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message
    for needle in needles:
        assert needle in message, f"{needle!r} missing from {message!r}"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_data_folder_is_a_user_error(tmp_path, name):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UserError) as info:
        load_splits(name, data_dir=missing)
    _assert_one_clear_line(str(info.value), str(missing), "does not exist", "--data-dir", "--download")
    assert not missing.exists(), "nothing may be created for a folder that was not there"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_empty_data_folder_is_a_user_error(tmp_path, name):
    with pytest.raises(UserError) as info:
        load_splits(name, data_dir=tmp_path)
    folder = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py"}[name]
    _assert_one_clear_line(str(info.value), name, str(tmp_path / folder), "--download")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_no_data_dir_is_a_user_error(name):
    with pytest.raises(UserError) as info:
        load_splits(name, data_dir=None)
    _assert_one_clear_line(str(info.value), name, "--data-dir")


def test_partial_mnist_folder_is_a_user_error(tmp_path):
    _write_mnist(tmp_path, "mnist")
    (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="not found"):
        load_splits("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "bad-header", "int16-type-code"])
def test_damaged_mnist_file_is_a_user_error(tmp_path, damage):
    """torchvision verifies no checksum for MNIST, so a damaged file reaches its parser."""
    _write_mnist(tmp_path, "mnist")
    path = tmp_path / "MNIST/raw/train-images-idx3-ubyte"
    data = path.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "bad-header": b"\xff" * 16 + data[16:],
        "int16-type-code": data[:2] + b"\x0b" + data[3:],
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(UserError) as info:
        load_splits("mnist", data_dir=tmp_path)
    _assert_one_clear_line(str(info.value), "mnist")
