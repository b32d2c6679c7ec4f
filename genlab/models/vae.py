"""Variational autoencoders (Kingma & Welling 2013, https://arxiv.org/abs/1312.6114).

An encoder maps an image x to a Gaussian q(z|x) = N(mu, sigma^2); a decoder maps a latent z to
the parameters of p(x|z); training maximises the evidence lower bound

    ELBO(x) = E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I))   <=   log p(x)   (when beta = 1)

with z = mu + sigma * eps (the reparameterisation trick). Two decoder likelihoods:

- `bernoulli` (the common MNIST choice): pixels are binary. Training images are binarised afresh
  at every step, pixel ~ Bernoulli(intensity / 255) ("dynamically binarised MNIST"); likelihoods
  are of the test images binarised the same way once, with a fixed seed. These are the numbers
  published VAE NLLs on MNIST use (~79-86 nats for good models).
- `logistic`: a discretised logistic per pixel over the 256 uint8 values (Salimans et al. 2017,
  arXiv:1701.05517); a likelihood of the actual 8-bit images, comparable with the Transformer's
  256-level NLL (in bits per dimension).

`log_likelihood` is the importance-weighted estimate with k samples (Burda et al. 2015,
arXiv:1509.00519), a tighter lower bound on log p(x) than the ELBO: ELBO <= IW_k <= log p(x) <= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import option
from genlab.core.runtime import LazyOptimizer, Runtime
from genlab.errors import GenlabError
from genlab.models import common, nets

LIKELIHOODS = ("bernoulli", "logistic")
BINARISE_SEED = 1234  # the fixed binarisation of test images for likelihoods


@dataclass
class VaeConfig:
    """A convolutional VAE's recipe."""

    name: str = option("vae", "model family (listed at the end of --help)", flag="--model")
    latent_dim: int = option(16, "size of the latent z")
    likelihood: str = option("bernoulli", "decoder likelihood: bernoulli (binarised pixels, the MNIST "
                             "convention) or logistic (discretised logistic over 256 levels)", choices=LIKELIHOODS)
    beta: float = option(1.0, "weight of the KL term (beta-VAE; 1 is the true ELBO, 0 an autoencoder)")
    kl_warmup: int = option(0, "steps over which the KL weight rises linearly from 0 to beta (0: none)")
    lr: float = option(1e-3, "Adam learning rate")
    width: int = option(32, "channels of the first convolution (vae) or half the hidden units / 8 (vae-mlp)")
    conditional: bool = option(False, "class-conditional: encoder and decoder are told the label")
    iw_samples: int = option(100, "importance samples k of the log-likelihood estimate")
    temperature: float = option(1.0, "sampling temperature: z ~ N(0, T^2 I)", resumable=True)

    def validate(self) -> None:
        if self.latent_dim <= 0:
            raise GenlabError(f"latent_dim must be positive, got {self.latent_dim}")
        if self.beta < 0:
            raise GenlabError(f"beta must be 0 or more, got {self.beta}")
        if self.kl_warmup < 0:
            raise GenlabError(f"kl_warmup must be 0 or more steps, got {self.kl_warmup}")
        if self.lr <= 0:
            raise GenlabError(f"lr must be positive, got {self.lr}")
        if self.width < 4 or self.width % 2:
            raise GenlabError(f"width must be an even number >= 4, got {self.width}")
        if self.iw_samples <= 0:
            raise GenlabError(f"iw_samples must be positive, got {self.iw_samples}")
        if self.temperature <= 0:
            raise GenlabError(f"temperature must be positive, got {self.temperature}")


@dataclass
class VaeMlpConfig(VaeConfig):
    """The same VAE with MLP encoder and decoder."""

    name: str = option("vae-mlp", "model family (listed at the end of --help)", flag="--model")


# ---------------------------------------------------------------- networks

def conv_levels(side: int) -> int:
    """Stride-2 levels of the conv VAE: 2 up to 32 px, 3 above (64 px -> 8x8)."""
    return 2 if side <= 32 else 3


class ConvEncoder(nn.Module):
    """x [B, C, H, W] (+ one-hot label) -> (mu, logvar) [B, latent]: two stride-2 convolutions (three
    above 32 px)."""

    def __init__(self, image_shape, width: int, latent_dim: int, num_classes: int | None):
        super().__init__()
        c, h, _ = image_shape
        levels = conv_levels(h)
        layers, c_in, c_out = [], c, width
        for i in range(levels):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.SiLU()]
            c_in, c_out = c_out, 2 * c_out
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.num_classes = num_classes or 0
        self.out = nn.Sequential(nn.Linear(c_in * (h // 2 ** levels) ** 2 + self.num_classes, 256), nn.SiLU(),
                                 nn.Linear(256, 2 * latent_dim))

    def forward(self, x, labels=None):
        h = self.net(x)
        if self.num_classes:
            h = torch.cat([h, F.one_hot(labels, self.num_classes).to(h.dtype)], 1)
        return self.out(h).chunk(2, dim=1)


class ConvDecoder(nn.Module):
    """z [B, latent] (+ label embedding) -> pixel parameters [B, out_channels, H, W] (the encoder's
    levels in reverse)."""

    def __init__(self, image_shape, width: int, latent_dim: int, out_channels: int, num_classes: int | None):
        super().__init__()
        _, h, _ = image_shape
        levels = conv_levels(h)
        top = width * 2 ** (levels - 1)
        self.start = (top, h // 2 ** levels, h // 2 ** levels)
        self.cond = nets.LabelInput(num_classes)
        self.project = nn.Sequential(nn.Linear(latent_dim + self.cond.extra, 256), nn.SiLU(),
                                     nn.Linear(256, math.prod(self.start)), nn.SiLU())
        layers, c_in = [], top
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(c_in, c_in // 2, 4, 2, 1), nn.SiLU()]
            c_in //= 2
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(c_in, out_channels, 4, 2, 1))

    def forward(self, z, labels=None):
        return self.net(self.project(self.cond(z, labels)).view(-1, *self.start))


class MLPEncoder(nn.Module):
    """x -> 16w -> 8w hidden units (512 -> 256 with the default width 32) -> (mu, logvar)."""

    def __init__(self, image_shape, width: int, latent_dim: int, num_classes: int | None):
        super().__init__()
        self.num_classes = num_classes or 0
        self.net = nn.Sequential(nn.Linear(math.prod(image_shape) + self.num_classes, 16 * width), nn.SiLU(),
                                 nn.Linear(16 * width, 8 * width), nn.SiLU(), nn.Linear(8 * width, 2 * latent_dim))

    def forward(self, x, labels=None):
        h = x.flatten(1)
        if self.num_classes:
            h = torch.cat([h, F.one_hot(labels, self.num_classes).to(h.dtype)], 1)
        return self.net(h).chunk(2, dim=1)


class MLPDecoder(nn.Module):
    """z -> 8w -> 16w -> pixel parameters."""

    def __init__(self, image_shape, width: int, latent_dim: int, out_channels: int, num_classes: int | None):
        super().__init__()
        _, h, w = image_shape
        self.shape = (out_channels, h, w)
        self.cond = nets.LabelInput(num_classes)
        self.net = nn.Sequential(nn.Linear(latent_dim + self.cond.extra, 8 * width), nn.SiLU(),
                                 nn.Linear(8 * width, 16 * width), nn.SiLU(),
                                 nn.Linear(16 * width, math.prod(self.shape)))

    def forward(self, z, labels=None):
        return self.net(self.cond(z, labels)).view(-1, *self.shape)


# ---------------------------------------------------------------- likelihoods

def bernoulli_log_prob(logits: torch.Tensor, x_bin: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of binary pixels, summed per image [B]."""
    return -F.binary_cross_entropy_with_logits(logits, x_bin, reduction="none").flatten(1).sum(1)


def logistic_log_prob(params: torch.Tensor, x_uint8: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of uint8 pixels under a discretised logistic (mean, log-scale per pixel), summed
    per image [B]. The 256 bins have width 2/255 on [-1, 1]; the end bins take the tails."""
    mean, log_scale = params.chunk(2, dim=1)
    log_scale = log_scale.clamp(min=-7.0)
    x = x_uint8.float() / 127.5 - 1.0
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (x - mean + 1 / 255), inv_s * (x - mean - 1 / 255)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for the bin at 0
    log_one_minus_cdf_minus = -F.softplus(minus)  # log(1 - sigmoid(minus)), for the bin at 255
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * (x - mean)  # a bin too thin for float32: density times bin width
    log_pdf_mid = mid - log_scale - 2 * F.softplus(mid) + math.log(2 / 255)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    lp = torch.where(x_uint8 == 0, log_cdf_plus, torch.where(x_uint8 == 255, log_one_minus_cdf_minus, inner))
    return lp.flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions [B]."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over dimensions [...]."""
    return -0.5 * ((z - mu).square() / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


# ---------------------------------------------------------------- the family

@dataclass
class VaeSampling:
    temperature: float = option(1.0, "z ~ N(0, T^2 I); below 1: more typical, less varied images")


class Vae:
    """A VAE as a genlab family: encoder, decoder, one Adam optimiser."""

    SamplingOptions = VaeSampling

    def __init__(self, config: VaeConfig, image_shape, num_classes: int, runtime: Runtime | None = None):
        self.config = config
        self.rt = runtime or Runtime()
        self.device = self.rt.device
        self.image_shape = tuple(image_shape)
        self.conditional_classes = common.conditional_classes(config.conditional, num_classes)
        c = self.image_shape[0]
        out_channels = c if config.likelihood == "bernoulli" else 2 * c
        k, w, L = self.conditional_classes, config.width, config.latent_dim
        if config.name == "vae":
            common.check_image_size(self.image_shape, "vae")
            self.encoder = ConvEncoder(self.image_shape, w, L, k)
            self.decoder = ConvDecoder(self.image_shape, w, L, out_channels, k)
        else:
            self.encoder = MLPEncoder(self.image_shape, w, L, k)
            self.decoder = MLPDecoder(self.image_shape, w, L, out_channels, k)
        self.encoder, self.decoder = self.encoder.to(self.device), self.decoder.to(self.device)
        self.opt = LazyOptimizer(torch.optim.Adam, [*self.encoder.parameters(), *self.decoder.parameters()], lr=config.lr)
        self.steps = 0  # for the KL warm-up; saved with the state

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def likelihood_dims(self) -> int:
        """The likelihood is of every pixel value (bits per dimension divide by their number)."""
        return math.prod(self.image_shape)

    @property
    def likelihood_convention(self) -> str:
        """What the likelihood numbers are of, so they are compared with the right published ones."""
        if self.config.likelihood == "bernoulli":
            return (f"test images binarised once (pixel ~ Bernoulli(intensity), seed {BINARISE_SEED}), "
                    "as for dynamically binarised MNIST; importance-weighted, "
                    f"k = {self.config.iw_samples}")
        return f"8-bit test images, discretised logistic over 256 levels; importance-weighted, k = {self.config.iw_samples}"

    def nets(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    # ---------------------------------------------------------------- pieces

    def _inputs(self, images: torch.Tensor, binarise_with: torch.Generator | None = None):
        """(encoder input in [0, 1] or binary, decoder target): binary pixels drawn from the
        intensities (fresh noise in training, `binarise_with` for likelihoods) for Bernoulli, the
        uint8 images themselves for the logistic."""
        images = images.to(self.device)
        x = images.float() / 255
        if self.config.likelihood == "bernoulli":
            u = torch.rand(x.shape, generator=binarise_with).to(self.device) if binarise_with is not None \
                else self.rt.rand(*x.shape)
            x_bin = (u < x).float()
            return x_bin, x_bin
        return x, images

    def _log_px(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.likelihood == "bernoulli":
            return bernoulli_log_prob(params.float(), target)
        return logistic_log_prob(params.float(), target)

    def _labels(self, labels, n: int):
        return common.check_labels(labels, n, self.conditional_classes, self.device)

    def kl_weight(self) -> float:
        if self.config.kl_warmup:
            return self.config.beta * min(1.0, self.steps / self.config.kl_warmup)
        return self.config.beta

    # ---------------------------------------------------------------- training

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One Adam step on -(E_q[log p(x|z)] - beta_t KL), averaged over the batch (nats per image)."""
        rt = self.rt
        x_in, target = self._inputs(images)
        y = labels.to(self.device) if self.conditional_classes else None
        with rt.autocast():
            mu, logvar = self.encoder(x_in, y)
            mu, logvar = mu.float(), logvar.float()
            z = mu + rt.randn(*mu.shape) * (0.5 * logvar).exp()  # reparameterisation
            rec = -self._log_px(self.decoder(z, y), target).mean()
            kl = gaussian_kl(mu, logvar).mean()
            loss = rec + self.kl_weight() * kl
        self.opt.zero_grad(set_to_none=True)
        rt.backward(loss)
        grad = rt.finish_grads("VAE", nn.ModuleList([self.encoder, self.decoder]), self.opt, loss)
        rt.step(self.opt)
        self.steps += 1
        return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item(), "neg_elbo": (rec + kl).item(),
                "grad_norm": grad}

    # ---------------------------------------------------------------- likelihoods

    @torch.no_grad()
    def elbo(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """The evidence lower bound per image [n] in nats, averaged over k samples of q(z|x)."""
        return self.likelihood_bounds(images, labels)[0]

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) [n] in nats with k = config.iw_samples."""
        return self.likelihood_bounds(images, labels)[1]

    @torch.no_grad()
    def likelihood_bounds(self, images: torch.Tensor, labels=None, k: int | None = None):
        """(ELBO, IW_k) per image [n] in nats from the same k samples z_i ~ q(z|x) and weights
        w_i = p(x, z_i) / q(z_i|x): ELBO = mean_i log w_i <= log mean_i w_i = IW_k (Jensen), so the
        ordering holds image by image, not only in expectation. Seeded: the same images give the
        same numbers."""
        k = k or self.config.iw_samples
        self._eval(True)
        try:
            gen = torch.Generator().manual_seed(BINARISE_SEED)
            x_in, target = self._inputs(images, binarise_with=gen)
            n = len(x_in)
            if self.conditional_classes and labels is None:
                raise GenlabError("a conditional VAE's likelihood is log p(x | y): pass the images' labels")
            y = self._labels(labels, n)
            mu, logvar = (t.float() for t in self.encoder(x_in, y))
            log_w = []
            chunk = max(1, 4096 // max(n, 1))  # importance samples decoded together
            for start in range(0, k, chunk):
                m = min(chunk, k - start)
                eps = torch.randn(m, *mu.shape, generator=gen).to(self.device)  # [m, n, L]
                z = mu + eps * (0.5 * logvar).exp()
                ys = y.repeat(m) if y is not None else None
                params = self.decoder(z.reshape(m * n, -1), ys)
                log_px = self._log_px(params, target.repeat(m, *[1] * (target.dim() - 1))).view(m, n)
                log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
                log_qz = log_normal(z, mu, logvar)
                log_w.append(log_px + log_pz - log_qz)
            log_w = torch.cat(log_w)  # [k, n]
            return log_w.mean(0).cpu(), (torch.logsumexp(log_w, 0) - math.log(k)).cpu()
        finally:
            self._eval(False)

    def _eval(self, on: bool) -> None:
        self.encoder.train(not on)
        self.decoder.train(not on)

    # ---------------------------------------------------------------- sampling and views

    def _mean_image(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1]: Bernoulli probabilities or the logistic's mean (the
        usual way to show a VAE's samples, rather than noisy draws from p(x|z))."""
        c = self.image_shape[0]
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(params.float())
        return ((params[:, :c].float().clamp(-1, 1)) + 1) / 2

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """Mean images as floats in [-1, 1] [n, C, H, W] from latents [n, latent_dim]."""
        return self._decode_mean(z, labels) * 2 - 1

    def _decode_mean(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """Mean images in [0, 1] (Bernoulli probabilities, or the logistic's means)."""
        return self._mean_image(self.decoder(z.to(self.device), self._labels(labels, len(z)))).cpu()

    @staticmethod
    def _pixels(mean: torch.Tensor) -> torch.Tensor:
        """Mean images in [0, 1] as uint8 pixel values (a probability p is shown as p * 255)."""
        return (mean.clamp(0, 1) * 255).round().to(torch.uint8)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """The posterior means mu [n, latent_dim] of uint8 images (intensities, not binarised)."""
        y = self._labels(labels, len(images))
        mu, _ = self.encoder(images.to(self.device).float() / 255, y)
        return mu.float().cpu()

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """Decoded posterior means of uint8 images, uint8 [n, C, H, W]."""
        return self._pixels(self._decode_mean(self.encode(images, labels), labels))

    def sampling_defaults(self) -> VaeSampling:
        return VaeSampling(temperature=self.config.temperature)

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """n images uint8 [n, C, H, W]: z ~ N(0, T^2 I) drawn on the CPU, decoded to mean images."""
        t = common.sampling_options(self.sampling_defaults(), options).temperature
        if t <= 0:
            raise GenlabError(f"temperature must be positive, got {t}")
        z = torch.randn(n, self.config.latent_dim, generator=generator) * t
        return self._pixels(self._decode_mean(z, labels))

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "decoder": self.decoder.state_dict(),
                "opt": self.opt.state_dict(), "steps": torch.tensor(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state["steps"])

