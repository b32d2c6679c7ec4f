"""Latent diffusion (Rombach et al. 2022, https://arxiv.org/abs/2112.10752): genlab's diffusion family
run in the latent space of a first stage instead of on pixels.

An image of 28x28 becomes a 4x7x7 grid of latents scaled to unit variance (genlab.models.first_stage,
kind `kl`), so the U-Net (its levels at 7, 4 and 2) sees 16x fewer positions than pixel diffusion's:
on a CPU the same minutes buy many more steps, and sampling is fast enough for 10,000 images. The
rest is diffusion.py unchanged: the noise schedule, eps or v prediction, the EMA, class
conditioning with label dropout and classifier-free guidance, DDIM and DDPM sampling; samples are
decoded by the first stage at the end. The first stage is found in (or trained into) genlab's cache
before the first step and travels inside every checkpoint with its name and hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.config import option
from genlab.core.runtime import Runtime
from genlab.models.common import check_image_size
from genlab.models.diffusion import Diffusion, DiffusionConfig
from genlab.models.first_stage import FirstStageOptions, FirstStageSlot, LatentPrior


@dataclass
class LatentDiffusionConfig(FirstStageOptions, DiffusionConfig):
    """A latent diffusion model's recipe: the diffusion options, and the first stage's."""

    name: str = option("latent-diffusion", "model family (listed at the end of --help)", flag="--model")
    width: int = option(64, "channels of the latent U-Net's first level (x2 at each lower level)")

    def validate(self) -> None:
        DiffusionConfig.validate(self)
        self.validate_first_stage()


class LatentUNetPrior(LatentPrior):
    """What latent diffusion and latent flow add to their pixel families (`class LatentX(LatentUNetPrior,
    X)`): the U-Net models a first stage's latents, decoded to images at the end."""

    kind: str

    def __init__(self, config, image_shape, num_classes: int, runtime: Runtime | None = None):
        check_image_size(tuple(image_shape), self.kind)
        self.slot = FirstStageSlot(config.first_stage_settings(), image_shape, (runtime or Runtime()).device)
        super().__init__(config, image_shape, num_classes, runtime)

    def space(self, image_shape) -> tuple[int, int, int]:
        return self.slot.model.latent_shape

    def to_space(self, images: torch.Tensor) -> torch.Tensor:
        return self.latents(images)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.slot.model.decode(x)

    def encode(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """The scaled latents of uint8 images, flattened [n, C h w]."""
        return self.slot.require().encode(images.to(self.device)).flatten(1).cpu()


class LatentDiffusion(LatentUNetPrior, Diffusion):
    """Diffusion over a first stage's latents; samples decoded to images."""

    kind = "latent-diffusion"
    x0_clip = None  # latents have no fixed range
