"""Latent flow matching: rectified flow (genlab.models.flow) over a first stage's latents, as Stable
Diffusion 3 and FLUX run it (Esser et al. 2024, https://arxiv.org/abs/2403.03206).

The first stage is latent diffusion's (genlab.models.first_stage: found in or trained into genlab's
cache before the first step, carried in every checkpoint); the flow, its solvers and guidance are
flow.py's unchanged. Latents have no fixed range, so nothing is clipped until they are decoded.
There is no likelihood of images here: the ODE's density would be of latents, not of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.config import option
from genlab.core.runtime import Runtime
from genlab.errors import GenlabError
from genlab.models.common import check_image_size
from genlab.models.first_stage import FirstStageOptions, FirstStageSlot, LatentPrior
from genlab.models.flow import FlowConfig, FlowMatching


@dataclass
class LatentFlowConfig(FirstStageOptions, FlowConfig):
    """A latent flow's recipe: the flow options, and the first stage's."""

    name: str = option("latent-flow", "model family (listed at the end of --help)", flag="--model")
    width: int = option(64, "channels of the latent U-Net's first level (x2 at each lower level)")

    def validate(self) -> None:
        FlowConfig.validate(self)
        self.validate_first_stage()
        if self.first_stage != "kl":
            raise GenlabError("latent-flow flows over continuous latents: use --first-stage kl (a vq first stage's "
                              "tokens are for latent-transformer)")


class LatentFlow(LatentPrior, FlowMatching):
    """A rectified flow over a first stage's latents; samples decoded to images."""

    def __init__(self, config: LatentFlowConfig, image_shape, num_classes: int, runtime: Runtime | None = None):
        check_image_size(tuple(image_shape), "latent-flow")
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
