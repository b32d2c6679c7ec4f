"""Networks shared by the families: the tutorial's MLPs, DCGAN's convolutional G and D, and the two
ways of telling a discriminator the class.

Every generator maps (z [B, latent], labels [B] or None) -> images [B, C, H, W] in [-1, 1]; every
discriminator maps (images, labels or None) -> one raw score per image [B]. Class conditioning:
G gets a learned label embedding concatenated to z (Mirza & Osindero 2014, arXiv:1411.1784); D gets
either the projection term <embed(y), h> added to its score (Miyato & Koyama 2018,
arXiv:1802.05637) or one-hot label maps concatenated to its input.
"""

from __future__ import annotations

from math import prod

import torch
import torch.nn.functional as F
from torch import nn

LABEL_DIM = 16  # size of G's label embedding


def maybe_sn(layer: nn.Module, spectral: bool) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018, arXiv:1802.05957) where asked."""
    return nn.utils.parametrizations.spectral_norm(layer) if spectral else layer


class LabelInput(nn.Module):
    """G's input: z, with the label embedding appended when the model is conditional."""

    def __init__(self, num_classes: int | None):
        super().__init__()
        self.embed = nn.Embedding(num_classes, LABEL_DIM) if num_classes else None
        self.extra = LABEL_DIM if num_classes else 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([z, self.embed(labels)], 1) if self.embed is not None else z


class DiscriminatorHead(nn.Module):
    """Score from features h [B, F]: a linear map, plus the projection <embed(y), h> when
    conditional by projection."""

    def __init__(self, features: int, num_classes: int | None, projection: bool, spectral: bool):
        super().__init__()
        self.out = maybe_sn(nn.Linear(features, 1), spectral)
        self.embed = maybe_sn(nn.Embedding(num_classes, features), spectral) if projection else None

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        score = self.out(h).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(labels) * h).sum(1)
        return score


def one_hot_maps(labels: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot labels as constant image channels [B, K, H, W], for conditioning D by concatenation."""
    maps = F.one_hot(labels, num_classes).to(like.dtype)
    return maps[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


# ---------------------------------------------------------------- the tutorial's MLPs

class MLPGenerator(nn.Module):
    """z [B, latent] -> 256 -> 512 -> 1024 -> C*H*W, LeakyReLU(0.2), Tanh (the tutorial's G)."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], num_classes: int | None = None):
        super().__init__()
        self.image_shape = image_shape
        self.cond = LabelInput(num_classes)
        self.net = nn.Sequential(
            nn.Linear(latent_dim + self.cond.extra, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 1024), nn.LeakyReLU(0.2),
            nn.Linear(1024, prod(image_shape)), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.cond(z, labels)).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """image -> 512 -> 256 -> score, LeakyReLU(0.2) (the tutorial's D; its Sigmoid is in the loss)."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int | None = None,
                 conditioning: str = "projection", spectral: bool = False):
        super().__init__()
        self.num_classes = num_classes if conditioning == "concat" else None
        extra = num_classes if self.num_classes else 0
        self.net = nn.Sequential(
            nn.Flatten(),
            maybe_sn(nn.Linear(prod(image_shape) + extra, 512), spectral), nn.LeakyReLU(0.2),
            maybe_sn(nn.Linear(512, 256), spectral), nn.LeakyReLU(0.2),
        )
        self.head = DiscriminatorHead(256, num_classes, num_classes is not None and conditioning == "projection",
                                      spectral)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            x = torch.cat([x.flatten(1), F.one_hot(labels, self.num_classes).to(x.dtype)], 1)
        return self.head(self.net(x), labels)


# ---------------------------------------------------------------- DCGAN (Radford et al. 2015, arXiv:1511.06434)

class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation of each feature across a group of `group`
    images, averaged (Karras et al. 2018, arXiv:1710.10196). A batch of near-identical fakes has a
    visibly small value, so D can punish a G that covers few modes; real batches teach it the data's
    spread. Biased variance, so a group of one gives 0, not NaN."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        g = min(self.group, b)
        if b % g:
            g = 1
        y = h.float().reshape(g, b // g, c * height * width)
        variance = (y - y.mean(0)).square().mean(0)  # written out: torch.var over dim 0 took 7 ms on CPU
        spread = (variance + 1e-8).sqrt().mean(1)  # [b // g]
        extra = spread.repeat(g).view(b, 1, 1, 1).expand(b, 1, height, width).to(h.dtype)
        return torch.cat([h, extra], 1)


def dcgan_levels(side: int) -> int:
    """Halvings between DCGAN's smallest feature map and the image: 2 up to 32 px, 3 above."""
    return 2 if side <= 32 else 3


class ClassBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (conditional BatchNorm: Dumoulin et al.
    2017, arXiv:1610.07629; the generators of Miyato & Koyama 2018 and BigGAN): x [B, C, H, W],
    labels [B] -> BN(x) * gain[y] + bias[y], gains starting at 1 and biases at 0 (plain BN)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Parameter(torch.ones(num_classes, channels))
        self.bias = nn.Parameter(torch.zeros(num_classes, channels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.gain[labels, :, None, None] + self.bias[labels, :, None, None]


class DCGenerator(nn.Module):
    """z -> (2w, H/4, W/4) -> ConvT -> (w, H/2) -> ConvT -> (w/2, H) -> Conv -> C, Tanh; BatchNorm
    and ReLU between, as in DCGAN. Above 32 px one level more: z -> (4w, H/8) -> ... -> (w/2, H).
    `class_norm`: a conditional G's BatchNorms take their gain and bias from the label too."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], width: int = 32,
                 num_classes: int | None = None, class_norm: bool = False):
        super().__init__()
        c, h, _ = image_shape
        levels = dcgan_levels(h)
        top = width * 2 ** (levels - 1)
        self.start = (top, h // 2 ** levels, h // 2 ** levels)
        self.cond = LabelInput(num_classes)
        self.project = nn.Sequential(nn.Linear(latent_dim + self.cond.extra, prod(self.start), bias=False),
                                     nn.BatchNorm1d(prod(self.start)), nn.ReLU())
        layers, c_in = [], top
        for i in range(levels):
            c_out = top // 2 ** (i + 1)
            norm = ClassBatchNorm2d(c_out, num_classes) if class_norm and num_classes else nn.BatchNorm2d(c_out)
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), norm, nn.ReLU()]
            c_in = c_out
        self.net = nn.Sequential(*layers, nn.Conv2d(c_in, c, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(self.cond(z, labels)).view(-1, *self.start)
        for layer in self.net:
            h = layer(h, labels) if isinstance(layer, ClassBatchNorm2d) else layer(h)
        return h


class DCDiscriminator(nn.Module):
    """image -> Conv(4, stride 2) -> (w, H/2) -> Conv -> (2w, H/4) -> Conv -> (2w, H/4) -> score
    (above 32 px one stride-2 level more, to (4w, H/8)); LeakyReLU(0.2), no BatchNorm (it would mix
    real and fake statistics and break the gradient penalty), spectral normalisation as an option."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 32, num_classes: int | None = None,
                 conditioning: str = "projection", spectral: bool = False, minibatch_std: bool = False):
        super().__init__()
        c, h, _ = image_shape
        levels = dcgan_levels(h)
        self.num_classes = num_classes if conditioning == "concat" else None
        c_in = c + (num_classes if self.num_classes else 0)
        std = [MinibatchStd()] if minibatch_std else []
        layers, c_out = [], width
        for _ in range(levels):
            layers += [maybe_sn(nn.Conv2d(c_in, c_out, 4, 2, 1), spectral), nn.LeakyReLU(0.2)]
            c_in, c_out = c_out, 2 * c_out
        self.net = nn.Sequential(
            *layers, *std,
            maybe_sn(nn.Conv2d(c_in + len(std), c_in, 3, 1, 1), spectral), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        features = c_in * (h // 2 ** levels) ** 2
        self.head = DiscriminatorHead(features, num_classes, num_classes is not None and conditioning == "projection",
                                      spectral)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            x = torch.cat([x, one_hot_maps(labels, self.num_classes, x)], 1)
        return self.head(self.net(x), labels)
