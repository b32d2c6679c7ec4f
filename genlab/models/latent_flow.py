"""Latent flow matching: rectified flow (genlab.models.flow) over a first stage's latents, as Stable
Diffusion 3 and FLUX run it (Esser et al. 2024, https://arxiv.org/abs/2403.03206).

The first stage is latent diffusion's (genlab.models.first_stage: found in or trained into genlab's
cache before the first step, carried in every checkpoint); the flow, its solvers and guidance are
flow.py's unchanged. Latents have no fixed range, so nothing is clipped until they are decoded.
There is no likelihood of images here: the ODE's density would be of latents, not of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from genlab.config import option
from genlab.errors import GenlabError
from genlab.models.first_stage import FirstStageOptions
from genlab.models.flow import FlowConfig, FlowMatching
from genlab.models.latent_diffusion import LatentUNetPrior


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


class LatentFlow(LatentUNetPrior, FlowMatching):
    """A rectified flow over a first stage's latents; samples decoded to images."""

    kind = "latent-flow"
