"""Shared fixtures: tiny real data and tiny configs, so every test runs in seconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.config import DataConfig, RunConfig, TrainConfig, default_config
from genlab.data import load_dataset


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Downloads and caches go to a temporary folder, never the developer's ~/.cache."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def mnist_sample():
    """The real 4,000-digit train split of mnist-sample."""
    return load_dataset(DataConfig(dataset="mnist-sample"))


def tiny_config(out, **train) -> RunConfig:
    """gan-mlp on 256 real digits, a few steps, no progress bar."""
    cfg = default_config("gan-mlp")
    defaults = dict(epochs=None, steps=8, batch_size=32, out=str(out), progress=False, log_every=2,
                    grid_size=16, device="cpu")
    defaults.update(train)
    return RunConfig(DataConfig(dataset="mnist-sample", limit=256), cfg.model, TrainConfig(**defaults))


def random_images(n=10, c=1, h=28, w=28, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def weights_of(model) -> dict[str, torch.Tensor]:
    return {f"{net}.{k}": v.clone() for net in ("G", "D") for k, v in getattr(model, net).state_dict().items()}
