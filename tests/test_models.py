"""Classifiers: built by name for each data set, logits out, normalisation inside the model."""

from __future__ import annotations

import pytest
import torch

from metaadv.data import DATASETS
from metaadv.errors import UserError
from metaadv.models import ARCHS, Normalize, PreActResNet18, build_model, model_kwargs

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels


def _images(shape, b=2, seed=0) -> torch.Tensor:
    return torch.rand(b, *shape, generator=torch.Generator().manual_seed(seed))


# The data sets whose default arch is cheap to run; preact-resnet18 runs once, in its own test.
_SMALL = [name for name, info in DATASETS.items() if info.arch != "preact-resnet18"]


def test_every_arch_is_some_data_set_default():
    """So the per-data-set tests below reach every architecture."""
    assert {info.arch for info in DATASETS.values()} == set(ARCHS)


@pytest.mark.parametrize("name", _SMALL)
def test_default_arch_returns_logits_for_its_data_set(name):
    info = DATASETS[name]
    torch.manual_seed(0)
    model = build_model(info.arch, **model_kwargs(info)).eval()
    with torch.no_grad():
        out = model(_images(info.shape, b=3))
    assert out.shape == (3, info.num_classes)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # Logits, not probabilities (auto-attack's first sanity check).
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))


@pytest.mark.parametrize("arch, shape", [("small-cnn", (3, 32, 32)), ("small-cnn", (1, 28, 28)), ("digits-net", (1, 8, 8))])
def test_classes_and_channels_follow_the_arguments(arch, shape):
    c, h, _ = shape
    model = build_model(arch, in_channels=c, num_classes=7, image_size=h, mean=[0.5] * c, std=[0.25] * c)
    with torch.no_grad():
        assert model(_images(shape)).shape == (2, 7)


def test_preact_resnet18_forward_on_cifar_size_images():
    info = DATASETS["cifar10"]
    torch.manual_seed(0)
    model = build_model("preact-resnet18", **model_kwargs(info))
    assert isinstance(model, PreActResNet18)
    x = _images(info.shape)
    out = model(x)  # train mode: BatchNorm uses batch statistics
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()  # gradients reach the first convolution through every block
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x)), "eval-mode forward must be deterministic"


# ---- normalisation lives inside the model --------------------------------------------------


def test_normalize_standardises_each_channel():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    x = _images((3, 4, 4))
    out = Normalize(mean, std)(x)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - mean[c]) / std[c])


@pytest.mark.parametrize("arch, name", [("small-cnn", "mnist"), ("digits-net", "digits"), ("preact-resnet18", "cifar10")])
def test_model_normalises_its_own_input(arch, name):
    """model(x) == the same weights without normalisation applied to (x - mean) / std.

    So the model takes [0, 1] pixels, and an eps-ball around x is measured in pixel units: the
    normalisation is part of the function being attacked, not of the input.
    """
    info = DATASETS[name]
    c = info.shape[0]
    torch.manual_seed(0)
    model = build_model(arch, **model_kwargs(info)).eval()
    plain = build_model(arch, **{**model_kwargs(info), "mean": [0.0] * c, "std": [1.0] * c}).eval()
    weights = {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] not in ("mean", "std")}
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    assert sorted(k.rsplit(".", 1)[-1] for k in missing) == ["mean", "std"] and not unexpected
    x = _images(info.shape)
    mean, std = torch.tensor(info.mean).view(1, -1, 1, 1), torch.tensor(info.std).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), plain((x - mean) / std), atol=1e-5)
        assert not torch.allclose(model(x), plain(x), atol=1e-3), "normalisation has no effect"


@pytest.mark.parametrize("arch, name", [("small-cnn", "mnist5k"), ("digits-net", "digits")])
def test_normalisation_constants_are_saved_but_not_trained(arch, name):
    info = DATASETS[name]
    model = build_model(arch, **model_kwargs(info))
    state = model.state_dict()
    means = [v for k, v in state.items() if k.endswith(".mean")]
    stds = [v for k, v in state.items() if k.endswith(".std")]
    assert len(means) == len(stds) == 1
    assert means[0].flatten().tolist() == pytest.approx(list(info.mean))
    assert stds[0].flatten().tolist() == pytest.approx(list(info.std))
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith((".mean", ".std")) for n in names)


def test_unknown_arch_is_a_user_error():
    with pytest.raises(UserError, match="unknown architecture 'resnet50'.*small-cnn"):
        build_model("resnet50")
