"""Differentiable augmentation for GANs trained on little data (Zhao et al. 2020, DiffAugment,
arXiv:2006.10738): the same random transformations are applied to real and generated images before
D, in D's and in G's update, so D cannot memorise the few real images and G's gradients still
flow through the transformation.

Policies: `translation` (shift by up to 1/8 of the side, zero fill), `cutout` (a square of half the
side set to zero), `color` (brightness and contrast; saturation needs colour and is left out for
greyscale). Images are in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab.core.runtime import Runtime

POLICIES = ("translation", "cutout", "color")


def parse_policy(text: str) -> tuple[str, ...]:
    from genlab.errors import GenlabError

    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in POLICIES]
    if unknown:
        raise GenlabError(f"unknown augmentation {', '.join(unknown)}; known: {', '.join(POLICIES)} "
                          "(comma-separated, e.g. translation,cutout)")
    return parts


def augment(x: torch.Tensor, policy: tuple[str, ...], rt: Runtime | None = None) -> torch.Tensor:
    """`x` through the policy's transformations, each drawn per image (by `rt`: under torchrun this
    rank's share of draws for the global batch)."""
    rt = rt or Runtime(x.device)
    for name in policy:
        x = {"translation": translation, "cutout": cutout, "color": color}[name](x, rt)
    return x


def color(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    b = x.shape[0]
    x = x + (rt.rand(b, 1, 1, 1) - 0.5)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rt.rand(b, 1, 1, 1) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, rt: Runtime, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = rt.randint(-sh, sh + 1, b, 1, 1)
    dx = rt.randint(-sw, sw + 1, b, 1, 1)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    ys = (gy.unsqueeze(0) + dy + 1).clamp(0, h + 1)  # index into the zero-padded image
    xs = (gx.unsqueeze(0) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))  # [B, C, H+2, W+2], border zero
    flat = padded.flatten(2)  # [B, C, (H+2)(W+2)]
    index = (ys * (w + 2) + xs).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return flat.gather(2, index).view_as(x)


def cutout(x: torch.Tensor, rt: Runtime, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = rt.randint(0, h + (1 - ch % 2), b, 1, 1)
    cx = rt.randint(0, w + (1 - cw % 2), b, 1, 1)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    top, left = cy - ch // 2, cx - cw // 2  # [B, 1, 1]
    inside = (gy >= top) & (gy < top + ch) & (gx >= left) & (gx < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)
