"""Omniglot read from small files written here in torchvision's on-disk layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metaadv.cli import main
from metaadv.errors import UserError
from metaadv.meta import load_meta_data, load_omniglot
from metaadv.meta.omniglot import load_omniglot_named, vinyals_side



def _write_subset(root, subset: str, characters: dict[str, list[int]], images: int, first: int = 0) -> None:
    """``<root>/omniglot-py/<subset>/<alphabet>/characterNN/*.png``: 105x105, black strokes on white.

    Character k (counted from ``first``, across subsets) draws a bar in a row band of its own, so
    characters differ and rotations are visible.
    """
    k = first
    for alphabet, numbers in characters.items():
        for c in numbers:
            folder = root / "omniglot-py" / subset / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            for i in range(images):
                img = np.full((105, 105), 255, dtype=np.uint8)
                top = 4 + 7 * k  # one row band per character (up to 13)
                img[top : top + 12, 8 + 2 * i : 50] = 0
                Image.fromarray(img).save(folder / f"{k:04d}_{i:02d}.png")
            k += 1


# Real alphabet names, since the Vinyals split is by alphabet: Latin and Angelic are training,
# Armenian validation, Kannada test, and Gurmukhi splits at character 42.
BACKGROUND = {"Latin": [1, 2, 3, 4, 5], "Armenian": [1, 2]}
EVALUATION = {"Angelic": [1, 2], "Gurmukhi": [41, 42], "Kannada": [1, 2]}


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    _write_subset(root, "images_background", BACKGROUND, images=4)
    _write_subset(root, "images_evaluation", EVALUATION, images=4, first=7)
    return root


def test_load_omniglot_layout_and_preprocessing(omniglot_dir):
    x, y = load_omniglot(omniglot_dir, background=True)
    assert x.shape == (28, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [c for c in range(7) for _ in range(4)]  # sorted (alphabet, character) order
    assert x.min() >= 0 and x.max() <= 1
    assert x[0, 0, 27, 27] < 0.05 and x[0].max() > 0.9  # paper is 0, strokes are 1 (inverted, like MNIST)
    xe, ye, names = load_omniglot_named(omniglot_dir, background=False)
    assert xe.shape == (24, 1, 28, 28) and ye.max() == 5
    assert names == ["Angelic/character01", "Angelic/character02", "Gurmukhi/character41", "Gurmukhi/character42",
                     "Kannada/character01", "Kannada/character02"]


def test_vinyals_split_by_alphabet_with_rotations(omniglot_dir):
    assert [vinyals_side(n) for n in ("Latin/character01", "Armenian/character09", "Angelic/character01",
                                       "Gurmukhi/character41", "Gurmukhi/character42", "Kannada/character01")] == \
        ["train", "val", "train", "train", "test", "test"]
    data = load_meta_data("omniglot", omniglot_dir)
    train, val, test = data.pools["train"], data.pools["val"], data.pools["test"]
    # train: 5 Latin + 2 Angelic + Gurmukhi 41; val: 2 Armenian; test: Gurmukhi 42 + 2 Kannada
    assert (train.base_classes, val.base_classes, test.base_classes) == (8, 2, 3)
    assert (train.num_classes, val.num_classes, test.num_classes) == (32, 8, 12)
    for a, b in ((train, val), (train, test), (val, test)):  # no character (with its rotations) on two sides
        assert set(a.labels.tolist()).isdisjoint(b.labels.tolist())
        assert (torch.cdist(a.x.flatten(1), b.x.flatten(1)).min() > 0).item()
    task = test.sample(5, 1, 2, torch.Generator().manual_seed(0))
    assert task.xs.shape == (5, 1, 28, 28) and task.xq.shape == (10, 1, 28, 28)
    assert data.shape == (1, 28, 28) and 0 < data.mean[0] < 1
    only_test = load_meta_data("omniglot", omniglot_dir, splits=("test",))
    assert torch.equal(only_test.pools["test"].x, test.x)


def test_an_incomplete_folder_names_the_missing_split(tmp_path):
    _write_subset(tmp_path, "images_background", {"Latin": [1, 2, 3]}, images=2)
    _write_subset(tmp_path, "images_evaluation", {"Angelic": [1]}, images=2)
    with pytest.raises(UserError, match="no Omniglot characters of the Vinyals val split.*Armenian"):
        load_meta_data("omniglot", tmp_path)


def test_missing_and_corrupt_files_are_user_errors(omniglot_dir, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_omniglot(tmp_path, background=True)
    with pytest.raises(UserError, match="needs --data-dir"):
        load_omniglot("", background=True)
    _write_subset(tmp_path, "images_background", {"Latin": [1]}, images=1)
    bad = next((tmp_path / "omniglot-py").rglob("*.png"))
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read Omniglot image"):
        load_omniglot(tmp_path, background=True)


def test_cli_meta_trains_and_evaluates_on_omniglot(omniglot_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["meta", "--out", str(out), "--dataset", "omniglot", "--data-dir", str(omniglot_dir), "--ways", "2",
            "--shots", "1", "--queries", "1", "--meta-batch", "1", "--rounds", "1", "--steps-per-round", "1",
            "--inner-steps", "1", "--val-tasks", "1", "--val-pgd-steps", "1", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert main(["meta-evaluate", str(out), "--tasks", "2", "--pgd-steps", "1", "--device", "cpu", "--json"]) == 0
    assert '"tasks": 2' in capsys.readouterr().out


def test_cli_missing_omniglot_folder_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["meta", "--out", str(out), "--dataset", "omniglot", "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("metaadv: error: Omniglot folder") and err.count("\n") == 1
    assert not out.exists()
