"""What every family shares, written once: the pixel convention, the moving average of weights,
class labels, the image-size check, and typed sampling options.

Pixels: datasets hold uint8 [0, 255]; networks see floats in [-1, 1]. `to_unit` and `to_uint8`
are the only conversions, and `LatentSpace.decode` returns the same [-1, 1] floats.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from genlab.config import field_type, parse_text
from genlab.errors import GenlabError


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


# ---------------------------------------------------------------- labels

def conditional_classes(conditional: bool, num_classes: int) -> int | None:
    """The number of classes a conditional model is told about (None when unconditional); every
    family refuses --conditional on a dataset without labels the same way."""
    if not conditional:
        return None
    if num_classes < 2:
        raise GenlabError("--conditional needs a labelled dataset (at least 2 classes); this one has "
                          f"{num_classes}. Put a folder dataset's images in one subfolder per class")
    return num_classes


def balanced_labels(n: int, k: int) -> torch.Tensor:
    """Classes 0, 1, ..., k-1, 0, 1, ... for n samples: every class equally often."""
    return torch.arange(n) % k


def proportional_labels(n: int, counts: list[int]) -> torch.Tensor:
    """n labels in the proportions `counts` (largest remainders), mixed by a fixed permutation so
    that any first m of them keep the proportions; equal counts give `balanced_labels` exactly."""
    k = len(counts)
    if len(set(counts)) == 1:
        return balanced_labels(n, k)
    share = torch.tensor(counts, dtype=torch.float64) / sum(counts) * n
    take = share.floor().long()
    order = (share - take).argsort(descending=True)
    take[order[:n - int(take.sum())]] += 1
    labels = torch.repeat_interleave(torch.arange(k), take)
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))]


def check_labels(labels, n: int, k: int | None, device=None) -> torch.Tensor | None:
    """`n` class numbers for a model conditioned on `k` classes (on `device`): balanced classes
    when `labels` is None; None for an unconditional model (k None)."""
    if not k:
        return None
    labels = balanced_labels(n, k) if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    if len(labels) != n or labels.min() < 0 or labels.max() >= k:
        raise GenlabError(f"labels must be {n} class numbers in 0..{k - 1}")
    return labels.to(device) if device is not None else labels


# ---------------------------------------------------------------- images

def check_image_size(image_shape: tuple[int, int, int], family: str, multiple: int = 4) -> None:
    """Refuse images a family's networks cannot take (they halve the side twice, or more)."""
    _, h, w = image_shape
    if h != w or h % multiple or h < 2 * multiple:
        raise GenlabError(f"{family} needs square images with a side divisible by {multiple} (28, 32, 64), got "
                          f"{h}x{w}; use --image-size for a folder dataset")


# ---------------------------------------------------------------- reconstruction quality

def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of uint8 images against uint8 references, in dB (over all pixels;
    identical images count as a squared error of 1e-10)."""
    mse = float((images.float() - reference.float()).square().mean())
    return 10 * math.log10(255 ** 2 / max(mse, 1e-10))


# ---------------------------------------------------------------- the moving average of weights

class EMA:
    """An exponential moving average of a network's weights, for sampling: after each optimiser
    step, ema <- ema + (1 - decay) (weights - ema). With `warmup` the decay starts low,
    min(decay, (1 + t) / (10 + t)), so that the random initial weights fade fast. Buffers (BatchNorm
    statistics) are copied: they belong to the weights being trained."""

    def __init__(self, net: nn.Module, decay: float, warmup: bool = False):
        import copy

        self.decay, self.warmup = decay, warmup
        self.net = copy.deepcopy(net).requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """Move the average towards `net` after optimiser step `step` (0-based)."""
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        torch._foreach_lerp_(list(self.net.parameters()), list(net.parameters()), 1 - decay)
        for b_ema, b in zip(self.net.buffers(), net.buffers()):
            b_ema.copy_(b)


# ---------------------------------------------------------------- sampling options

def sampling_options(defaults, given: dict) -> object:
    """`defaults` (a family's SamplingOptions instance) with the `given` values, which may be typed
    or text (from a flag or a query string); an unknown name or a bad value is refused in one line."""
    known = {f.name for f in dataclasses.fields(defaults)}
    values = {}
    for name, value in given.items():
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise GenlabError(f"unknown sampling option {name!r} for this model; its options: {listed}")
        if isinstance(value, str):
            try:
                value = parse_text(type(defaults), name, value)
            except ValueError:
                kind = field_type(type(defaults), name)[0].__name__
                raise GenlabError(f"sampling option {name} takes a {kind}, got {value!r}") from None
        values[name] = value
    return dataclasses.replace(defaults, **values)


def describe_options(options) -> dict[str, dict]:
    """{name: {type, help, default}} of a SamplingOptions instance (for the web demo)."""
    return {f.name: {"type": field_type(type(options), f.name)[0].__name__, "help": f.metadata.get("help", ""),
                     "default": getattr(options, f.name)} for f in dataclasses.fields(options)}
