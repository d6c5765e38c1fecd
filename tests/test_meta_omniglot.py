"""Omniglot read from small files written here in torchvision's on-disk layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metaadv.cli import main
from metaadv.errors import UserError
from metaadv.meta import load_meta_data, load_omniglot



def _write_subset(root, subset: str, alphabets: int, characters: int, images: int) -> None:
    """``<root>/omniglot-py/<subset>/<alphabet>/characterNN/*.png``: 105x105, black strokes on white.

    Character c of alphabet a draws a bar at a position of its own in the upper-left quadrant,
    so characters differ and rotations are visible.
    """
    for a in range(alphabets):
        for c in range(characters):
            folder = root / "omniglot-py" / subset / f"Alphabet_{a}" / f"character{c + 1:02d}"
            folder.mkdir(parents=True)
            for i in range(images):
                img = np.full((105, 105), 255, dtype=np.uint8)
                top = 8 + 8 * (a * characters + c) % 40
                img[top : top + 12, 8 + 2 * i : 50] = 0
                Image.fromarray(img).save(folder / f"{a:02d}{c:02d}_{i:02d}.png")


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    _write_subset(root, "images_background", alphabets=2, characters=5, images=4)
    _write_subset(root, "images_evaluation", alphabets=1, characters=3, images=4)
    return root


def test_load_omniglot_layout_and_preprocessing(omniglot_dir):
    x, y = load_omniglot(omniglot_dir, background=True)
    assert x.shape == (40, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [c for c in range(10) for _ in range(4)]  # sorted (alphabet, character) order
    assert x.min() >= 0 and x.max() <= 1
    assert x[0, 0, 27, 27] < 0.05 and x[0].max() > 0.9  # paper is 0, strokes are 1 (inverted, like MNIST)
    xe, ye = load_omniglot(omniglot_dir, background=False)
    assert xe.shape == (12, 1, 28, 28) and ye.max() == 2


def test_meta_splits_hold_out_characters_and_add_rotations(omniglot_dir):
    data = load_meta_data("omniglot", omniglot_dir)
    train, val, test = data.pools["train"], data.pools["val"], data.pools["test"]
    assert val.base_classes == 1 and train.base_classes == 9 and test.base_classes == 3
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    assert (train.num_classes, val.num_classes, test.num_classes) == (36, 4, 12)
    task = test.sample(5, 1, 2, torch.Generator().manual_seed(0))
    assert task.xs.shape == (5, 1, 28, 28) and task.xq.shape == (10, 1, 28, 28)
    assert data.shape == (1, 28, 28) and 0 < data.mean[0] < 1


def test_missing_and_corrupt_files_are_user_errors(omniglot_dir, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_omniglot(tmp_path, background=True)
    with pytest.raises(UserError, match="needs --data-dir"):
        load_omniglot("", background=True)
    _write_subset(tmp_path, "images_background", alphabets=1, characters=1, images=1)
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
