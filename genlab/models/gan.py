"""Generative adversarial networks (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661).

`gan-mlp` is the tutorial's GAN, exactly: an MLP generator 100 -> 256 -> 512 -> 1024 -> 784 with
LeakyReLU(0.2) and Tanh, an MLP discriminator 784 -> 512 -> 256 -> 1, Adam(2e-4, betas 0.5/0.999),
images scaled to [-1, 1], and the minimax game

    min_G max_D  E[log D(x)] + E[log(1 - D(G(z)))]

The discriminator's Sigmoid is folded into the losses: D returns a logit `l`, and with
D = sigmoid(l) we use log D = -softplus(-l) and log(1 - D) = -softplus(l), which is the same
mathematics as BCE on probabilities without its overflow to log(0) once D saturates.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import option
from genlab.errors import GenlabError
from genlab.train.runtime import Runtime

G_LOSSES = ("non-saturating", "minimax")


@dataclass
class GanMlpConfig:
    """The tutorial GAN's recipe."""

    name: str = option("gan-mlp", "model family (listed at the end of --help)", flag="--model")
    latent_dim: int = option(100, "size of the noise vector z")
    g_loss: str = option("non-saturating", "generator loss: -log D(G(z)) (non-saturating) or "
                         "log(1 - D(G(z))) (minimax)", choices=G_LOSSES)
    lr: float = option(2e-4, "Adam learning rate of G and D")
    beta1: float = option(0.5, "Adam beta1 of G and D")
    beta2: float = option(0.999, "Adam beta2 of G and D")

    def validate(self) -> None:
        if self.latent_dim <= 0:
            raise GenlabError(f"latent_dim must be positive, got {self.latent_dim}")
        if self.lr <= 0:
            raise GenlabError(f"lr must be positive, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise GenlabError(f"Adam betas must lie in [0, 1), got {self.beta1}, {self.beta2}")


class MLPGenerator(nn.Module):
    """z [B, latent] -> image [B, C, H, W] in [-1, 1]."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.image_shape = image_shape
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 1024), nn.LeakyReLU(0.2),
            nn.Linear(1024, prod(image_shape)), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """image [B, C, H, W] -> logit [B] of "real" (the tutorial's final Sigmoid lives in the loss)."""

    def __init__(self, image_shape: tuple[int, int, int]):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prod(image_shape), 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """L_D = -mean(log D(x) + log(1 - D(G(z)))), from logits."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def g_loss(d_fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Non-saturating L_G = -mean(log D(G(z))); minimax L_G = mean(log(1 - D(G(z))))."""
    if kind == "non-saturating":
        return F.softplus(-d_fake).mean()
    return -F.softplus(d_fake).mean()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


class GanMlp:
    """The tutorial GAN as a genlab family: owns G, D and their Adam optimisers."""

    def __init__(self, config: GanMlpConfig, image_shape, num_classes: int, runtime: Runtime | None = None):
        self.config = config
        self.rt = runtime or Runtime()
        self.device = self.rt.device
        self.image_shape = tuple(image_shape)
        self.G = MLPGenerator(config.latent_dim, self.image_shape).to(self.device)
        self.D = MLPDiscriminator(self.image_shape).to(self.device)
        betas = (config.beta1, config.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas)

    def nets(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One D update then one G update on the same fakes, as in the tutorial.

        A NaN or inf in D's loss or gradients (bad data, a diverged G) is refused before either
        update; one in G's loss or gradients is refused before G's update, after D's."""
        rt = self.rt
        x = to_unit(images.to(self.device))
        # z for the whole global batch, this rank's share: N ranks compute what one process does
        z = rt.shard(torch.randn(rt.global_batch(len(x)), self.config.latent_dim, device=self.device))
        with rt.autocast():
            fake = self.G(z)
            d_real, d_fake = self.D(x).float(), self.D(fake.detach()).float()
            loss_d = d_loss(d_real, d_fake)
        self.opt_D.zero_grad(set_to_none=True)
        rt.backward(loss_d)
        grad_d = rt.finish_grads("D", self.D, self.opt_D, loss_d)
        rt.step(self.opt_D)

        self.D.requires_grad_(False)  # G's update needs gradients through D, not of D's weights
        try:
            with rt.autocast():
                loss_g = g_loss(self.D(fake).float(), self.config.g_loss)
            self.opt_G.zero_grad(set_to_none=True)
            rt.backward(loss_g)
        finally:
            self.D.requires_grad_(True)
        grad_g = rt.finish_grads("G", self.G, self.opt_G, loss_g)
        rt.step(self.opt_G)
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
                "d_real": torch.sigmoid(d_real).mean().item(),  # D(x)
                "d_fake": torch.sigmoid(d_fake).mean().item(),  # D(G(z)), before D's update
                "grad_norm_d": grad_d, "grad_norm_g": grad_g}

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images as floats in [0, 1] [n, C, H, W] from latents z [n, latent_dim], unquantised (for
        perceptual path length, whose 1e-4 steps would vanish in uint8)."""
        was_training = self.G.training
        self.G.eval()
        x = (self.G(z.to(self.device)).float() + 1) / 2
        self.G.train(was_training)
        return x

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images, uint8 [n, C, H, W] on the CPU; z is drawn on the CPU so a seed means the same
        images on any device."""
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(self.device)
        was_training = self.G.training
        self.G.eval()
        images = to_uint8(self.G(z)).cpu()
        self.G.train(was_training)
        return images

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
