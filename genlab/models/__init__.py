"""Model families by name.

Every family implements the same small surface (DESIGN.md), so the loop, the metrics and the
report never ask which family they hold:

- `Family(config, image_shape, num_classes, runtime)`: `runtime` (genlab.train.runtime) says
  where and how the step runs (device, precision, data parallelism) and guards the optimisers
  against NaN/inf; every optimiser step goes through it.
- `train_step(images uint8 [B, C, H, W], labels int64 [B]) -> dict[str, float]`: one optimisation
  step; the family owns its optimisers and its preprocessing of the uint8 pixels.
- `sample(n, labels=None, generator=None) -> uint8 [n, C, H, W]` (on the CPU).
- `state_dict()` / `load_state_dict(state)`: nets, optimisers and EMA, as nested dicts of tensors.
- `SAMPLING_OPTIONS`: {name: (type, help)} of the keyword options its `sample` takes (temperature,
  DDIM steps, ...), so that the CLI and the web demo offer only those that apply.
- optional `nets() -> dict[str, nn.Module]` (for --compile), `latent_dim` and
  `decode(z) -> float [n, C, H, W] in [0, 1]` (perceptual path length), and
  `log_likelihood(images) -> [n]` in nats where the family has one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from genlab.errors import GenlabError


@dataclass(frozen=True)
class ModelEntry:
    family: type
    config_class: type
    description: str


MODELS: dict[str, ModelEntry] = {}

FAMILY_METHODS = ("train_step", "sample", "state_dict", "load_state_dict")


def register_model(name: str, family: type, config_class: type, description: str) -> None:
    """Add a model family under `name`, checking it has the family interface and a config whose
    `name` field defaults to `name` (configs store the name; the registry finds the class)."""
    if not name or name in MODELS:
        raise ValueError(f"model name {name!r} is empty or already registered")
    missing = [m for m in FAMILY_METHODS if not callable(getattr(family, m, None))]
    if missing:
        raise TypeError(f"model {name!r}: {family.__name__} lacks {', '.join(missing)}")
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"model {name!r}: config {config_class!r} is not a dataclass")
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    if defaults.get("name") != name:
        raise ValueError(f"model {name!r}: {config_class.__name__}.name must default to {name!r}")
    MODELS[name] = ModelEntry(family, config_class, description)


def get_model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise GenlabError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(config, image_shape: tuple[int, int, int], num_classes: int, runtime=None):
    """The family that `config.name` names, built for images of `image_shape` (C, H, W); the
    default runtime is one process on the CPU in fp32."""
    from genlab.train.runtime import Runtime

    return get_model_entry(config.name).family(config, image_shape, num_classes, runtime or Runtime())


from genlab.models import diffusion, gan, transformer, vae  # noqa: E402

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
