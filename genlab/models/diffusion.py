"""Denoising diffusion (Ho et al. 2020, https://arxiv.org/abs/2006.11239) with DDIM sampling (Song
et al. 2020, https://arxiv.org/abs/2010.02502) and classifier-free guidance (Ho & Salimans 2022,
https://arxiv.org/abs/2207.12598).

The forward process adds Gaussian noise in T steps, q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I);
a U-Net learns to predict the noise eps (or v = sqrt(abar) eps - sqrt(1 - abar) x_0, Salimans & Ho
2022) from x_t and t; sampling runs the chain backwards. Pieces, as in diffusers: `Schedule` (the
noise schedule, `q_sample`, the DDPM and DDIM steps), `UNet` (the network), `Diffusion` (the family:
training, EMA, guidance, samplers).
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
from genlab.models import common, solvers
from genlab.models.common import EMA, to_uint8, to_unit
from genlab.models.text import START, CrossAttention, TextCondition, TextEncoder, check_negative, check_tokens

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm", "dpm++2m", "unipc")
SPACINGS = ("uniform", "karras")
SAMPLER_HELP = ("sampler: ddim (few steps), ddpm (ancestral, all T steps), dpm++2m (DPM-Solver++(2M); with eta > 0 "
                "its SDE variant) or unipc (UniPC-2): the last two reach DDIM-50's quality in 10-20 steps")
SPACING_HELP = "where dpm++2m and unipc put their steps: uniform in t, or karras (Karras et al. 2022: denser at low noise)"


# Guidance in a limited interval of noise levels (Kynkäänniemi et al. 2024, https://arxiv.org/abs/2404.07724):
# at the noisiest steps guidance pulls every chain toward the few most typical images of its class and
# costs diversity (the paper also leaves out the least noisy steps; genlab's 5-minute latent recipes
# measured better with them guided: benchmarks/results/latent_budget.md). Outside the interval the
# conditional model alone (scale 1) runs: one network pass per step instead of two, so sampling is cheaper.
GUIDANCE_LOW = "classifier-free guidance only at noise levels t/T >= this (0: down to the last step)"
GUIDANCE_HIGH = "classifier-free guidance only at noise levels t/T <= this (1: from the first step); elsewhere scale 1"


@dataclass
class DiffusionConfig:
    """A diffusion model's recipe."""

    name: str = option("diffusion", "model family (listed at the end of --help)", flag="--model")
    width: int = option(32, "channels of the U-Net's first level (x2 at each lower level)")
    timesteps: int = option(1000, "diffusion steps T")
    schedule: str = option("linear", "noise schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)",
                           choices=SCHEDULES)
    prediction: str = option("eps", "what the U-Net predicts: the noise eps or v", choices=("eps", "v"))
    min_snr: float = option(0.0, "Min-SNR-gamma loss weights (Hang et al. 2023): the low-noise steps' loss "
                                 "capped at signal-to-noise ratio gamma, e.g. 5; 0: every step weighs the same")
    lr: float = option(5e-4, "Adam learning rate")
    ema: float = option(0.999, "decay of the weights' moving average used for sampling (warmed up)")
    dropout: float = option(0.0, "dropout in the residual blocks")
    conditional: bool = option(False, "class-conditional, with label dropout for classifier-free guidance")
    label_dropout: float = option(0.1, "share of training labels (or prompts, --text) replaced by 'no label' "
                                        "(the empty prompt)")
    text: bool = option(False, "condition on the data's captions (text-to-image): a text encoder of its own, "
                               "cross-attention from the U-Net; prompt dropout is --label-dropout")
    guidance: float = option(1.0, "classifier-free guidance scale s: eps_u + s (eps_c - eps_u); 0 = unconditional",
                             resumable=True)
    guidance_low: float = option(0.0, GUIDANCE_LOW, resumable=True)
    guidance_high: float = option(1.0, GUIDANCE_HIGH, resumable=True)
    sampler: str = option("ddim", SAMPLER_HELP, choices=SAMPLERS, resumable=True)
    sample_steps: int = option(50, "sampler steps (network evaluations) when sampling; ddpm takes all T",
                               resumable=True)
    eta: float = option(0.0, "DDIM / DPM-Solver++ noise: 0 deterministic, 1 matches DDPM's step variance (the SDE)",
                        resumable=True)
    spacing: str = option("uniform", SPACING_HELP, choices=SPACINGS, resumable=True)

    def validate(self) -> None:
        if self.width < 8 or self.width % 8:
            raise GenlabError(f"width must be a multiple of 8 (GroupNorm groups), got {self.width}")
        if self.timesteps < 2:
            raise GenlabError(f"timesteps must be at least 2, got {self.timesteps}")
        if self.schedule == "linear" and self.timesteps < 20:  # its betas reach 0.02 x 1000 / T: above 1 below 20
            raise GenlabError(f"the linear schedule needs at least 20 timesteps (got {self.timesteps}); "
                              "pass more, or --schedule cosine")
        if self.lr <= 0:
            raise GenlabError(f"lr must be positive, got {self.lr}")
        if not 0 < self.ema < 1:
            raise GenlabError(f"ema is a decay in (0, 1), e.g. 0.999; got {self.ema}")
        if not 0 <= self.label_dropout < 1:
            raise GenlabError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.text and self.conditional:
            raise GenlabError("--text and --conditional both condition the model: choose one (captions name the "
                              "class where a dataset has no captions of its own)")
        if self.min_snr < 0:
            raise GenlabError(f"min_snr is a signal-to-noise ratio gamma, e.g. 5 (0: off); got {self.min_snr}")
        check_sampling(self.sample_steps, self.eta, self.guidance, self.timesteps, self.guidance_low,
                       self.guidance_high, self.sampler)


def check_sampling(steps: int, eta: float, guidance: float, timesteps: int, low: float = 0.0,
                   high: float = 1.0, sampler: str = "ddim") -> None:
    if sampler not in SAMPLERS:
        raise GenlabError(f"unknown sampler {sampler!r} for a diffusion model; its samplers: {', '.join(SAMPLERS)}")
    least = solvers.MIN_STEPS[sampler]
    if not least <= steps <= timesteps:
        why = f" ({sampler} is a second-order multistep solver: it needs an earlier step)" if least > 1 else ""
        raise GenlabError(f"sampling steps must lie in {least}..{timesteps} (the model's T) for {sampler}{why}, "
                          f"got {steps}")
    if eta < 0:
        raise GenlabError(f"eta must be 0 or more, got {eta}")
    if guidance < 0:
        raise GenlabError(f"guidance scale must be 0 or more, got {guidance}")
    if not 0 <= low <= high <= 1:
        raise GenlabError(f"the guidance interval is noise levels t/T with 0 <= guidance_low <= guidance_high <= 1, "
                          f"got {low} and {high}")


# ---------------------------------------------------------------- the noise schedule

class Schedule:
    """betas, abar_t = prod_s (1 - beta_s), and the steps that use them (float64 tables)."""

    def __init__(self, kind: str, T: int):
        if kind == "linear":  # Ho et al. 2020: 1e-4 ... 0.02 over 1000 steps, rescaled for other T
            scale = 1000 / T
            betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
        else:  # Nichol & Dhariwal 2021, arXiv:2102.09672
            s = 0.008
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        self.T = T
        self.betas = betas
        self.abar = torch.cumprod(1 - betas, 0)
        self.abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.abar[:-1]])

    def _at(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return table[t.cpu()].to(like.device, like.dtype).view(-1, *[1] * (like.dim() - 1))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        ab = self._at(self.abar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def loss_weights(self, t: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
        """Min-SNR-gamma weights [B] (Hang et al. 2023, arXiv:2303.09556): the loss of step t weighs
        min(SNR_t, gamma) / SNR_t for eps (min(SNR_t, gamma) / (SNR_t + 1) for v), SNR_t = abar / (1 - abar):
        the nearly clean steps, easy and many, no longer pull the shared weights away from the noisy ones."""
        ab = self.abar[t.cpu()]
        snr = ab / (1 - ab)
        weight = snr.clamp(max=gamma) / (snr if prediction == "eps" else snr + 1)
        return weight.float().to(t.device)

    def v_target(self, x0, t, noise):
        ab = self._at(self.abar, t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def x0_and_eps(self, x_t, t, out, prediction: str, clip: float | None = 1.0):
        """(x_0, eps) from the network's output; x_0 clipped to the data range [-clip, clip] (pixels:
        [-1, 1]; latents have none) and eps recomputed from it, so that every sampler steps from
        the same consistent pair."""
        ab = self._at(self.abar, t, x_t)
        if clip is None:  # unclipped latents must not divide by 0 where abar is 0 (a 20-step linear schedule's end)
            ab = ab.clamp(min=1e-8)
        if prediction == "v":
            x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * out
        else:
            x0 = (x_t - (1 - ab).sqrt() * out) / ab.sqrt()
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps

    def ddpm_step(self, x_t, t, x0):
        """Mean and standard deviation of q(x_{t-1} | x_t, x_0), the posterior DDPM samples from."""
        b, ab, ab_prev = (self._at(tab, t, x_t) for tab in (self.betas, self.abar, self.abar_prev))
        mean = (ab_prev.sqrt() * b / (1 - ab)) * x0 + ((1 - b).sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
        var = b * (1 - ab_prev) / (1 - ab)
        return mean, var.sqrt()

    def ddim_step(self, x_t, t, t_prev, x0, eps, eta: float):
        """Mean and standard deviation of DDIM's step from t to t_prev (t_prev = -1: to x_0)."""
        ab = self._at(self.abar, t, x_t)
        ab_prev = self._at(self.abar, t_prev.clamp(min=0), x_t)
        ab_prev = torch.where(t_prev.view_as(ab_prev) < 0, torch.ones_like(ab_prev), ab_prev)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
        mean = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        return mean, sigma


# ---------------------------------------------------------------- the U-Net

def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps [B] -> [B, dim]."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freq[None]
    return torch.cat([args.sin(), args.cos()], 1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time (and class) embedding added in between; 1x1 skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.block1 = nn.Sequential(nn.GroupNorm(8, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.block2 = nn.Sequential(nn.GroupNorm(8, c_out), nn.SiLU(), nn.Dropout(dropout),
                                    nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.block1(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.block2(h)


class Attention(nn.Module):
    """Self-attention over the positions of a feature map (the U-Net's lowest level)."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(8, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        y = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(y.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """(x_t [B, C, H, W], t [B], labels [B] or None) -> prediction [B, C, H, W].

    Levels at H, H/2, H/4 with w, 2w, 2w channels, one residual block each way per level,
    attention at H/4 and in the middle; skips concatenated on the way up. Above 32 px one level
    more at the top (64 -> 32 -> 16 -> 8), so that attention still runs on an 8x8 map."""

    def __init__(self, channels: int, width: int, num_classes: int | None, dropout: float, side: int = 32,
                 text: bool = False):
        super().__init__()
        emb_dim = 4 * width
        self.width = width
        self.time = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.null_class = num_classes  # the extra "no label" index of the class embedding
        self.classes = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        w = width
        self.stem = nn.Conv2d(channels, w, 3, padding=1)
        self.down1, self.pool1 = ResBlock(w, w, emb_dim, dropout), nn.Conv2d(w, w, 3, 2, 1)
        self.down2, self.pool2 = ResBlock(w, 2 * w, emb_dim, dropout), nn.Conv2d(2 * w, 2 * w, 3, 2, 1)
        self.down3, self.attn3 = ResBlock(2 * w, 2 * w, emb_dim, dropout), Attention(2 * w)
        self.mid1, self.mid_attn, self.mid2 = (ResBlock(2 * w, 2 * w, emb_dim, dropout), Attention(2 * w),
                                               ResBlock(2 * w, 2 * w, emb_dim, dropout))
        self.up3, self.up_attn3 = ResBlock(4 * w, 2 * w, emb_dim, dropout), Attention(2 * w)
        self.up2 = ResBlock(4 * w, w, emb_dim, dropout)
        self.up1 = ResBlock(2 * w, w, emb_dim, dropout)
        self.out = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))
        self.top = side > 32  # made last, so that the nets of 28 and 32 px are built as they always were
        if self.top:
            self.down0, self.pool0 = ResBlock(w, w, emb_dim, dropout), nn.Conv2d(w, w, 3, 2, 1)
            self.up0 = ResBlock(2 * w, w, emb_dim, dropout)
        self.text = None
        if text:  # prompts: a text encoder of its own, its pooled state added to the time embedding and
            # cross-attention at H/4 and in the middle (made after the rest: the other nets are unchanged)
            self.text = TextEncoder(emb_dim // 2)
            self.text_pool = nn.Linear(emb_dim // 2, emb_dim)
            self.cross3, self.mid_cross, self.up_cross3 = (CrossAttention(2 * w, emb_dim // 2) for _ in range(3))
            self._memo = None  # the latest prompts' encoding while sampling (the same at every step)

    def encode(self, ids: torch.Tensor):
        """The text encoder's (states, padding, pooled) of token ids; while sampling (eval mode) the
        last prompts' encoding is reused, as every step of a chain asks for the same prompts."""
        if self.training:
            return self.text(ids)
        memo = self._memo
        if memo is None or memo[0].shape != ids.shape or memo[0].device != ids.device or not torch.equal(memo[0], ids):
            self._memo = memo = (ids.clone(), self.text(ids))
        return memo[1]

    def forward(self, x, t, labels=None):
        # oneDNN's convolutions run faster on channels-last maps (on 2 AVX2 cores: latent DDIM sampling
        # 1.32x, its training 1.1x); the weights keep their layout, so checkpoints are unchanged
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        emb = self.time(timestep_embedding(t, self.width))
        if self.classes is not None:
            emb = emb + self.classes(labels if labels is not None else torch.full_like(t, self.null_class))
        text = None
        if self.text is not None:
            if labels is None:
                labels = torch.full((len(x), 1), START, dtype=torch.int64, device=x.device)  # the empty prompt
            states, pad, pooled = self.encode(labels)
            emb = emb + self.text_pool(pooled)
            text = (states, pad)

        h = self.stem(x)
        if self.top:
            h0 = self.down0(h, emb)                              # (w, H), H > 32
            h = self.pool0(h0)
        h1 = self.down1(h, emb)                                  # (w, H)
        h2 = self.down2(self.pool1(h1), emb)                     # (2w, H/2)
        h3 = self.attn3(self.down3(self.pool2(h2), emb))         # (2w, H/4)
        if text is not None:
            h3 = self.cross3(h3, *text)
        m = self.mid_attn(self.mid1(h3, emb))
        if text is not None:
            m = self.mid_cross(m, *text)
        m = self.mid2(m, emb)
        u3 = self.up_attn3(self.up3(torch.cat([m, h3], 1), emb))
        if text is not None:
            u3 = self.up_cross3(u3, *text)
        u2 = self.up2(torch.cat([F.interpolate(u3, size=h2.shape[-2:]), h2], 1), emb)
        u1 = self.up1(torch.cat([F.interpolate(u2, size=h1.shape[-2:]), h1], 1), emb)
        if self.top:
            u1 = self.up0(torch.cat([F.interpolate(u1, size=h0.shape[-2:]), h0], 1), emb)
        return self.out(u1)


# ---------------------------------------------------------------- the family

@dataclass
class DiffusionSampling:
    sampler: str = option("ddim", "ddim, ddpm, dpm++2m or unipc", choices=SAMPLERS)
    steps: int = option(50, "sampler steps: network evaluations (DDPM takes all T)")
    eta: float = option(0.0, "DDIM / DPM-Solver++ noise, 0 deterministic ... 1 DDPM-like (SDE)")
    spacing: str = option("uniform", "dpm++2m / unipc steps: uniform or karras", choices=SPACINGS)
    guidance: float = option(1.0, "classifier-free guidance scale (conditional models; 0 = unconditional)")
    guidance_low: float = option(0.0, GUIDANCE_LOW)
    guidance_high: float = option(1.0, GUIDANCE_HIGH)
    negative_prompt: str = option("", "a model trained with --text: what guidance steers away from (the prompt of "
                                      "guidance's unconditional branch; empty: none)")


class UNetFamily(TextCondition):
    """What the diffusion and flow families share: a U-Net over the pixels (or, in their latent
    forms, a first stage's latents) conditioned on a class or a prompt, its EMA, one Adam optimiser,
    the count of steps, and their state."""

    kind = "diffusion"  # the --model an unsuitable image size is reported for

    def space(self, image_shape) -> tuple[int, int, int]:
        """The shape of what is modelled: the pixels themselves."""
        common.check_image_size(image_shape, self.kind)
        return tuple(image_shape)

    def to_space(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> what is modelled: pixels in [-1, 1]."""
        return to_unit(images.to(self.device))

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """What was modelled -> images in [-1, 1]."""
        return x.clamp(-1, 1)

    def __init__(self, config, image_shape, num_classes: int, runtime: Runtime | None = None):
        self.config = config
        self.rt = runtime or Runtime()
        self.device = self.rt.device
        self.image_shape = tuple(image_shape)
        self.space_shape = self.space(self.image_shape)
        c, h, _ = self.space_shape
        self.conditional_classes = common.conditional_classes(config.conditional, num_classes)
        self.takes_text = bool(config.text)
        self.unet = UNet(c, config.width, self.conditional_classes, config.dropout, h, self.takes_text).to(self.device)
        self.ema = EMA(self.unet, config.ema, warmup=True)  # early weights fade fast
        self.unet_ema = self.ema.net.eval()
        self.opt = LazyOptimizer(torch.optim.Adam, self.unet.parameters(), lr=config.lr)
        self.steps = 0
        self.last_nfe: int | None = None  # network evaluations of the latest sampling (guided: one)

    def nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "unet_ema": self.unet_ema}

    def dropped(self, labels) -> torch.Tensor | None:
        """A training batch's conditions with a share (--label-dropout) replaced by the unconditional
        one, the empty prompt or 'no label', so that one net also learns to draw without them."""
        rt, cfg = self.rt, self.config
        if self.takes_text:
            return self.drop_prompts(labels.to(self.device), rt.rand(len(labels)) < cfg.label_dropout)
        if not self.conditional_classes:
            return None
        y = labels.to(self.device).clone()
        y[rt.rand(len(y)) < cfg.label_dropout] = self.conditional_classes
        return y

    def optimise(self, loss: torch.Tensor) -> float:
        """One Adam step on `loss`, then the EMA; the gradient norm."""
        rt = self.rt
        self.opt.zero_grad(set_to_none=True)
        rt.backward(loss)
        grad = rt.finish_grads("U-Net", self.unet, self.opt, loss)
        rt.step(self.opt)
        self.ema.update(self.unet, self.steps)
        self.steps += 1
        return grad

    def condition(self, labels, n: int):
        """Checked conditions of n samples: prompts' tokens (--text), class numbers, or None."""
        if self.takes_text:
            return check_tokens(labels, n, self.device)
        return common.check_labels(labels, n, self.conditional_classes, self.device)

    def state_dict(self) -> dict:
        return {"unet": self.unet.state_dict(), "unet_ema": self.unet_ema.state_dict(),
                "opt": self.opt.state_dict(), "steps": torch.tensor(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.unet.load_state_dict(state["unet"])
        self.unet_ema.load_state_dict(state["unet_ema"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state["steps"])


class Diffusion(UNetFamily):
    """A diffusion model as a genlab family: U-Net, its EMA, one Adam optimiser, the schedule."""

    SamplingOptions = DiffusionSampling
    x0_clip: float | None = 1.0  # the data's range: pixels lie in [-1, 1]

    def __init__(self, config: DiffusionConfig, image_shape, num_classes: int, runtime: Runtime | None = None):
        super().__init__(config, image_shape, num_classes, runtime)
        self.schedule = Schedule(config.schedule, config.timesteps)

    # ---------------------------------------------------------------- training

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One Adam step on E_t,eps ||target - UNet(x_t, t)||^2 with t uniform and target eps or v."""
        rt, cfg = self.rt, self.config
        x0 = self.to_space(images)
        t = rt.randint(0, cfg.timesteps, len(x0))
        noise = rt.randn(*x0.shape)
        x_t = self.schedule.q_sample(x0, t, noise)
        y = self.dropped(labels)
        target = noise if cfg.prediction == "eps" else self.schedule.v_target(x0, t, noise)
        with rt.autocast():
            out = self.unet(x_t, t, y).float()
        if cfg.min_snr:
            per_step = (out - target).pow(2).flatten(1).mean(1)
            loss = (self.schedule.loss_weights(t, cfg.min_snr, cfg.prediction) * per_step).mean()
        else:
            loss = F.mse_loss(out, target)
        return {"loss": loss.item(), "grad_norm": self.optimise(loss)}

    # ---------------------------------------------------------------- sampling

    def null_like(self, y: torch.Tensor) -> torch.Tensor:
        """Guidance's unconditional condition: 'no label', or the empty (or negative) prompt."""
        return self.uncond_like(y) if self.takes_text else torch.full_like(y, self.conditional_classes)

    def predict(self, x_t, t, labels, guidance: float):
        """(x_0, eps) at step t with the EMA weights; classifier-free guidance for a conditional model:
        eps_u + s (eps_c - eps_u), so s = 0 is the unconditional model and s = 1 the conditional one."""
        net = self.unet_ema
        if labels is None:
            out = net(x_t, t)
        elif guidance == 1:
            out = net(x_t, t, labels)
        elif guidance == 0:
            out = net(x_t, t, self.null_like(labels))
        else:
            null = self.null_like(labels)
            both = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
            cond, uncond = both.chunk(2)
            out = uncond + guidance * (cond - uncond)
        return self.schedule.x0_and_eps(x_t, t, out.float(), self.config.prediction, self.x0_clip)

    def timesteps_for(self, sampler: str, steps: int, spacing: str = "uniform") -> list[int]:
        """The steps a sampler visits, from T-1 down: all of them for DDPM, `steps` evenly spaced for
        DDIM (the last at t = 0); for the multistep solvers `steps` points ending above t = 0 (the
        step after the last goes to the clean image): "trailing" as in diffusers (T-1, ..., T/steps - 1),
        or at Karras et al.'s noise levels, each rounded to the step of nearest log sigma."""
        T = self.config.timesteps
        if sampler == "ddpm":
            return list(range(T - 1, -1, -1))
        if sampler == "ddim":
            return sorted({round(x) for x in torch.linspace(0, T - 1, steps).tolist()}, reverse=True)
        if spacing == "karras":
            log_sigma = (0.5 * ((1 - self.schedule.abar) / self.schedule.abar).log())
            wanted = solvers.karras_sigmas(steps, float(log_sigma[0].exp()), float(log_sigma[-1].exp())).log()
            ts = (log_sigma[None, :] - wanted[:, None]).abs().argmin(1).tolist()
            return sorted(set(ts), reverse=True)
        return sorted({round(T - 1 - i * T / steps) for i in range(steps)}, reverse=True)

    @torch.no_grad()
    def chain(self, n: int, labels=None, generator=None, sampler=None, steps=None, eta=None, guidance=None,
              keep: int = 0, interval: tuple[float, float] | None = None, spacing: str | None = None,
              negative_prompt: str = ""):
        """Run a sampler from x_T ~ N(0, I); returns x_0 in [-1, 1] and, with `keep`, `keep` snapshots
        of x_t along the way. All noise is drawn on the CPU from `generator`. Guidance applies at the
        steps whose noise level t / T lies in `interval` (low, high); elsewhere the scale is 1."""
        cfg = self.config
        sampler = cfg.sampler if sampler is None else sampler
        steps = cfg.sample_steps if steps is None else steps
        eta = cfg.eta if eta is None else eta
        guidance = cfg.guidance if guidance is None else guidance
        spacing = cfg.spacing if spacing is None else spacing
        low, high = (cfg.guidance_low, cfg.guidance_high) if interval is None else interval
        check_sampling(steps, eta, guidance, cfg.timesteps, low, high, sampler)
        if spacing not in SPACINGS:
            raise GenlabError(f"unknown spacing {spacing!r}; known: {', '.join(SPACINGS)}")
        y = self.condition(labels, n)
        check_negative(self, negative_prompt)
        x = torch.randn(n, *self.space_shape, generator=generator).to(self.device)
        ts = self.timesteps_for(sampler, steps, spacing)
        self.last_nfe = len(ts)
        snaps, every = [], max(1, len(ts) // keep) if keep else 0

        def snapshot(i: int, x: torch.Tensor) -> None:
            if keep and (i % every == 0) and len(snaps) < keep - 1:
                snaps.append(self.to_images(x).cpu())

        def scale(t_now: int) -> float:
            return guidance if low <= t_now / cfg.timesteps <= high else 1.0

        if sampler in ("dpm++2m", "unipc"):
            x = self._solve(x, y, ts, sampler, eta, scale, generator, snapshot)
        else:
            for i, t_now in enumerate(ts):
                t = torch.full((n,), t_now, device=self.device, dtype=torch.int64)
                x0, eps = self.predict(x, t, y, scale(t_now))
                if sampler == "ddpm":
                    mean, std = self.schedule.ddpm_step(x, t, x0)
                else:
                    t_prev = torch.full_like(t, ts[i + 1] if i + 1 < len(ts) else -1)
                    mean, std = self.schedule.ddim_step(x, t, t_prev, x0, eps, eta)
                last = i + 1 == len(ts)
                x = mean if last else mean + std * torch.randn(x.shape, generator=generator).to(self.device)
                snapshot(i, x)
        return (self.to_images(x), snaps + [self.to_images(x).cpu()]) if keep else self.to_images(x)

    def _solve(self, x, y, ts: list[int], sampler: str, eta: float, scale, generator, on_step):
        """A multistep solver (genlab.models.solvers) over the steps `ts`, then into the clean image."""
        # abar may be 0 at t = T-1 (a short linear schedule): lambda = -inf there; 1e-8 as x0_and_eps does
        abar = self.schedule.abar[torch.tensor(ts)].clamp(min=1e-8)
        alphas = torch.cat([abar.sqrt(), torch.ones(1, dtype=torch.float64)])
        sigmas = torch.cat([(1 - abar).sqrt(), torch.zeros(1, dtype=torch.float64)])

        def denoise(x_i: torch.Tensor, i: int) -> torch.Tensor:
            t = torch.full((len(x_i),), ts[i], device=self.device, dtype=torch.int64)
            return self.predict(x_i, t, y, scale(ts[i]))[0]

        if sampler == "unipc":
            return solvers.unipc(denoise, x, alphas, sigmas, on_step)
        return solvers.dpmpp_2m(denoise, x, alphas, sigmas, eta,
                                lambda: torch.randn(x.shape, generator=generator).to(self.device), on_step)

    def sampling_defaults(self) -> DiffusionSampling:
        cfg = self.config
        return DiffusionSampling(sampler=cfg.sampler, steps=cfg.sample_steps, eta=cfg.eta, spacing=cfg.spacing,
                                 guidance=cfg.guidance, guidance_low=cfg.guidance_low, guidance_high=cfg.guidance_high)

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """n images uint8 [n, C, H, W] on the CPU (config's sampler, DDIM with 50 steps by default)."""
        o = common.sampling_options(self.sampling_defaults(), options)
        return to_uint8(self.chain(n, labels, generator, o.sampler, o.steps, o.eta, o.guidance,
                                   interval=(o.guidance_low, o.guidance_high), spacing=o.spacing,
                                   negative_prompt=o.negative_prompt)).cpu()

    @torch.no_grad()
    def denoising_strip(self, rows: int = 4, frames: int = 10) -> tuple[torch.Tensor, int]:
        """`rows` DDIM chains, `frames` snapshots each from noise to image (a view for the report)."""
        _, snaps = self.chain(rows, generator=torch.Generator().manual_seed(0), keep=frames)
        strip = torch.stack(snaps, 1).reshape(rows * len(snaps), *self.image_shape)  # row = one chain
        return to_uint8(strip), len(snaps)

    def own_views(self) -> dict[str, tuple[torch.Tensor, int]]:
        return {"denoising": self.denoising_strip(rows=4)}

    # ---------------------------------------------------------------- state

