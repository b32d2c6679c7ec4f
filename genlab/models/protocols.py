"""What a family is, and what it can do beyond that, declared once and checked with `isinstance`.

Every family is a `Family`: the Trainer, `genlab sample`, evaluation and the web demo use nothing
else. A capability is a protocol of its own, so a caller asks `isinstance(model, LatentSpace)`
instead of probing for attributes:

- `LatentSpace`: images from latents (GAN, VAE): interpolation, traversals, perceptual path length;
- `Encoder`: latents from images (VAE, first stages): reconstructions, paths between real images;
- `Likelihood`: log p(x) of test images in nats, with the data convention it is measured under
  (`LikelihoodBounds`: a lower bound beside it, the VAE's ELBO);
- `Discriminated` and `Diagnosed`: a discriminator's scores, and watches of the family's own
  failures (the GAN's), which the Trainer's diagnostics run without knowing what they watch;
- `Prepared`: a family that needs the training data before its first step (a latent family's
  first stage, and its encodings of the training images);
- `OwnViews`: pictures only this family can draw (diffusion's denoising chains);
- `Solved`: a family whose samplers solve an ODE or SDE in steps (diffusion, flows): how many
  network evaluations its latest samples took (an adaptive solver decides that itself);
- `EstimatedLikelihood`: a likelihood estimated on fewer test images than the rest (a flow's ODE).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Family(Protocol):
    """A model family. It is built as `Family(config, image_shape, num_classes, runtime)`, owns its
    optimisers (as attributes: `--lr-decay` finds them there), and converts the uint8 pixels itself.
    `SamplingOptions` (a class attribute) is a dataclass of the keyword options `sample` takes, with
    types and help; `sampling_defaults()` returns it filled with the recipe's values."""

    config: Any
    image_shape: tuple[int, int, int]
    conditional_classes: int | None  # classes a conditional model is told about; None otherwise

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One optimisation step on uint8 images [B, C, H, W] with int64 labels [B]; the logs."""

    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               **options) -> torch.Tensor:
        """n images, uint8 [n, C, H, W] on the CPU; the same generator state, the same images."""

    def sampling_defaults(self) -> Any:
        """The SamplingOptions this model samples with when none are given."""

    def nets(self) -> dict[str, nn.Module]:
        """The networks, by name (for --compile and data-parallel broadcasting)."""

    def state_dict(self) -> dict:
        """Nets, optimisers, moving averages and counters, as nested dicts of tensors."""

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class LatentSpace(Protocol):
    latent_dim: int

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images as floats in [-1, 1], [n, C, H, W] on the CPU, from latents z [n, latent_dim]
        drawn from N(0, I); unquantised (path lengths take steps of 1e-4)."""


@runtime_checkable
class Encoder(Protocol):
    def encode(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The latents [n, latent_dim] of uint8 images."""

    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images decoded from their own latents."""


@runtime_checkable
class Likelihood(Protocol):
    likelihood_convention: str  # what the numbers are of: binarised? quantised? exact or a bound?
    likelihood_dims: int  # how many dimensions the likelihood is over (bits per dimension divide by it)

    def log_likelihood(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) [n] in nats (log p(x | y) for a conditional model)."""


@runtime_checkable
class EstimatedLikelihood(Likelihood, Protocol):
    likelihood_images: int  # the test images it is estimated on (an ODE's likelihood costs many passes an image)


@runtime_checkable
class LikelihoodBounds(Protocol):
    def likelihood_bounds(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                          k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(a lower bound, the estimate) of log p(x) [n] in nats, from the same samples."""


@runtime_checkable
class Discriminated(Protocol):
    d_outputs_probabilities: bool  # sigmoid(score) is a probability (the BCE games)

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator's raw score of uint8 images [n]."""


@runtime_checkable
class Diagnosed(Protocol):
    def watches(self, train: tuple[torch.Tensor, torch.Tensor],
                heldout: tuple[torch.Tensor, torch.Tensor] | None, seed: int) -> list:
        """Watches (genlab.models.diagnosis.Watch) of this family's own failures, given training
        and held-out images with their labels."""


@runtime_checkable
class Prepared(Protocol):
    def prepare(self, data, heldout, log) -> dict:
        """Make what the family needs from the training data (ImageSet; `heldout` may be None)
        before its first step, e.g. a latent family's first stage; returns what run.json records."""

    def attach(self, data, log) -> None:
        """Compute what the steps reuse from the training data (ImageSet) with the weights as they
        are now, before the first step of every session, a resumed one too (a latent family encodes
        the training images once)."""


@runtime_checkable
class Solved(Protocol):
    last_nfe: int | None  # network evaluations a sample took in the latest `sample` call (a guided one: one)


@runtime_checkable
class OwnViews(Protocol):
    def own_views(self) -> dict[str, tuple[torch.Tensor, int]]:
        """{name: (uint8 images, images per row)}: pictures of what this family does."""


FAMILY_METHODS = ("train_step", "sample", "sampling_defaults", "nets", "state_dict", "load_state_dict")
