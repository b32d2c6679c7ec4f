"""Few-step solvers of the diffusion probability-flow ODE (and its SDE), in data prediction.

A Gaussian diffusion has x_t = alpha_t x_0 + sigma_t eps; with the half log-SNR lambda_t =
log(alpha_t / sigma_t), the exact solution of the ODE from s to t is a weighted integral of the
network's x_0 prediction over lambda (Lu et al. 2022, DPM-Solver, https://arxiv.org/abs/2206.00927).
The solvers here approximate that integral from the predictions already made at earlier points
(multistep: one network evaluation a step):

- `dpmpp_2m`: DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095, Alg. 2), with
  `eta` > 0 its SDE variant (the k-diffusion / diffusers `sde-dpmsolver++` form): noise is
  re-injected at each step, which on genlab's undertrained 5-minute models measured better, as
  DDIM's eta 1 does;
- `unipc`: UniPC with B(h) = e^{-h} - 1 (`bh2`; Zhao et al. 2023, https://arxiv.org/abs/2302.04867):
  its predictor is DPM-Solver++(2M), and its corrector re-uses the evaluation at the new point to
  raise the step's order at no extra cost.

The points are given as tables of alpha and sigma (float64, from the noisiest to the last, then the
clean point alpha 1, sigma 0); the step into the clean point returns the last x_0 prediction, as
DPM-Solver's "lower order final" does. `karras_sigmas` is the spacing of Karras et al. 2022
(https://arxiv.org/abs/2206.00364, eq. 5, rho = 7), denser at low noise.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

# the least number of steps a solver needs to be itself (with one step a multistep method has no
# earlier point and is DDIM; the CLI refuses fewer rather than silently running another solver)
MIN_STEPS = {"ddim": 1, "ddpm": 1, "dpm++2m": 2, "unipc": 2}

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]  # (x at point i, i) -> x_0 prediction


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n noise levels from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho) (float64)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _lambdas(alphas: torch.Tensor, sigmas: torch.Tensor) -> list[float]:
    return [math.log(a / s) if s > 0 else math.inf for a, s in zip(alphas.tolist(), sigmas.tolist())]


def dpmpp_2m(denoise: Denoiser, x: torch.Tensor, alphas: torch.Tensor, sigmas: torch.Tensor, eta: float = 0.0,
             noise: Callable[[], torch.Tensor] | None = None, on_step=None) -> torch.Tensor:
    """DPM-Solver++(2M), deterministic for eta 0, the SDE variant for eta 1 (any eta in between);
    `noise()` draws N(0, I) like x. len(alphas) - 1 network evaluations."""
    lam, a, s = _lambdas(alphas, sigmas), alphas.tolist(), sigmas.tolist()
    m_prev = None
    for i in range(len(a) - 1):
        m = denoise(x, i)
        if s[i + 1] == 0:  # into the clean point: the prediction itself
            x = m
        else:
            h = lam[i + 1] - lam[i]
            c = a[i + 1] * -math.expm1(-(1 + eta) * h)  # alpha_t (1 - e^{-(1 + eta) h})
            x_next = (s[i + 1] / s[i]) * math.exp(-eta * h) * x + c * m
            if m_prev is not None:  # the second-order term: the slope of x_0 over lambda (Alg. 2's D)
                r = (lam[i] - lam[i - 1]) / h
                x_next = x_next + (c * 0.5 / r) * (m - m_prev)
            if eta > 0:
                x_next = x_next + s[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * noise()
            x = x_next
        m_prev = m
        if on_step is not None:
            on_step(i, x)
    return x


def _unic_rhos(h: float, r1: float | None) -> list[float]:
    """UniC's weights for order 1 (r1 None) or 2 (r1: the earlier point's lambda offset / h), bh2."""
    if r1 is None:
        return [0.5]
    hh = -h
    b_h = math.expm1(hh)
    phi = math.expm1(hh) / hh - 1
    b1 = phi / b_h
    phi = phi / hh - 0.5
    b2 = phi * 2 / b_h
    # solve [[1, 1], [r1, 1]] rho = [b1, b2]
    rho0 = (b1 - b2) / (1 - r1)
    return [rho0, b1 - rho0]


def unipc(denoise: Denoiser, x: torch.Tensor, alphas: torch.Tensor, sigmas: torch.Tensor,
          on_step=None) -> torch.Tensor:
    """UniPC-2 (bh2): the UniP-2 predictor (= DPM-Solver++(2M)), then at each new point the UniC
    corrector with the evaluation made there. len(alphas) - 1 network evaluations."""
    lam, a, s = _lambdas(alphas, sigmas), alphas.tolist(), sigmas.tolist()
    ms: list[torch.Tensor] = []
    x_prev = None
    for i in range(len(a) - 1):
        m = denoise(x, i)
        if i > 0:  # correct x_i from x_{i-1} with the prediction m_i just made (order of the predictor)
            h = lam[i] - lam[i - 1]
            r1 = (lam[i - 2] - lam[i - 1]) / h if i > 1 else None
            rhos = _unic_rhos(h, r1)
            b_h = math.expm1(-h)
            x_i = (s[i] / s[i - 1]) * x_prev - a[i] * b_h * ms[-1]
            corr = rhos[-1] * (m - ms[-1])
            if r1 is not None:
                corr = corr + rhos[0] * (ms[-2] - ms[-1]) / r1
            x = x_i - a[i] * b_h * corr
        ms.append(m)
        x_prev = x
        if s[i + 1] == 0:
            x = m
        else:
            h = lam[i + 1] - lam[i]
            b_h = math.expm1(-h)
            x = (s[i + 1] / s[i]) * x_prev - a[i + 1] * b_h * m
            if i > 0:
                r1 = (lam[i - 1] - lam[i]) / h
                x = x - a[i + 1] * b_h * 0.5 * (ms[-2] - m) / r1
        if on_step is not None:
            on_step(i, x)
        if len(ms) > 2:
            ms.pop(0)
    return x
