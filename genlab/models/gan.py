"""Generative adversarial networks (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661).

Two architectures behind one family: `gan-mlp` and `dcgan` (networks in nets.py); five losses;
the stabilisers the field uses (spectral normalisation, an EMA of G, separate learning rates,
several D steps per G step, DiffAugment, a gradient penalty); class conditioning for any of them.
With its defaults, `gan-mlp` is the tutorial's GAN exactly:

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

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import option
from genlab.core.runtime import LazyOptimizer, Runtime
from genlab.errors import GenlabError
from genlab.models import common, nets
from genlab.models.common import EMA, to_uint8, to_unit
from genlab.models.diffaug import augment, parse_policy
from genlab.models.gan_diagnostics import GanWatch

EMA_STATISTICS_SEED, EMA_STATISTICS_BATCHES, EMA_STATISTICS_BATCH = 20141, 8, 256
LECAM_DECAY = 0.99
LOSSES = ("non-saturating", "minimax", "hinge", "least-squares", "wgan-gp")


@dataclass
class GanMlpConfig:
    """A GAN's recipe; the defaults are the tutorial's."""

    name: str = option("gan-mlp", "model family (listed at the end of --help)", flag="--model")
    latent_dim: int = option(100, "size of the noise vector z")
    loss: str = option("non-saturating", "the game: non-saturating -log D(G(z)) or minimax log(1 - D(G(z))) "
                       "for G with the tutorial's D loss; hinge; least-squares; wgan-gp", choices=LOSSES,
                       aliases=("--g-loss",))
    lr: float = option(2e-4, "Adam learning rate of G (and of D unless --lr-d)")
    lr_d: float | None = option(None, "D's own learning rate (two time-scale update rule, TTUR)")
    beta1: float = option(0.5, "Adam beta1 of G and D")
    beta2: float = option(0.999, "Adam beta2 of G and D")
    lr_half_life: int | None = option(None, "steps over which G's and D's learning rates halve (a smooth "
                                      "exponential decay: late steps refine instead of jumping; none: constant)")
    d_steps: int = option(1, "D updates per G update (each with fresh noise, on the same real batch)")
    gp_weight: float = option(10.0, "weight of WGAN-GP's gradient penalty (with --loss wgan-gp)")
    r1: float = option(0.0, "weight gamma of the R1 penalty, gamma/2 E||grad D(x)||^2 on real images (Mescheder "
                       "et al. 2018): D may not grow steep around the training images (0: off)")
    r1_every: int = option(16, "apply R1 every N D updates, its weight times N (lazy regularisation, StyleGAN2)")
    ema: float | None = option(None, "decay of an exponential moving average of G used for sampling (e.g. 0.999)")
    ema_warmup: bool = option(False, "start the average's decay low, min(ema, (1 + t) / (10 + t)) at step t, so "
                              "that the first, random weights fade fast (short runs: 3,000 steps at 0.999 "
                              "still keep 5 % of the initial G)")
    spectral_norm: bool = option(False, "spectral normalisation of D's layers")
    augment: str = option("", "DiffAugment policy for D's inputs: translation,cutout,color (small datasets)")
    conditional: bool = option(False, "class-conditional: G and D are told the label")
    conditioning: str = option("projection", "how D is told the label", choices=("projection", "concat"))
    class_norm: bool = option(False, "conditional BatchNorm in G: each class its own gain and bias after every "
                              "normalisation, beside the label at G's input (dcgan, --conditional)")
    width: int = option(32, "channels of DCGAN's first layer (dcgan only)")
    g_width: int | None = option(None, "G's own width when it should differ from D's (dcgan only; none: --width)")
    lecam: float = option(0.0, "weight of the LeCam regulariser (Tseng et al. 2021): D's scores on real images are "
                          "held near the moving average of its scores on fakes and vice versa, so on few images D "
                          "cannot drift to extreme scores (0: off)")
    mode_seeking: float = option(0.0, "weight of MSGAN's mode-seeking term (Mao et al. 2019): G is pushed to make two "
                                 "noise vectors of one class give different images, against one look per class (0: off)")
    minibatch_std: bool = option(False, "give D the spread of features across groups of 4 images, so it can "
                                 "see a batch of look-alike fakes (dcgan only; against mode collapse)")

    def validate(self) -> None:
        if self.latent_dim <= 0:
            raise GenlabError(f"latent_dim must be positive, got {self.latent_dim}")
        for name in ("lr", "lr_d"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GenlabError(f"{name} must be positive, got {value}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise GenlabError(f"Adam betas must lie in [0, 1), got {self.beta1}, {self.beta2}")
        if self.lr_half_life is not None and self.lr_half_life <= 0:
            raise GenlabError(f"lr_half_life is a number of steps > 0, got {self.lr_half_life}")
        if self.d_steps <= 0:
            raise GenlabError(f"d_steps must be positive, got {self.d_steps}")
        if self.r1 < 0:
            raise GenlabError(f"r1 is a penalty weight >= 0 (0: off), got {self.r1}")
        if self.r1_every <= 0:
            raise GenlabError(f"r1_every is a number of D updates >= 1, got {self.r1_every}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise GenlabError(f"ema is a decay in (0, 1), e.g. 0.999; got {self.ema}")
        if self.ema_warmup and self.ema is None:
            raise GenlabError("--ema-warmup warms up a moving average; give its decay too, e.g. --ema 0.999")
        for name in ("width", "g_width"):
            value = getattr(self, name)
            if value is not None and (value < 4 or value % 2):
                raise GenlabError(f"{name} must be an even number of channels >= 4, got {value}")
        if self.class_norm and not (self.conditional and self.name == "dcgan"):
            raise GenlabError("--class-norm is an option of a conditional dcgan generator; add --model dcgan "
                              "--conditional or leave it out")
        if self.g_width is not None and self.name != "dcgan":
            raise GenlabError("--g-width is an option of the dcgan generator; use --model dcgan or leave it out")
        if self.lecam < 0:
            raise GenlabError(f"lecam is a penalty weight >= 0 (0: off), got {self.lecam}")
        if self.mode_seeking < 0:
            raise GenlabError(f"mode_seeking is a weight >= 0 (0: off), got {self.mode_seeking}")
        parse_policy(self.augment)
        if self.minibatch_std and self.name != "dcgan":
            raise GenlabError("--minibatch-std is an option of the dcgan discriminator; use --model dcgan or leave it out")


@dataclass
class DcganConfig(GanMlpConfig):
    """DCGAN's recipe (Radford et al. 2015): the same options, convolutional nets."""

    name: str = option("dcgan", "model family (listed at the end of --help)", flag="--model")


def d_loss(d_real: torch.Tensor, d_fake: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """D's loss from raw scores. Minimax and non-saturating share the tutorial's
    L_D = -mean(log D(x) + log(1 - D(G(z)))) with D = sigmoid(score)."""
    if kind in ("non-saturating", "minimax"):
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if kind == "hinge":  # Lim & Ye 2017, arXiv:1705.02894
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if kind == "least-squares":  # Mao et al. 2017, arXiv:1611.04076
        return 0.5 * (d_real - 1).square().mean() + 0.5 * d_fake.square().mean()
    return d_fake.mean() - d_real.mean()  # wgan-gp: Gulrajani et al. 2017, arXiv:1704.00028


def g_loss(d_fake: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """G's loss: non-saturating -mean(log D(G(z))); minimax mean(log(1 - D(G(z)))); and the others'."""
    if kind == "non-saturating":
        return F.softplus(-d_fake).mean()
    if kind == "minimax":
        return -F.softplus(d_fake).mean()
    if kind == "least-squares":
        return 0.5 * (d_fake - 1).square().mean()
    return -d_fake.mean()  # hinge and wgan-gp


def gradient_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels,
                     rt: Runtime | None = None) -> torch.Tensor:
    """E[(||grad D(x_hat)|| - 1)^2] on x_hat = eps x + (1 - eps) G(z), with ONE eps per sample
    (broadcast over its pixels; one per pixel is a known bug of popular code)."""
    eps = (rt or Runtime(real.device)).rand(real.shape[0], 1, 1, 1)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(D(x_hat, labels).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def r1_penalty(d_real: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E||grad_x D(x)||^2 over real images x (which must require grad), summed over pixels: the
    gradient of D's score on the data, which R1 keeps small (Mescheder et al. 2018, arXiv:1801.04406)."""
    grad, = torch.autograd.grad(d_real.sum(), x, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


def mode_seeking_penalty(fake: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """MSGAN's term (Mao et al. 2019, arXiv:1903.05628): 1 / (d(G(z1), G(z2)) / d(z1, z2) + 1e-5), mean
    absolute distances, over pairs of one batch that share a label (each image with the next one of its
    class in the batch; any next image when unconditional). Small when G's images spread as z does."""
    order = torch.argsort(labels, stable=True) if labels is not None else torch.arange(len(z), device=z.device)
    a, b = order[:-1], order[1:]
    if labels is not None:
        same = labels[a] == labels[b]
        a, b = a[same], b[same]
    if len(a) == 0:
        return fake.sum() * 0
    ratio = (fake[a] - fake[b]).abs().flatten(1).mean(1) / (z[a] - z[b]).abs().mean(1)
    return (1 / (ratio + 1e-5)).mean()


def d_accuracy(d_real: torch.Tensor, d_fake: torch.Tensor, kind: str) -> torch.Tensor:
    """How often D tells real from fake (threshold 0 on logits, 0.5 for least squares, the midpoint
    of the two means for WGAN's unbounded critic): near 1 means D is winning outright."""
    if kind == "least-squares":
        t = 0.5
    elif kind == "wgan-gp":
        t = (d_real.mean() + d_fake.mean()).detach() / 2
    else:
        t = 0.0
    return ((d_real > t).float().mean() + (d_fake <= t).float().mean()) / 2


@dataclass
class GanSampling:
    """z ~ N(0, I): nothing to choose."""


class Gan:
    """A GAN as a genlab family: owns G, D, their Adam optimisers and G's moving average."""

    SamplingOptions = GanSampling

    def __init__(self, config: GanMlpConfig, image_shape, num_classes: int, runtime: Runtime | None = None):
        self.config = config
        self.rt = runtime or Runtime()
        self.device = self.rt.device
        self.image_shape = tuple(image_shape)
        self.conditional_classes = common.conditional_classes(config.conditional, num_classes)
        k, sn = self.conditional_classes, config.spectral_norm
        if config.name == "dcgan":
            common.check_image_size(self.image_shape, "dcgan")
            self.G = nets.DCGenerator(config.latent_dim, self.image_shape, config.g_width or config.width, k,
                                      config.class_norm)
            self.D = nets.DCDiscriminator(self.image_shape, config.width, k, config.conditioning, sn,
                                            config.minibatch_std)
        else:
            self.G = nets.MLPGenerator(config.latent_dim, self.image_shape, k)
            self.D = nets.MLPDiscriminator(self.image_shape, k, config.conditioning, sn)
        self.G, self.D = self.G.to(self.device), self.D.to(self.device)
        if config.name == "dcgan":  # oneDNN's convolutions run ~12 % faster on NHWC (measured on 2 CPU cores)
            self.G, self.D = (net.to(memory_format=torch.channels_last) for net in (self.G, self.D))
        betas = (config.beta1, config.beta2)
        self.opt_G = LazyOptimizer(torch.optim.Adam, self.G.parameters(), lr=config.lr, betas=betas)
        self.opt_D = LazyOptimizer(torch.optim.Adam, self.D.parameters(), lr=config.lr_d or config.lr, betas=betas)
        self.ema = EMA(self.G, config.ema, warmup=config.ema_warmup) if config.ema else None
        self.G_ema = self.ema.net if self.ema else None
        self.ema_statistics_fresh = False
        self.policy = parse_policy(config.augment)
        self.steps = 0  # G updates so far (the learning-rate decay counts them)
        self.lecam_anchors = torch.zeros(2, device=self.device)  # LeCam: D's mean real and fake scores, averaged

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def d_outputs_probabilities(self) -> bool:
        """Whether sigmoid(D's score) is a probability (the BCE games) rather than a raw score."""
        return self.config.loss in ("non-saturating", "minimax")

    def nets(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, **({"G_ema": self.G_ema} if self.G_ema is not None else {})}

    # ---------------------------------------------------------------- training

    def _generate(self, batch: int, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(z), z) for a batch."""
        z = self.rt.randn(batch, self.config.latent_dim)
        with self.rt.autocast():
            return self.G(z, labels), z

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return augment(x, self.policy, self.rt) if self.policy else x

    def _update_d(self, x, fake, labels, index: int = 0) -> dict[str, float]:
        """D's update number `index` of this step's d_steps; lazy R1 counts D's updates from
        steps x d_steps, so nothing beyond the step count is saved for it."""
        rt, kind, cfg = self.rt, self.config.loss, self.config
        r1 = cfg.r1 > 0 and (self.steps * cfg.d_steps + index) % cfg.r1_every == 0
        with rt.autocast():
            x_in, fake_in = self._aug(x), self._aug(fake)
            if r1:
                x_in = x_in.detach().requires_grad_(True)
            d_real, d_fake = self.D(x_in, labels).float(), self.D(fake_in, labels).float()
            loss = d_loss(d_real, d_fake, kind)
            if cfg.lecam > 0:
                loss = loss + cfg.lecam * self._lecam(d_real, d_fake, index)
            if kind == "wgan-gp":
                loss = loss + cfg.gp_weight * gradient_penalty(self.D, x_in, fake_in, labels, self.rt)
            if r1:
                loss = loss + cfg.r1 / 2 * cfg.r1_every * r1_penalty(d_real, x_in)
        self.opt_D.zero_grad(set_to_none=True)
        rt.backward(loss)
        grad = rt.finish_grads("D", self.D, self.opt_D, loss)
        rt.step(self.opt_D)
        probabilities = kind in ("non-saturating", "minimax")
        show = torch.sigmoid if probabilities else (lambda t: t)
        with torch.no_grad():  # D(x), D(G(z)) before D's update, and how often D is right: one conversion
            loss_d, d_x, d_gz, acc = torch.stack([loss.detach(), show(d_real).mean(), show(d_fake).mean(),
                                                  d_accuracy(d_real, d_fake, kind)]).tolist()
        return {"loss_d": loss_d, "d_real": d_x, "d_fake": d_gz, "d_acc": acc, "grad_norm_d": grad}

    def _lecam(self, d_real: torch.Tensor, d_fake: torch.Tensor, index: int = 0) -> torch.Tensor:
        """LeCam's regulariser (Tseng et al. 2021, arXiv:2104.03310): real scores above the fakes'
        moving average and fake scores below the reals' are penalised quadratically. The averages
        (decay 0.99) are debiased as Adam's moments are, by 1 - 0.99^n after n D updates, counted
        from steps x d_steps as lazy R1 counts them; they stay on D's device (no sync per step)
        and are part of the state, so resuming is exact."""
        n = self.steps * self.config.d_steps + index + 1
        batch = torch.stack([d_real.detach().mean(), d_fake.detach().mean()])
        self.lecam_anchors = LECAM_DECAY * self.lecam_anchors + (1 - LECAM_DECAY) * batch
        real_anchor, fake_anchor = self.lecam_anchors / (1 - LECAM_DECAY ** n)
        return F.relu(d_real - fake_anchor).square().mean() + F.relu(real_anchor - d_fake).square().mean()

    def _update_g(self, fake, labels, z) -> dict[str, float]:
        rt = self.rt
        self.D.requires_grad_(False)  # G's update needs gradients through D, not of D's weights
        try:
            with rt.autocast():
                loss = g_loss(self.D(self._aug(fake), labels).float(), self.config.loss)
                if self.config.mode_seeking > 0:
                    loss = loss + self.config.mode_seeking * mode_seeking_penalty(fake.float(), z, labels)
            self.opt_G.zero_grad(set_to_none=True)
            rt.backward(loss)
        finally:
            self.D.requires_grad_(True)
        grad = rt.finish_grads("G", self.G, self.opt_G, loss)
        rt.step(self.opt_G)
        if self.G_ema is not None:
            self._update_ema()
        return {"loss_g": loss.item(), "grad_norm_g": grad}

    def _update_ema(self) -> None:
        self.ema.update(self.G, self.steps)  # BatchNorm statistics follow G's until refreshed (before sampling)
        self.ema_statistics_fresh = False

    @torch.no_grad()
    def refresh_ema_statistics(self) -> None:
        """BatchNorm statistics measured on the averaged weights' own activations.

        G's running statistics belong to G's weights; the average of those weights has activations
        with other means and variances, and normalising them with G's statistics shifted every
        sample (FID 41.5 -> 37.3 on Fashion-MNIST for the same weights). 8 batches of 256 from a fixed
        generator: deterministic, and the global random stream that training draws from is untouched."""
        self.ema_statistics_fresh = True
        norms = [m for m in self.G_ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        gen = torch.Generator().manual_seed(EMA_STATISTICS_SEED)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        self.G_ema.train()
        for _ in range(EMA_STATISTICS_BATCHES):
            z = torch.randn(EMA_STATISTICS_BATCH, self.config.latent_dim, generator=gen).to(self.device)
            labels = None
            if self.conditional_classes:
                labels = torch.randint(self.conditional_classes, (EMA_STATISTICS_BATCH,), generator=gen).to(self.device)
            with self.rt.autocast():
                self.G_ema(z, labels)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """D's update(s), then G's. With one D step the same fakes serve both, as in the tutorial.

        A NaN or inf in D's loss or gradients (bad data, a diverged G) is refused before either
        update; one in G's loss or gradients is refused before G's update, after D's."""
        self._set_learning_rates()
        x = to_unit(images.to(self.device))
        y = labels.to(self.device) if self.conditional_classes else None
        if self.config.d_steps == 1:
            fake, z = self._generate(len(x), y)
            logs = self._update_d(x, fake.detach(), y)
        else:
            for i in range(self.config.d_steps):
                with torch.no_grad():
                    fake_d, _ = self._generate(len(x), y)
                logs = self._update_d(x, fake_d, y, i)
            fake, z = self._generate(len(x), y)
        logs = {**logs, **self._update_g(fake, y, z)}
        self.steps += 1
        return logs

    def _set_learning_rates(self) -> None:
        if self.config.lr_half_life is None:
            return
        scale = 0.5 ** (self.steps / self.config.lr_half_life)
        for opt, lr in ((self.opt_G, self.config.lr), (self.opt_D, self.config.lr_d or self.config.lr)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    # ---------------------------------------------------------------- sampling

    def _sampler(self, averaged: bool = True) -> nn.Module:
        if self.G_ema is None or not averaged:
            return self.G
        if not self.ema_statistics_fresh:
            self.refresh_ema_statistics()
        return self.G_ema

    def sampling_defaults(self) -> GanSampling:
        return GanSampling()

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels=None, averaged: bool = True) -> torch.Tensor:
        """Images as floats in [-1, 1] [n, C, H, W] from latents z [n, latent_dim], unquantised (for
        perceptual path length, whose 1e-4 steps would vanish in uint8). `averaged=False` decodes
        with the G being trained rather than its moving average."""
        G = self._sampler(averaged)
        was_training = G.training
        G.eval()
        x = G(z.to(self.device), common.check_labels(labels, len(z), self.conditional_classes, self.device)).float()
        G.train(was_training)
        return x.cpu()

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None, averaged: bool = True,
               **options) -> torch.Tensor:
        """n images, uint8 [n, C, H, W] on the CPU; z is drawn on the CPU so a seed means the same
        images on any device. A conditional model without `labels` draws balanced classes.
        `averaged=False`: from the G being trained (what D plays against; the diagnostics probe it)."""
        common.sampling_options(self.sampling_defaults(), options)  # refuses any: a GAN has none
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        return to_uint8(self.decode(z, labels, averaged))

    @torch.no_grad()
    def discriminate(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's raw score of uint8 images [n] (diagnostics compare training and held-out images)."""
        y = labels.to(self.device) if self.conditional_classes else None
        return self.D(to_unit(images.to(self.device)), y).float().cpu()

    def watches(self, train, heldout, seed: int) -> list:
        """The GAN's own failures (genlab.models.gan_diagnostics), for the Trainer's diagnostics."""
        return [GanWatch(self, train, heldout, seed)]

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict:
        if self.G_ema is not None and not self.ema_statistics_fresh:
            self.refresh_ema_statistics()  # saved weights sample as the live model does
        state = {"G": self.G.state_dict(), "D": self.D.state_dict(),
                 "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "steps": torch.tensor(self.steps)}
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        if self.config.lecam > 0:
            state["lecam_anchors"] = self.lecam_anchors.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.steps = int(state.get("steps", 0))  # runs saved before the decay existed have none
        if self.config.lecam > 0:
            self.lecam_anchors = state["lecam_anchors"].to(self.device, torch.float32, copy=True)
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"])
            self.ema_statistics_fresh = True  # state_dict() refreshed them before saving


GanMlp = Gan  # the tutorial's name for the family
