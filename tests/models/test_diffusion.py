"""Diffusion: the schedule against its closed forms, DDIM against DDPM, guidance, determinism, and
that the U-Net learns (width 8, T = 50, so each test takes about a second)."""

import numpy as np
import pytest
import torch

from genlab.config import apply_overrides, default_config
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.models.diffusion import Schedule
from genlab.core.runtime import seed_everything


SHAPE = (1, 16, 16)  # small images keep the U-Net quick; 28 and 32 are tested below


def make(shape=SHAPE, seed=0, **options):
    seed_everything(seed)
    overrides = {f"model.{k}": v for k, v in {"width": 8, "timesteps": 50, "sample_steps": 5, **options}.items()}
    return build_model(apply_overrides(default_config("diffusion"), overrides).model, shape, 10)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("options", [{}, {"schedule": "cosine", "prediction": "v"}, {"conditional": True},
                                     {"sampler": "ddpm"}, {"conditional": True, "guidance": 3.0, "eta": 0.5}], ids=str)
def test_steps_samples_and_round_trips(options):
    model = make(**options)
    images = torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8)
    logs = model.train_step(images, torch.arange(8))
    assert all(np.isfinite(v) for v in logs.values())
    s = model.sample(3, generator=gen())
    assert s.shape == (3, *SHAPE) and s.dtype == torch.uint8
    assert torch.equal(s, model.sample(3, generator=gen()))  # deterministic for a seed
    assert not torch.equal(s, model.sample(3, generator=gen(1)))
    other = make(seed=1, **options)
    other.load_state_dict(model.state_dict())
    assert torch.equal(s, other.sample(3, generator=gen())) and other.steps == 1


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=str)
def test_sizes_and_channels(shape):
    model = make(shape=shape)
    model.train_step(torch.randint(0, 256, (2, *shape), dtype=torch.uint8), torch.arange(2))
    assert model.sample(2).shape == (2, *shape)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_forward_noising_matches_the_closed_form(kind):
    """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with abar_t the product of (1 - beta_s):
    the one-shot q_sample agrees with t single steps x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) eps
    in mean and variance."""
    sched = Schedule(kind, 100)
    assert torch.allclose(sched.abar, torch.cumprod(1 - sched.betas, 0))
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    for t in (0, 10, 60, 99):
        xt = sched.q_sample(x0, torch.full((len(x0),), t), torch.randn_like(x0))
        stepwise = x0.clone()
        for s in range(t + 1):
            b = sched.betas[s]
            stepwise = (1 - b).sqrt() * stepwise + b.sqrt() * torch.randn_like(x0)
        ab = sched.abar[t]
        for sample in (xt, stepwise):
            assert abs(float(sample.mean()) - 0.7 * float(ab.sqrt())) < 0.02
            assert abs(float(sample.var()) - float(1 - ab)) < 0.03
    assert float(sched.abar[-1]) < 1e-3 + (0.05 if kind == "linear" else 0)  # the chain ends near pure noise


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_with_eta_1_on_all_steps_is_ddpm_step_by_step(kind):
    sched = Schedule(kind, 50)
    x_t = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    x0 = torch.rand(6, 1, 4, 4, dtype=torch.float64) * 2 - 1
    for step in (49, 30, 5, 1):
        t = torch.full((6,), step)
        ab = sched.abar[step]
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        m_ddpm, s_ddpm = sched.ddpm_step(x_t, t, x0)
        m_ddim, s_ddim = sched.ddim_step(x_t, t, t - 1, x0, eps, eta=1.0)
        assert torch.allclose(m_ddpm, m_ddim, atol=1e-10) and torch.allclose(s_ddpm, s_ddim, atol=1e-10)


def test_ddim_eta_1_all_steps_first_step_distribution_matches_ddpm():
    """From the same x_T, one step of DDPM and of DDIM (eta 1, all T steps) draw x_{T-1} from the same
    Gaussian: equal sample means and spreads over many draws."""
    model = make(timesteps=20)
    n = 4000
    x_T = torch.randn(1, *SHAPE).expand(n, -1, -1, -1)
    t = torch.full((n,), 19)
    x0, eps = model.predict(x_T, t, None, 1.0)
    torch.manual_seed(0)
    ddpm = sum(model.schedule.ddpm_step(x_T, t, x0)[i] * (torch.randn_like(x_T) if i else 1) for i in (0, 1))
    ddim = sum(model.schedule.ddim_step(x_T, t, t - 1, x0, eps, 1.0)[i] * (torch.randn_like(x_T) if i else 1)
               for i in (0, 1))
    assert torch.allclose(ddpm.mean(0), ddim.mean(0), atol=0.1)
    assert abs(float(ddpm.std(0).mean() / ddim.std(0).mean()) - 1) < 0.02


def test_loss_drops_on_a_tiny_dataset(mnist_sample):
    model = make(lr=2e-3, width=16)
    x = mnist_sample.images[:64, :, 6:22, 6:22]  # the digits' middle 16x16
    losses = [model.train_step(x[i % 4 * 16:(i % 4 + 1) * 16], torch.zeros(16, dtype=torch.long))["loss"]
              for i in range(80)]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_guidance_zero_is_the_unconditional_model():
    model = make(conditional=True)
    model.train_step(torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8), torch.arange(8))
    null = torch.full((4,), 10)  # the "no label" index
    guided = model.sample(4, labels=torch.tensor([1, 2, 3, 4]), generator=gen(), guidance=0.0)
    x = torch.randn(4, *SHAPE)
    t = torch.full((4,), 30)
    a = model.predict(x, t, torch.tensor([1, 2, 3, 4]), 0.0)[1]
    b = model.schedule.x0_and_eps(x, t, model.unet_ema(x, t, null), "eps")[1]
    assert torch.equal(a, b)
    other_labels = model.sample(4, labels=torch.tensor([7, 7, 0, 9]), generator=gen(), guidance=0.0)
    assert torch.equal(guided, other_labels)  # with s = 0 the label plays no part
    assert not torch.equal(guided, model.sample(4, labels=torch.tensor([7, 7, 0, 9]), generator=gen(), guidance=2.0))


def test_guidance_in_an_interval_of_noise_levels():
    model = make(conditional=True, sample_steps=10)  # DDIM visits t = 49, 44, ..., 0 of T = 50
    model.train_step(torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8), torch.arange(8))
    labels = torch.tensor([1, 2, 3, 4])
    batches = []
    hook = model.unet_ema.register_forward_hook(lambda net, args, out: batches.append(len(args[0])))

    def sample(**options):
        batches.clear()
        return model.sample(4, labels=labels, generator=gen(), guidance=3.0, **options)

    full = sample()
    assert batches == [8] * 10  # a conditional and an unconditional pass, batched, at every step
    assert torch.equal(full, sample(guidance_low=0.0, guidance_high=1.0))
    never = sample(guidance_low=1.0, guidance_high=1.0)  # no step has t/T = 1: scale 1 throughout
    assert batches == [4] * 10
    assert torch.equal(never, model.sample(4, labels=labels, generator=gen(), guidance=1.0))
    middle = sample(guidance_low=0.2, guidance_high=0.6)
    ts = model.timesteps_for("ddim", 10)
    assert batches == [8 if 0.2 <= t / 50 <= 0.6 else 4 for t in ts] and 4 in batches and 8 in batches
    assert not torch.equal(middle, full) and not torch.equal(middle, never)
    hook.remove()
    for low, high in [(0.6, 0.2), (-0.1, 0.5), (0.5, 1.5)]:
        with pytest.raises(GenlabError, match="guidance interval"):
            sample(guidance_low=low, guidance_high=high)
    with pytest.raises(GenlabError, match="guidance interval"):
        apply_overrides(default_config("diffusion"), {"model.guidance_low": 0.9, "model.guidance_high": 0.1}).validate()


def test_ddim_step_counts_and_the_denoising_strip():
    model = make(timesteps=50)
    assert model.timesteps_for("ddpm", 5) == list(range(49, -1, -1))
    assert model.timesteps_for("ddim", 5) == [49, 37, 24, 12, 0]
    assert model.timesteps_for("ddim", 50) == list(range(49, -1, -1))
    strip, nrow = model.denoising_strip(rows=2, frames=5)
    assert strip.shape == (10, *SHAPE) and nrow == 5


def test_bad_sampling_options_are_refused():
    model = make()
    for kwargs, text in [({"steps": 0}, "steps"), ({"steps": 51}, "steps"), ({"eta": -1.0}, "eta"),
                         ({"sampler": "euler"}, "unknown sampler")]:
        with pytest.raises(GenlabError, match=text):
            model.sample(1, **kwargs)
    with pytest.raises(GenlabError, match="multiple of 8"):
        apply_overrides(default_config("diffusion"), {"model.width": 12}).validate()
    with pytest.raises(GenlabError, match="divisible by 4"):
        make(shape=(1, 30, 30))


def test_min_snr_weights():
    s = Schedule("linear", 1000)
    t = torch.arange(1000)
    snr = (s.abar / (1 - s.abar)).float()
    eps, v = s.loss_weights(t, 5.0, "eps"), s.loss_weights(t, 5.0, "v")
    noisy = snr <= 5
    assert 0 < noisy.sum() < 1000  # the linear schedule crosses SNR 5: both cases are exercised
    assert torch.allclose(eps[noisy], torch.ones(int(noisy.sum())))  # noisy steps keep their whole loss
    assert torch.allclose(eps[~noisy], 5 / snr[~noisy])  # clean steps are capped at gamma
    assert torch.allclose(v, snr.clamp(max=5) / (snr + 1))
    assert eps[0] < 0.01 and bool((eps[1:] >= eps[:-1]).all())  # more weight the noisier the step


def test_min_snr_changes_the_step_only_through_the_weights():
    images = torch.randint(0, 256, (32, *SHAPE), dtype=torch.uint8)  # 32 draws of t: some with SNR > 5

    def step(**options):
        model = make(**options)
        seed_everything(3)
        loss = model.train_step(images, torch.arange(32) % 10)["loss"]
        return loss, torch.cat([p.detach().flatten() for p in model.unet.parameters()])

    plain, capped, above_every_snr = step(), step(min_snr=5.0), step(min_snr=1e9)
    assert plain[0] == pytest.approx(above_every_snr[0], rel=1e-5)  # a gamma above every SNR: weights all 1
    assert torch.allclose(plain[1], above_every_snr[1], atol=1e-6)
    assert capped[0] < plain[0]  # weights <= 1, some < 1 at this T
    assert not torch.allclose(plain[1], capped[1])
    with pytest.raises(GenlabError, match="min_snr"):
        apply_overrides(default_config("diffusion"), {"model.min_snr": -1.0}).validate()


# ---------------------------------------------------------------- the few-step solvers

@pytest.fixture(scope="module")
def fitted_1000():
    """A tiny pixel model with T = 1000, fitted for a few steps (its x_0 clipped as pixels are)."""
    model = make(shape=(1, 8, 8), timesteps=1000)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=gen(1))
    images[:, :, :4] = 0
    for _ in range(60):
        model.train_step(images[torch.randint(0, 64, (16,), generator=gen(2))], None)
    return model


@pytest.mark.parametrize("sampler, spacing", [("ddim", "uniform"), ("dpm++2m", "uniform"), ("dpm++2m", "karras"),
                                              ("unipc", "uniform"), ("unipc", "karras")])
def test_each_sampler_converges_to_the_ode_as_its_steps_grow(fitted_1000, sampler, spacing):
    """The probability-flow ODE's solution: 1,000 DDIM steps (eta 0, every step of T); each
    deterministic sampler's images approach it monotonically over 5, 10, 20 and 50 steps."""
    m = fitted_1000
    ref = m.chain(8, generator=gen(), sampler="ddim", steps=1000, eta=0.0)
    gaps = [float((m.chain(8, generator=gen(), sampler=sampler, steps=k, eta=0.0, spacing=spacing) - ref).abs().mean())
            for k in (5, 10, 20, 50)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert m.last_nfe == 50
    if spacing == "uniform" and sampler != "ddim":  # the higher order pays: closer than DDIM at 10 and 20 steps
        ddim = [float((m.chain(8, generator=gen(), sampler="ddim", steps=k, eta=0.0) - ref).abs().mean())
                for k in (10, 20)]
        assert gaps[1] < 0.7 * ddim[0] and gaps[2] < 0.7 * ddim[1], (gaps, ddim)


def test_dpmpp_2m_sde_draws_noise_and_unipc_predicts_as_dpmpp_2m_does(fitted_1000):
    m = fitted_1000
    a = m.chain(4, generator=gen(), sampler="dpm++2m", steps=10, eta=1.0)
    assert torch.equal(a, m.chain(4, generator=gen(), sampler="dpm++2m", steps=10, eta=1.0))
    assert not torch.equal(a, m.chain(4, generator=gen(), sampler="dpm++2m", steps=10, eta=0.0))
    # UniPC's predictor is DPM-Solver++(2M); its corrector changes the point before the last x_0
    # prediction only from three steps on (with two, the last prediction is made before any correction)
    two = [m.chain(4, generator=gen(), sampler=s, steps=2) for s in ("dpm++2m", "unipc")]
    assert torch.equal(two[0], two[1])
    three = [m.chain(4, generator=gen(), sampler=s, steps=3) for s in ("dpm++2m", "unipc")]
    assert 0 < float((three[0] - three[1]).abs().mean()) < 0.2


def test_solver_steps_trailing_and_karras():
    model = make(timesteps=1000)
    assert model.timesteps_for("dpm++2m", 10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    karras = model.timesteps_for("unipc", 10, "karras")
    assert karras[0] == 999 and karras[-1] == 0 and len(karras) == 10
    gaps = [a - b for a, b in zip(karras, karras[1:])]
    assert gaps[-1] < gaps[0]  # denser at low noise


@pytest.mark.parametrize("kwargs, text", [({"sampler": "dpm++2m", "steps": 1}, "in 2..50 .* for dpm..2m"),
                                          ({"sampler": "unipc", "steps": 1}, "second-order"),
                                          ({"sampler": "heun"}, "its samplers: ddim, ddpm, dpm..2m, unipc"),
                                          ({"spacing": "log"}, "spacing")], ids=str)
def test_bad_solver_options_are_refused(kwargs, text):
    with pytest.raises(GenlabError, match=text):
        make().sample(1, **kwargs)
