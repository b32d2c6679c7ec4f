"""Bring your own features: a TorchScript module (saved with `torch.jit.save`) that maps float images
[N, C, H, W] in [0, 1] to features [N, D], e.g. InceptionV3 exported on a machine that has it, so that
numbers can be compared with papers. It is named by its file's sha256. Loading a TorchScript module
runs its code: load only modules you trust (genlab's own weights are safetensors and run none).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from genlab.errors import GenlabError
from genlab.metrics.features import Extractor
from genlab.paths import cache_dir


def load_torchscript(path: str | Path, image_shape: tuple[int, int, int], data_key: str) -> Extractor:
    """The module at `path` as an Extractor of images of `image_shape`; its statistics of the data
    named `data_key` are cached under <cache>/features/torchscript-<8 hex>/<data_key>/."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"feature extractor {path} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GenlabError(f"{path} is not a TorchScript module ({first}); save one with torch.jit.save") from None
    probe = torch.rand(2, *image_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = module(probe)
    except Exception as err:  # the module's own code failed on images of the data's shape
        raise GenlabError(f"TorchScript extractor {path} fails on images [N, {', '.join(map(str, image_shape))}] "
                          f"in [0, 1] ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2 or not out.is_floating_point():
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise GenlabError(f"TorchScript extractor {path} returned {shape} for 2 images; it must map float images "
                          "[N, C, H, W] in [0, 1] to features [N, D]")
    name = f"torchscript-{digest[:8]}"
    spec = {"kind": "torchscript", "name": name, "file": str(path), "sha256": digest, "dataset": None,
            "image_shape": list(image_shape), "num_classes": 0, "class_names": [], "feature_dim": int(out.shape[1])}
    folder = cache_dir() / "features" / name / data_key
    folder.mkdir(parents=True, exist_ok=True)
    return Extractor(module, spec, folder)
