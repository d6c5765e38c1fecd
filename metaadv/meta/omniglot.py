"""Omniglot (Lake et al. 2015) in torchvision's on-disk layout, as in-memory tensors.

torchvision's ``Omniglot(root, background=...)`` keeps its images under
``<root>/omniglot-py/images_background/<alphabet>/<character>/*.png`` (the 964 characters of 30
alphabets, for meta-training) and ``<root>/omniglot-py/images_evaluation/...`` (659 characters of
20 other alphabets, for meta-testing). Its integrity check with ``download=False`` hashes the
downloaded ``.zip`` files, so a folder extracted by hand (or written by a test) fails it even
when every image is there. We therefore ask torchvision only to download (``--download``) and read
the extracted folders ourselves, checking what matters to us instead: the folder exists, every
character has images, and every image decodes.

Meta-learning splits Omniglot as Vinyals et al. 2016 did (:func:`vinyals_side`), across the two
folders, as few-shot papers report it.

Images are resized to 28x28 with Lanczos filtering and inverted so strokes are 1 and paper 0,
as in MAML's preprocessing (Finn et al. 2017, arXiv:1703.03400) and like MNIST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

__all__ = ["OMNIGLOT_FOLDER", "VINYALS_TEST_ALPHABETS", "VINYALS_VAL_ALPHABETS", "load_omniglot", "load_omniglot_named",
           "vinyals_side"]

OMNIGLOT_FOLDER = "omniglot-py"
IMAGE_SIZE = 28


def _subset_folder(root: Path, background: bool) -> Path:
    return root / OMNIGLOT_FOLDER / ("images_background" if background else "images_evaluation")


def _download(root: Path, background: bool) -> None:
    from torchvision.datasets import Omniglot

    try:
        Omniglot(str(root), background=background, download=True)
    except Exception as exc:  # no internet, bad archive: one line for the user
        raise UserError(f"downloading Omniglot into {str(root)!r} failed: {str(exc).splitlines()[0][:200]}") from None


def _character_folders(folder: Path) -> list[Path]:
    # Sorted, unlike torchvision's os.listdir order, so class ids do not depend on the file system.
    chars = [c for a in sorted(folder.iterdir()) if a.is_dir() for c in sorted(a.iterdir()) if c.is_dir()]
    if not chars:
        raise UserError(f"no <alphabet>/<character>/ folders under {str(folder)!r}; is this an Omniglot folder?")
    return chars


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS), dtype=np.uint8)
    except Exception as exc:  # truncated or not an image: name the file
        raise UserError(f"cannot read Omniglot image {str(path)!r}: {str(exc).splitlines()[0][:120]}") from None


def load_omniglot(data_dir: str | Path | None, background: bool, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One Omniglot subset as ``(M, 1, 28, 28)`` floats in [0, 1] (strokes 1) and ``(M,)`` character ids.

    ``background=True`` reads the background characters, ``False`` the evaluation ones.
    Character ids are 0.. in sorted (alphabet, character) order within the subset.
    """
    x, y, _ = load_omniglot_named(data_dir, background, download)
    return x, y


def load_omniglot_named(data_dir: str | Path | None, background: bool,
                        download: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """:func:`load_omniglot` and the ``"<alphabet>/<character>"`` name of each character id."""
    if not data_dir:
        raise UserError(f"dataset 'omniglot' needs --data-dir DIR (a folder holding {OMNIGLOT_FOLDER}/, or add --download)")
    root = Path(data_dir).expanduser()
    folder = _subset_folder(root, background)
    if download and not folder.is_dir():
        _download(root, background)
    if not folder.is_dir():
        raise UserError(f"Omniglot folder {str(folder)!r} not found; extract images_background.zip and "
                        f"images_evaluation.zip under {str(root / OMNIGLOT_FOLDER)!r} or add --download")
    images, labels = [], []
    chars = _character_folders(folder)
    for cid, char in enumerate(chars):
        files = sorted(char.glob("*.png"))
        if not files:
            raise UserError(f"Omniglot character folder {str(char)!r} holds no .png images")
        images += [_read_image(f) for f in files]  # reading files from disk is inherently per file
        labels += [cid] * len(files)
    x = 1.0 - torch.from_numpy(np.stack(images)).float().div_(255.0)
    names = [f"{c.parent.name}/{c.name}" for c in chars]
    return x.unsqueeze(1).contiguous(), torch.tensor(labels, dtype=torch.long), names


# The split of Vinyals et al. 2016 ("Matching Networks for One Shot Learning", arXiv:1606.04080),
# by alphabet, as Snell et al. 2017 (prototypical networks) distribute it: 1,028 training, 172
# validation and 423 test characters, each also at 90, 180 and 270 degrees. Validation alphabets
# come from the background set; test alphabets from the evaluation set, with Gurmukhi split
# between training (characters 1-41) and test (42-45). Every other alphabet is training.
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TEST_ALPHABETS = ("Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
                          "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG")
VINYALS_GURMUKHI_FIRST_TEST = 42


def vinyals_side(name: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a character ``"<alphabet>/characterNN"``."""
    alphabet, character = name.split("/")
    if alphabet in VINYALS_VAL_ALPHABETS:
        return "val"
    if alphabet in VINYALS_TEST_ALPHABETS:
        return "test"
    number = "".join(c for c in character if c.isdigit())
    if alphabet == "Gurmukhi" and number and int(number) >= VINYALS_GURMUKHI_FIRST_TEST:
        return "test"
    return "train"
