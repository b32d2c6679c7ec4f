"""Model families by name: a plain registry, filled below by one `register_model` line a family.

A family implements `genlab.models.protocols.Family` (train_step, sample, sampling_defaults, nets,
state_dict, load_state_dict, and a `SamplingOptions` dataclass); what it can do beyond that it
declares by implementing the capability protocols there. Adding a family is one module, one line
below, and its entries in the family test matrix (tests/test_families.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from genlab.config import MODEL_CONFIGS, register_model_config
from genlab.core.runtime import Runtime
from genlab.errors import GenlabError
from genlab.models.protocols import FAMILY_METHODS


@dataclass(frozen=True)
class ModelEntry:
    family: type
    config_class: type
    description: str


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, family: type, config_class: type, description: str) -> None:
    """Add a model family under `name`, checking that it has the family interface, a dataclass of
    sampling options, and a config whose `name` field defaults to `name`."""
    if not name or name in MODELS:
        raise ValueError(f"model name {name!r} is empty or already registered")
    missing = [m for m in FAMILY_METHODS if not callable(getattr(family, m, None))]
    if missing:
        raise TypeError(f"model {name!r}: {family.__name__} lacks {', '.join(missing)}")
    if not dataclasses.is_dataclass(getattr(family, "SamplingOptions", None)):
        raise TypeError(f"model {name!r}: {family.__name__}.SamplingOptions must be a dataclass of its "
                        "sampling options")
    register_model_config(name, config_class)
    MODELS[name] = ModelEntry(family, config_class, description)


def unregister_model(name: str) -> None:
    """Remove a family (tests register stand-ins and take them out again)."""
    MODELS.pop(name, None)
    MODEL_CONFIGS.pop(name, None)


def get_model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise GenlabError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(config, image_shape: tuple[int, int, int], num_classes: int, runtime: Runtime | None = None):
    """The family that `config.name` names, built for images of `image_shape` (C, H, W); the
    default runtime is one process on the CPU in fp32."""
    return get_model_entry(config.name).family(config, image_shape, num_classes, runtime or Runtime())


from genlab.models import (diffusion, flow, gan, latent_diffusion, latent_flow, latent_transformer,  # noqa: E402
                           transformer, vae)

register_model("gan-mlp", gan.Gan, gan.GanMlpConfig,
               "the tutorial's MLP GAN: 100 -> 256 -> 512 -> 1024 -> 784, Tanh; Adam 2e-4")
register_model("dcgan", gan.Gan, gan.DcganConfig,
               "DCGAN: transposed-convolution G, convolutional D (28x28, 32x32, any channels)")
register_model("vae", vae.Vae, vae.VaeConfig,
               "convolutional VAE: Bernoulli or discretised-logistic decoder, beta, IW likelihood")
register_model("vae-mlp", vae.Vae, vae.VaeMlpConfig, "the same VAE with MLP encoder and decoder")
register_model("transformer", transformer.Transformer, transformer.TransformerConfig,
               "autoregressive pixel Transformer (Image GPT): exact likelihood, KV-cache sampling")
register_model("diffusion", diffusion.Diffusion, diffusion.DiffusionConfig,
               "DDPM with a small U-Net: DDIM sampling, classifier-free guidance, EMA")
register_model("flow", flow.Flow, flow.FlowConfig,
               "rectified flow / flow matching (SD3's recipe): Euler, Heun, dopri5 sampling, ODE likelihood")
register_model("latent-diffusion", latent_diffusion.LatentDiffusion, latent_diffusion.LatentDiffusionConfig,
               "diffusion over a cached first stage's latents (Stable Diffusion's idea): fast on a CPU")
register_model("latent-flow", latent_flow.LatentFlow, latent_flow.LatentFlowConfig,
               "rectified flow over a cached first stage's latents (SD3 / FLUX's idea): few steps, fast")
register_model("latent-transformer", latent_transformer.LatentTransformer, latent_transformer.LatentTransformerConfig,
               "a Transformer over a cached VQ first stage's tokens (VQGAN / DALL-E's idea)")
