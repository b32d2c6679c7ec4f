"""The one way genlab changes an image's size or channels, for real images and samples alike.

Real and generated images must never be resized differently: a metric then measures the resizing
filters, not the model (Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties in GAN
Evaluation", the clean-fid paper). Every resize goes through `resize`, PIL's bicubic filter (which
widens its support when it shrinks, so downscaling is antialiased), and its name is recorded with
every evaluation (`FILTER`).
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import GenlabError

FILTER = "PIL bicubic (antialiased when shrinking)"
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # what genlab reads


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size] with the one filter (unchanged when already so)."""
    from PIL import Image

    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i, image in enumerate(images.numpy()):
        for c, plane in enumerate(image):
            out[i, c] = np.asarray(Image.fromarray(plane).resize((size, size), Image.Resampling.BICUBIC))
    return torch.from_numpy(out)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 [N, C, H, W] with 1 or 3 channels -> `channels` channels (grey by ITU-R 601-2 luma, or
    grey repeated as colour)."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 3 and channels == 1:
        w = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise GenlabError(f"cannot convert images with {c} channels to {channels}; genlab takes 1 (grey) or 3 (colour)")


def centre_crop(image):
    """A PIL image cropped to the largest centred square."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def flatten_alpha(image, background: str):
    """A PIL image in RGB: transparent pixels composited on `background` (white or black)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, BACKGROUNDS[background] + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image.convert("RGB")


def read_rgb(source, background: str, name=None, fix: str = ""):
    """An image file (a path or a binary file object) as a PIL image in RGB, transparent pixels
    painted on `background`; one that cannot be decoded is a GenlabError naming it (`name`, else
    `source`) and ending in `fix`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            return flatten_alpha(img, background)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise GenlabError(f"{name or source} is not a readable image ({err}){fix}") from None


def has_colour(rgb: np.ndarray) -> bool:
    """Whether an RGB array [H, W, 3] is more than grey (any pixel with unequal channels)."""
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())
