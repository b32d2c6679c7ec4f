"""A Transformer over image tokens (van den Oord et al. 2017; Esser et al. 2021, VQGAN; the idea of
DALL-E): genlab's autoregressive Transformer run over a VQ first stage's grid of integer tokens.

A 28x28 image becomes 7x7 = 49 tokens of a 256-code vocabulary (genlab.models.first_stage, kind
`vq`) instead of 784 pixels: attention over 49 positions is cheap, so on a CPU the same minutes buy
many more steps and sampling 10,000 images with the key/value cache takes seconds. The rest is
transformer.py unchanged: raster order over the grid, a start or class token, teacher forcing,
temperature and top-k; with --text a prompt's encoded states as a prefix before the start token
(as Parti and DALL-E put the text before the image tokens). Its likelihood is exact, of the tokens:
it says how well the prior models
the first stage's codes, and is not a likelihood of the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.config import option
from genlab.core.runtime import Runtime
from genlab.errors import GenlabError
from genlab.models.common import check_image_size, to_uint8
from genlab.models.first_stage import FirstStageOptions, FirstStageSlot, LatentPrior
from genlab.models.transformer import GUIDANCE, LABEL_DROPOUT, Transformer, check_guidance, check_sampling


@dataclass
class LatentTransformerConfig(FirstStageOptions):
    """A latent Transformer's recipe: the first stage's options (kind vq), and the Transformer's."""

    name: str = option("latent-transformer", "model family (listed at the end of --help)", flag="--model")
    first_stage: str = option("vq", "the first stage: vq (a codebook; a Transformer models tokens)", choices=("vq",))
    d_model: int = option(128, "width of the residual stream")
    layers: int = option(4, "Transformer blocks")
    heads: int = option(4, "attention heads (must divide d_model)")
    positional: str = option("learned", "positional encoding", choices=("learned", "sinusoidal"))
    dropout: float = option(0.0, "dropout on attention and MLP outputs")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay of the weight matrices")
    conditional: bool = option(False, "class-conditional: the start token is a class token")
    text: bool = option(False, "condition on the data's captions (text-to-image): a text encoder of its own whose "
                        "states go before the tokens as a prefix; --label-dropout is prompt dropout")
    label_dropout: float = option(0.0, LABEL_DROPOUT)
    guidance: float = option(1.0, GUIDANCE, resumable=True)
    temperature: float = option(1.0, "sampling temperature (logits / T)", resumable=True)
    top_k: int = option(0, "sample only among the k most likely codes (0: all)", resumable=True)

    def validate(self) -> None:
        self.validate_first_stage()
        for name in ("d_model", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise GenlabError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise GenlabError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        if not 0 <= self.dropout < 1 or self.lr <= 0:
            raise GenlabError("dropout must lie in [0, 1) and lr be positive")
        check_guidance(self)
        check_sampling(self.temperature, self.top_k, self.codebook_size)


class LatentTransformer(LatentPrior, Transformer):
    """An autoregressive Transformer over a VQ first stage's tokens; samples decoded to images."""

    sample_chunk = 1000  # 49 tokens an image: large chunks keep Python's share of the work small

    def __init__(self, config: LatentTransformerConfig, image_shape, num_classes: int,
                 runtime: Runtime | None = None):
        check_image_size(tuple(image_shape), "latent-transformer")
        self.slot = FirstStageSlot(config.first_stage_settings(), image_shape, (runtime or Runtime()).device)
        super().__init__(config, image_shape, num_classes, runtime)

    def sequence(self) -> tuple[int, int]:
        side = self.slot.model.latent_side
        return side * side, self.config.codebook_size

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> their first stage tokens [B, h w] in raster order."""
        return self.latents(images).flatten(1)

    def images(self, tokens: torch.Tensor) -> torch.Tensor:
        side = self.slot.model.latent_side
        return to_uint8(self.slot.model.decode(tokens.to(self.device).view(-1, side, side))).cpu()

    @property
    def likelihood_dims(self) -> int:
        return self.length  # bits per token

    @property
    def likelihood_convention(self) -> str:
        side = self.slot.model.latent_side
        return (f"exact, of the {side}x{side} tokens ({self.config.codebook_size} codes) the first stage "
                f"{(self.slot.info or {}).get('name', '')} gives the test images, raster order; bits per token. "
                "Not a likelihood of the pixels")

    # ---------------------------------------------------------------- the first stage

    def encode(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """The tokens of uint8 images [n, h w] (as floats)."""
        return self.tokens(images).float().cpu()
