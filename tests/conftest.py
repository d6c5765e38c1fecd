"""Shared fixtures. Keep each section small; add new sections below the existing ones."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from metaadv.data import Splits, load_splits
from metaadv.models import DigitsNet

# --------------------------------------------------------------------------------------------
# CPU threads: the tests run tiny models on a few shared CI cores, where intra-op threads fight
# each other (measured: training the fixture below took 5-15x longer with 2 threads than 1).
# METAADV_TEST_THREADS overrides the count: benchmarks/sweep_cpu_kernels.py runs the suite with 2,
# since reductions split across threads round differently and no test may hang on that.
# --------------------------------------------------------------------------------------------


def _test_threads() -> int:
    value = os.environ.get("METAADV_TEST_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"METAADV_TEST_THREADS={value!r}: write a whole number of threads >= 1")
    return int(value)


torch.set_num_threads(_test_threads())

# --------------------------------------------------------------------------------------------
# Data: sklearn's 8x8 digits (ships with scikit-learn, loads in milliseconds once imported).
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def digits_splits() -> Splits:
    """The fixed train / val / test splits of ``digits``. Shared: do not modify the tensors."""
    return load_splits("digits")


# --------------------------------------------------------------------------------------------
# Models: a DigitsNet briefly trained on digits (about 95% test accuracy), so that attack
# losses and accuracies mean something. Built once; every test gets its own fresh copy.
# --------------------------------------------------------------------------------------------

_TRAIN_SEED = 0


def _train_digits_net(splits: Splits, epochs: int = 3, batch_size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(_TRAIN_SEED)
    model = DigitsNet(mean=splits.info.mean, std=splits.info.std)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(_TRAIN_SEED)
    x, y = splits.train_x, splits.train_y
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def trained_digits_state(digits_splits) -> dict[str, torch.Tensor]:
    return _train_digits_net(digits_splits)


@pytest.fixture
def digits_model(digits_splits, trained_digits_state) -> DigitsNet:
    """A fresh trained DigitsNet in eval mode, with no parameter gradients."""
    model = DigitsNet(mean=digits_splits.info.mean, std=digits_splits.info.std)
    model.load_state_dict(trained_digits_state)
    return model.eval()


@contextlib.contextmanager
def local_ray(prefix: str):
    """A throwaway local Ray of 2 CPUs in a short temporary folder (Unix socket paths must stay
    short); yields its address, so subprocess drivers can join it."""
    import shutil
    import tempfile

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token warning
    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
