"""Image files: many small images tiled into one picture, and PNG bytes for files, pages and the web demo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
    """uint8 [N, C, H, W] -> uint8 [H', W', C] with `nrow` images per row (default: a square)."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((padding + rows * (h + padding), padding + nrow * (w + padding), c), pad_value,
                   dtype=np.uint8)
    pixels = images.permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    for i in range(n):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top:top + h, left:left + w] = pixels[i]
    return grid


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) as PNG bytes, optionally enlarged with sharp pixels."""
    import io

    from PIL import Image

    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # 5x faster than zlib's default 6 for 9% more bytes (a
    return buf.getvalue()                           # grid every epoch: 18 -> 3.5 ms measured on 2 CPU cores)


def save_png(array: np.ndarray, path: str | Path, scale: int = 1) -> None:
    """Write uint8 [H, W, C] (C = 1 or 3) as a PNG, optionally enlarged with sharp pixels."""
    Path(path).write_bytes(png_bytes(array, scale))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> None:
    save_png(make_grid(images, nrow), path, scale=scale)
