"""Pictures that show what a model has learnt beyond its samples, for the families that allow them:

- latent interpolation: slerp between random latents (a `LatentSpace`);
- reconstructions, input row above output row, and interpolation between two real images
  (an `Encoder`: the VAE);
- latent traversal: one row per latent dimension, that dimension swept from -3 to 3 (small latents);
- whatever the family draws itself (`OwnViews`: the denoising chains of a diffusion model).

Each view is a uint8 batch [N, C, H, W] with its images-per-row; `save_views` writes them as PNGs
in the run's samples/ folder, where the HTML report finds them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.core.images import save_grid
from genlab.metrics.scores import slerp
from genlab.models.common import balanced_labels, to_uint8
from genlab.models.protocols import Encoder, LatentSpace, OwnViews

MAX_TRAVERSAL_DIMS = 16  # traversals are drawn for latents up to this size
STEPS = 10  # frames of an interpolation


def _labels(model, n: int):
    k = model.conditional_classes
    return {"labels": balanced_labels(n, k)} if k else {}


def latent_interpolation(model, rows: int = 8, seed: int = 0) -> tuple[torch.Tensor, int]:
    """`rows` slerps between pairs of random latents, STEPS frames each."""
    gen = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(rows, model.latent_dim, generator=gen), torch.randn(rows, model.latent_dim, generator=gen)
    t = torch.linspace(0, 1, STEPS)
    z = torch.stack([slerp(z0, z1, ti.expand(rows)) for ti in t], 1).reshape(rows * STEPS, -1)  # row-major
    labels = _labels(model, rows)
    if labels:  # each row keeps one class
        labels = {"labels": labels["labels"].repeat_interleave(STEPS)}
    return to_uint8(model.decode(z, **labels)), STEPS


def reconstructions(model, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Inputs in the first row, their reconstructions in the second (and so on in pairs of rows)."""
    extra = {"labels": labels} if model.conditional_classes else {}
    out = model.reconstruct(images, **extra)
    per_row = min(len(images), 16)
    pairs = [torch.cat([images[i:i + per_row], out[i:i + per_row]]) for i in range(0, len(images), per_row)]
    return torch.cat(pairs), per_row


def real_interpolation(model, images: torch.Tensor, labels: torch.Tensor, rows: int = 4) -> tuple[torch.Tensor, int]:
    """Linear paths between the posterior means of pairs of real images (the ends are their
    reconstructions, not the images)."""
    extra = {"labels": labels} if model.conditional_classes else {}
    mu = model.encode(images[:2 * rows], **({k: v[:2 * rows] for k, v in extra.items()}))
    a, b = mu[0::2], mu[1::2]
    t = torch.linspace(0, 1, STEPS)[None, :, None]
    z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(rows * STEPS, -1)
    dec_labels = {"labels": extra["labels"][0:2 * rows:2].repeat_interleave(STEPS)} if extra else {}
    return to_uint8(model.decode(z, **dec_labels)), STEPS


def traversal(model, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """One row per latent dimension of the first image's posterior mean, that dimension set to
    -3 ... 3 standard deviations of the prior. None for latents above MAX_TRAVERSAL_DIMS."""
    if model.latent_dim > MAX_TRAVERSAL_DIMS:
        return None
    extra = {"labels": labels[:1]} if model.conditional_classes else {}
    mu = model.encode(images[:1], **extra)[0]
    values = torch.linspace(-3, 3, 9)
    z = mu.repeat(model.latent_dim * len(values), 1).view(model.latent_dim, len(values), -1)
    for d in range(model.latent_dim):
        z[d, :, d] = values
    dec = {"labels": extra["labels"].repeat(model.latent_dim * len(values))} if extra else {}
    return to_uint8(model.decode(z.reshape(-1, model.latent_dim), **dec)), len(values)


def views(model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[torch.Tensor, int]]:
    """Every view `model` supports, from real `images` (uint8) where a view needs them."""
    out = {}
    if isinstance(model, LatentSpace):
        out["interpolation"] = latent_interpolation(model)
    if isinstance(model, Encoder):
        out["reconstructions"] = reconstructions(model, images[:32], labels[:32])
    if isinstance(model, Encoder) and isinstance(model, LatentSpace):
        out["real-interpolation"] = real_interpolation(model, images, labels)
        found = traversal(model, images, labels)
        if found is not None:
            out["traversal"] = found
    if isinstance(model, OwnViews):
        out.update(model.own_views())
    return out


def save_views(model, images: torch.Tensor, labels: torch.Tensor, folder: str | Path) -> dict[str, Path]:
    """Write each view as folder/view-NAME.png; returns {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (batch, nrow) in views(model, images, labels).items():
        path = folder / f"view-{name}.png"
        save_grid(batch, path, nrow=nrow)
        written[name] = path
    return written
