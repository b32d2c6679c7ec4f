"""Samples in: images from any generator (arrays, .npz files, folders of PNGs), checked and
converted to the uint8 [N, C, H, W] of the dataset they are compared with."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.config import MIN_EVAL_SAMPLES
from genlab.data.convert import IMAGE_SUFFIXES, read_rgb, resize, to_channels
from genlab.errors import GenlabError


def prepare_samples(images, shape: tuple[int, int, int], resize: bool = False, source: str = "samples") -> torch.Tensor:
    """Check and convert samples to uint8 [N, C, H, W] of the extractor's `shape`.

    Accepts uint8 (or other integers in 0..255) and floats in [0, 1], as [N, H, W] or [N, C, H, W], or
    channels last, [N, H, W, C] with C 1 or 3 (as PIL, numpy and TensorFlow keep images), where the
    layout is not in doubt. A different size or channel count is an error unless `resize` asks for a
    conversion."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise GenlabError(f"{source}: expected images [N, H, W], [N, C, H, W] or [N, H, W, C], got shape "
                          f"{tuple(x.shape)}")
    if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):  # channels last
        x = x.permute(0, 3, 1, 2)
    if len(x) < MIN_EVAL_SAMPLES:
        raise GenlabError(f"{source}: {len(x)} image(s); the metrics need at least {MIN_EVAL_SAMPLES} "
                          "(10,000 is usual)")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise GenlabError(f"{source}: {bad} image(s) contain NaN or infinite values; fix the generator's output")
        if x.min() < 0 or x.max() > 1:
            raise GenlabError(f"{source}: float images must lie in [0, 1], found [{float(x.min()):.3g}, "
                              f"{float(x.max()):.3g}]; rescale them or save uint8")
        x = (x * 255).round().to(torch.uint8)
    elif x.dtype != torch.uint8:
        if x.min() < 0 or x.max() > 255:
            raise GenlabError(f"{source}: integer images must lie in 0..255")
        x = x.to(torch.uint8)
    if tuple(x.shape[1:]) != tuple(shape):
        if not resize:
            at_size = f" (or --image-size {x.shape[-1]} to measure at theirs)" if x.shape[-1] != shape[-1] else ""
            raise GenlabError(f"{source}: images are {'x'.join(map(str, x.shape[1:]))} (CxHxW) but the "
                              f"dataset's are {'x'.join(map(str, shape))}; pass --resize to convert them{at_size}")
        x = resize_images(x, shape)
    return x


def resize_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images to `shape` (C, H, W) with the dataset's own conversions (genlab.data.convert):
    real and generated images are never resized differently."""
    c, h, w = shape
    if h != w:
        raise GenlabError(f"cannot resize samples to {h}x{w}: genlab's images are square")
    return resize(to_channels(x, c), h)


def load_samples_file(path: str | Path, channels: int, background: str = "white") -> torch.Tensor:
    """Images from an .npz (array `images`), an .npy array, or a folder of image files (transparent
    pixels painted on `background`, as the dataset's own are)."""
    import zipfile

    import numpy as np

    path = Path(path)
    if path.is_dir():
        return _load_png_folder(path, channels, background)
    if not path.is_file():
        raise GenlabError(f"samples file {path} does not exist")
    if path.stat().st_size == 0:
        raise GenlabError(f"samples file {path} is empty; generate the samples again")
    takes = "--samples takes an .npz file (array `images`), an .npy array or a folder of images"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise GenlabError(f"{path} is one image; {takes}: put the images in a folder and pass the folder")
    with open(path, "rb") as f:
        head = f.read(6)
    is_npy = head == b"\x93NUMPY"
    if not is_npy and not head.startswith(b"PK"):  # .npz files are zip archives
        raise GenlabError(f"{path} is neither an .npz nor an .npy file; {takes} (numpy.savez(path, images=array))")
    try:
        if is_npy:
            return torch.from_numpy(np.load(path, allow_pickle=False).copy())
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise GenlabError(f"{path} has no array named `images` (it has: {', '.join(archive.files) or 'none'}); "
                                  "save the samples as np.savez(path, images=array)")
            return torch.from_numpy(archive["images"].copy())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise GenlabError(f"{path} is not a readable .{'npy' if is_npy else 'npz'} file ({err}); "
                          "save samples with numpy.savez") from None


def _load_png_folder(folder: Path, channels: int, background: str) -> torch.Tensor:
    import numpy as np
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GenlabError(f"samples folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    arrays = []
    for p in files:
        rgb = read_rgb(p, background)
        arrays.append(np.asarray(rgb.convert("L") if channels == 1 else rgb, dtype=np.uint8))
    if len({a.shape for a in arrays}) > 1:
        raise GenlabError(f"images in {folder} have different sizes; make them one size")
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.unsqueeze(1) if channels == 1 else stacked.permute(0, 3, 1, 2)
