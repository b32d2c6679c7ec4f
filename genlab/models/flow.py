"""Flow matching with straight paths: rectified flow (Liu et al. 2023, https://arxiv.org/abs/2209.03003;
conditional flow matching, Lipman et al. 2023, https://arxiv.org/abs/2210.02747), the recipe of
Stable Diffusion 3 and FLUX.

Data x_0 and noise e ~ N(0, I) are joined by the straight line x_t = (1 - t) x_0 + t e, t in [0, 1];
a U-Net learns the velocity v(x_t, t) = e - x_0 by regression, and sampling integrates the ODE
dx/dt = v from t = 1 (noise) to t = 0 (data) with a few steps of a fixed-step solver (Euler, Heun,
midpoint) or an adaptive one (dopri5, torchdiffeq's, with the network evaluations counted). Options:
- minibatch optimal-transport pairing of data and noise (Tong et al. 2023, OT-CFM,
  https://arxiv.org/abs/2302.00482): straighter paths, fewer steps;
- the logit-normal timestep density of SD3 (Esser et al. 2024, https://arxiv.org/abs/2403.03206, Sec. 3.1).
The U-Net, EMA, class conditioning with label dropout, classifier-free guidance (in an interval of
t, as diffusion's) are diffusion.py's. The pixel family also gives a likelihood: the ODE's exact
density by the instantaneous change of variables (Chen et al. 2018, https://arxiv.org/abs/1806.07366),
its trace estimated by Hutchinson's estimator (Grathwohl et al. 2019, FFJORD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlab.config import option
from genlab.errors import GenlabError
from genlab.models import common
from genlab.models.common import to_uint8
from genlab.models.diffusion import UNetFamily
from genlab.models.text import check_negative

SAMPLERS = ("euler", "heun", "midpoint", "dopri5")
EVALS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2}  # network evaluations a fixed step takes
TIMESTEPS = ("uniform", "logit-normal")
# t in [0, 1] enters the U-Net's sinusoidal time embedding (made for steps 0..T-1, frequencies 1 to 1e-4) as
# 100 t: SD3's 1000 t gave a tiny model's velocity features that oscillate every 0.006 in t, and Heun's
# error then stopped falling between 10 and 20 steps (tests/models/test_flow.py); 100 t keeps the path
# smooth at the step sizes few-step sampling takes, and still resolves t to ~0.06 at its finest
TIME_SCALE = 100.0
SAMPLER_HELP = ("ODE solver: euler, heun, midpoint (fixed steps; heun and midpoint evaluate the network twice a "
                "step) or dopri5 (adaptive, to --tolerance; its evaluations are counted)")


@dataclass
class FlowConfig:
    """A flow-matching model's recipe."""

    name: str = option("flow", "model family (listed at the end of --help)", flag="--model")
    width: int = option(32, "channels of the U-Net's first level (x2 at each lower level)")
    timestep_sampling: str = option("uniform", "density of training times t: uniform, or logit-normal (SD3: "
                                    "sigmoid of N(0, 1), more weight on the middle of the path)", choices=TIMESTEPS)
    ot: bool = option(False, "pair each batch's images and noise by minibatch optimal transport (OT-CFM): "
                             "straighter paths")
    lr: float = option(5e-4, "Adam learning rate")
    ema: float = option(0.999, "decay of the weights' moving average used for sampling (warmed up)")
    dropout: float = option(0.0, "dropout in the residual blocks")
    conditional: bool = option(False, "class-conditional, with label dropout for classifier-free guidance")
    label_dropout: float = option(0.1, "share of training labels (or prompts, --text) replaced by 'no label' "
                                        "(the empty prompt)")
    text: bool = option(False, "condition on the data's captions (text-to-image): a text encoder of its own, "
                               "cross-attention from the U-Net; prompt dropout is --label-dropout")
    guidance: float = option(1.0, "classifier-free guidance scale s: v_u + s (v_c - v_u); 0 = unconditional",
                             resumable=True)
    guidance_low: float = option(0.0, "classifier-free guidance only at times t >= this (t = 1 is noise)",
                                 resumable=True)
    guidance_high: float = option(1.0, "classifier-free guidance only at times t <= this; elsewhere scale 1",
                                  resumable=True)
    sampler: str = option("euler", SAMPLER_HELP, choices=SAMPLERS, resumable=True)
    sample_steps: int = option(20, "solver steps when sampling (fixed-step solvers)", resumable=True)
    tolerance: float = option(1e-3, "dopri5's relative and absolute tolerance", resumable=True)
    likelihood_steps: int = option(16, "Heun steps of the likelihood's ODE (genlab eval)", resumable=True)

    def validate(self) -> None:
        if self.width < 8 or self.width % 8:
            raise GenlabError(f"width must be a multiple of 8 (GroupNorm groups), got {self.width}")
        if self.lr <= 0:
            raise GenlabError(f"lr must be positive, got {self.lr}")
        if not 0 < self.ema < 1:
            raise GenlabError(f"ema is a decay in (0, 1), e.g. 0.999; got {self.ema}")
        if not 0 <= self.label_dropout < 1:
            raise GenlabError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.text and self.conditional:
            raise GenlabError("--text and --conditional both condition the model: choose one (captions name the "
                              "class where a dataset has no captions of its own)")
        if self.likelihood_steps < 1:
            raise GenlabError(f"likelihood_steps must be at least 1, got {self.likelihood_steps}")
        check_sampling(self.sampler, self.sample_steps, self.tolerance, self.guidance, self.guidance_low,
                       self.guidance_high)


def check_sampling(sampler: str, steps: int, tolerance: float, guidance: float, low: float, high: float) -> None:
    if sampler not in SAMPLERS:
        raise GenlabError(f"unknown sampler {sampler!r} for a flow model; its samplers: {', '.join(SAMPLERS)}")
    if steps < 1:
        raise GenlabError(f"sampling steps must be at least 1, got {steps}")
    if not tolerance > 0:  # also refuses nan
        raise GenlabError(f"dopri5's tolerance must be positive (e.g. 1e-3), got {tolerance}")
    if guidance < 0:
        raise GenlabError(f"guidance scale must be 0 or more, got {guidance}")
    if not 0 <= low <= high <= 1:
        raise GenlabError(f"the guidance interval is times t with 0 <= guidance_low <= guidance_high <= 1, "
                          f"got {low} and {high}")


def ot_pairing(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`noise` reordered so that the batch's pairs (x0[i], noise[i]) minimise the summed squared
    distance: the exact assignment (the Hungarian method, scipy), as torchcfm's exact OT sampler."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x0.flatten(1).double().cpu(), noise.flatten(1).double().cpu()).square()
    _, cols = linear_sum_assignment(cost.numpy())
    return noise[torch.as_tensor(cols, device=noise.device)]


def fixed_step(f, x: torch.Tensor, t0: float, t1: float, sampler: str) -> torch.Tensor:
    """One step of an explicit solver of dx/dt = f(x, t) from t0 to t1."""
    dt = t1 - t0
    if sampler == "euler":
        return x + dt * f(x, t0)
    if sampler == "midpoint":
        return x + dt * f(x + 0.5 * dt * f(x, t0), t0 + 0.5 * dt)
    k1 = f(x, t0)  # heun: the trapezoid of the slopes at both ends
    return x + 0.5 * dt * (k1 + f(x + dt * k1, t1))


# ---------------------------------------------------------------- the family

@dataclass
class FlowSampling:
    sampler: str = option("euler", "euler, heun, midpoint or dopri5", choices=SAMPLERS)
    steps: int = option(20, "solver steps (fixed-step solvers)")
    tolerance: float = option(1e-3, "dopri5's tolerance")
    guidance: float = option(1.0, "classifier-free guidance scale (conditional models; 0 = unconditional)")
    guidance_low: float = option(0.0, "guidance only at times t >= this")
    guidance_high: float = option(1.0, "guidance only at times t <= this")
    negative_prompt: str = option("", "a model trained with --text: what guidance steers away from (the prompt of "
                                      "guidance's unconditional branch; empty: none)")


class FlowMatching(UNetFamily):
    """A rectified flow as a genlab family: U-Net, its EMA, one Adam optimiser."""

    SamplingOptions = FlowSampling
    kind = "flow"

    # ---------------------------------------------------------------- training

    def times(self, n: int) -> torch.Tensor:
        """Training times t [n] in (0, 1): uniform, or SD3's logit-normal (m = 0, s = 1)."""
        if self.config.timestep_sampling == "logit-normal":
            return torch.sigmoid(self.rt.randn(n))
        return self.rt.rand(n)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One Adam step on E_t,x0,e ||(e - x_0) - v(x_t, t)||^2, x_t = (1 - t) x_0 + t e."""
        rt, cfg = self.rt, self.config
        x0 = self.to_space(images)
        noise = rt.randn(*x0.shape)
        if cfg.ot:  # within this rank's share of the batch (as BatchNorm's statistics are)
            noise = ot_pairing(x0, noise)
        t = self.times(len(x0))
        tb = t.view(-1, *[1] * (x0.dim() - 1))
        x_t = (1 - tb) * x0 + tb * noise
        y = self.dropped(labels)
        with rt.autocast():
            out = self.unet(x_t, t * TIME_SCALE, y).float()
        loss = F.mse_loss(out, noise - x0)
        return {"loss": loss.item(), "grad_norm": self.optimise(loss)}

    # ---------------------------------------------------------------- sampling

    def velocity(self, x: torch.Tensor, t: float, labels, guidance: float) -> torch.Tensor:
        """v(x, t) with the EMA weights; classifier-free guidance v_u + s (v_c - v_u) for a
        conditional model (s = 0: the unconditional model, s = 1: the conditional one)."""
        net = self.unet_ema
        tt = torch.full((len(x),), float(t) * TIME_SCALE, device=self.device)
        if labels is None:
            return net(x, tt).float()
        null = self.uncond_like(labels) if self.takes_text else torch.full_like(labels, self.conditional_classes)
        if guidance == 1:
            return net(x, tt, labels).float()
        if guidance == 0:
            return net(x, tt, null).float()
        cond, uncond = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null])).float().chunk(2)
        return uncond + guidance * (cond - uncond)

    @torch.no_grad()
    def chain(self, n: int, labels=None, generator=None, options: FlowSampling | None = None, keep: int = 0):
        """Integrate from x_1 ~ N(0, I) at t = 1 to t = 0; returns x_0 (as images: pixels in [-1, 1],
        or decoded latents) and, with `keep`, `keep` snapshots along the way."""
        o = options or self.sampling_defaults()
        check_sampling(o.sampler, o.steps, o.tolerance, o.guidance, o.guidance_low, o.guidance_high)
        y = self.condition(labels, n)
        check_negative(self, o.negative_prompt)
        x = torch.randn(n, *self.space_shape, generator=generator).to(self.device)
        nfe = 0

        def f(x_t: torch.Tensor, t: float) -> torch.Tensor:
            nonlocal nfe
            nfe += 1
            return self.velocity(x_t, t, y, o.guidance if o.guidance_low <= t <= o.guidance_high else 1.0)

        snaps = []
        if o.sampler == "dopri5":
            from torchdiffeq import odeint

            grid = torch.linspace(1, 0, max(keep, 2), dtype=torch.float64)
            path = odeint(lambda t, x_t: f(x_t, float(t)), x, grid.to(x.device, torch.float32), method="dopri5",
                          rtol=o.tolerance, atol=o.tolerance)
            x = path[-1]
            snaps = [self.to_images(p).cpu() for p in path[:-1]] if keep else []
        else:
            ts = torch.linspace(1, 0, o.steps + 1, dtype=torch.float64).tolist()
            every = max(1, o.steps // keep) if keep else 0
            for i in range(o.steps):
                x = fixed_step(f, x, ts[i], ts[i + 1], o.sampler)
                if keep and i % every == 0 and len(snaps) < keep - 1:
                    snaps.append(self.to_images(x).cpu())
        self.last_nfe = nfe
        return (self.to_images(x), snaps + [self.to_images(x).cpu()]) if keep else self.to_images(x)

    def sampling_defaults(self) -> FlowSampling:
        cfg = self.config
        return FlowSampling(sampler=cfg.sampler, steps=cfg.sample_steps, tolerance=cfg.tolerance,
                            guidance=cfg.guidance, guidance_low=cfg.guidance_low, guidance_high=cfg.guidance_high)

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """n images uint8 [n, C, H, W] on the CPU (the config's solver and steps by default)."""
        o = common.sampling_options(self.sampling_defaults(), options)
        return to_uint8(self.chain(n, labels, generator, o)).cpu()

    @torch.no_grad()
    def flow_strip(self, rows: int = 4, frames: int = 10) -> tuple[torch.Tensor, int]:
        """`rows` paths, `frames` snapshots each from noise to image (a view for the report)."""
        _, snaps = self.chain(rows, generator=torch.Generator().manual_seed(0), keep=frames)
        strip = torch.stack(snaps, 1).reshape(rows * len(snaps), *self.image_shape)
        return to_uint8(strip), len(snaps)

    def own_views(self) -> dict[str, tuple[torch.Tensor, int]]:
        return {"flow": self.flow_strip(rows=4)}



LIKELIHOOD_SEED = 0  # the dequantisation noise and the Hutchinson probes: the same for every call


class Flow(FlowMatching):
    """Flow matching on pixels, with the ODE's likelihood of test images."""

    likelihood_images = 1000  # the test images it is estimated on: 2 x likelihood_steps gradient passes each

    @property
    def likelihood_dims(self) -> int:
        return math.prod(self.image_shape)

    @property
    def likelihood_convention(self) -> str:
        return ("estimated: the flow ODE's density of uniformly dequantised 8-bit pixels (x = (k + u) / 128 - 1), "
                "a lower bound on the discrete likelihood in expectation; instantaneous change of variables, "
                f"Heun with {self.config.likelihood_steps} steps, one Rademacher probe of the trace (Hutchinson), "
                f"on the first {self.likelihood_images} test images")

    def log_likelihood(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) [n] in nats of uint8 images (log p(x | y), guidance 1, for a conditional model),
        of the pixels dequantised by uniform noise (fixed seed): the density below, less the log of
        the 1/128-wide bin of each level."""
        gen = torch.Generator().manual_seed(LIKELIHOOD_SEED)
        x = (images.float() + torch.rand(images.shape, generator=gen)) / 128 - 1
        probe = torch.randint(0, 2, images.shape, generator=gen).float() * 2 - 1
        d = math.prod(self.space_shape)
        return self.log_density(x, labels, probe) - d * math.log(128)

    @torch.no_grad()
    def log_density(self, x: torch.Tensor, labels=None, probe: torch.Tensor | None = None) -> torch.Tensor:
        """The flow's density log p_0(x) [n] (float64, CPU) of points x in its space, by the
        instantaneous change of variables along the ODE from x (t = 0) to noise (t = 1):
        log p_0(x_0) = log N(x_1; 0, I) + int_0^1 div v(x_t, t) dt, the divergence estimated as
        probe^T (dv/dx) probe with a Rademacher `probe` (Hutchinson), Heun's steps."""
        n = len(x)
        x = x.to(self.device)
        probe = (probe if probe is not None else torch.ones_like(x)).to(self.device)
        y = self.condition(labels, n)

        def f(state: torch.Tensor, t: float) -> torch.Tensor:  # state [n, D + 1]: the point and the integral
            with torch.enable_grad():
                x_t = state[:, :-1].reshape(n, *self.space_shape).detach().requires_grad_(True)
                v = self.velocity(x_t, t, y, 1.0)
                (vjp,) = torch.autograd.grad(v, x_t, probe)  # probe^T dv/dx
            div = (vjp * probe).flatten(1).sum(1, keepdim=True)
            return torch.cat([v.detach().flatten(1), div], 1)

        state = torch.cat([x.flatten(1), torch.zeros(n, 1, device=x.device)], 1)
        ts = torch.linspace(0, 1, self.config.likelihood_steps + 1, dtype=torch.float64).tolist()
        for i in range(self.config.likelihood_steps):
            state = fixed_step(f, state, ts[i], ts[i + 1], "heun")
        x1, integral = state[:, :-1].double().cpu(), state[:, -1].double().cpu()
        log_p1 = -0.5 * (x1.square().sum(1) + x1.shape[1] * math.log(2 * math.pi))
        return log_p1 + integral
