"""Shared fixtures: tiny real data and tiny configs, so every test runs in seconds on a CPU."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from genlab.config import DataConfig, RunConfig, TrainConfig, default_config
from genlab.data import load_dataset


# Downloads, feature extractors and reference statistics go to a temporary folder for the whole
# session (subprocesses inherit it), never the developer's ~/.cache.
os.environ["GENLAB_CACHE"] = tempfile.mkdtemp(prefix="genlab-test-cache-")

# A quick version of the extractor recipe: 300 steps instead of 2,500 (about 10 s on 2 cores).
SMALL_RECIPE = dict(steps=300)


@pytest.fixture(scope="session")
def small_extractor():
    """The mnist-sample feature extractor trained with the quick recipe, cached for the session."""
    from genlab.metrics.features import FeatureRecipe, get_extractor

    return get_extractor(DataConfig(dataset="mnist-sample"), FeatureRecipe(**SMALL_RECIPE), log=lambda *_: None)


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


def write_colour_folder(root, n=40, size=40, classes=("squares", "discs"), seed=0):
    """`n` small pictures a test can train on: a coloured square or disc on a transparent background
    (RGBA), one subfolder per class (no subfolders when `classes` is empty), a few in RGB and in
    palette mode so that the folder mixes colour modes."""
    from pathlib import Path

    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        kind = i % max(len(classes), 1)
        rgba = np.zeros((size, size, 4), np.uint8)
        r, cy, cx = rng.integers(size // 6, size // 3), rng.integers(size // 3, 2 * size // 3, 2)[0], \
            rng.integers(size // 3, 2 * size // 3)
        inside = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if kind == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        rgba[inside] = [*rng.integers(0, 256, 3), 255]
        folder = root / classes[kind] if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rgba, "RGBA")
        if i % 7 == 3:
            image = image.convert("RGB")
        elif i % 7 == 5:
            image = image.convert("P")
        image.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def ctrl_c_raises():
    """SIGINT as a terminal gives it (KeyboardInterrupt) for one test: a shell starts background jobs,
    as CI may start pytest, with SIGINT ignored."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
