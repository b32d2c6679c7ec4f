"""Flow matching: the path and its target, OT pairing, SD3's times, the solvers converging as their
steps grow, guidance, the ODE likelihood against a closed form, and bad sampling options."""

import math

import pytest
import torch

from genlab.config import apply_overrides, default_config
from genlab.core.runtime import seed_everything
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.models.flow import TIME_SCALE, fixed_step, ot_pairing

SHAPE = (1, 8, 8)


def make(shape=SHAPE, seed=0, name="flow", **options):
    seed_everything(seed)
    overrides = {f"model.{k}": v for k, v in {"width": 8, "sample_steps": 5, **options}.items()}
    return build_model(apply_overrides(default_config(name), overrides).model, shape, 10)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def trained(steps=60, **options):
    """A tiny flow fitted for a few steps to images whose top half is black."""
    model = make(**options)
    images = torch.randint(0, 256, (64, *SHAPE), dtype=torch.uint8, generator=gen(1))
    images[:, :, :4] = 0
    for _ in range(steps):
        idx = torch.randint(0, 64, (16,), generator=gen(2))
        model.train_step(images[idx], torch.arange(16) % 10)
    return model, images


def test_the_loss_is_the_velocity_regression_of_the_straight_path(monkeypatch):
    """With the U-Net replaced by one that returns e - x_0 exactly, the loss is 0; with one that
    returns 0, it is E||e - x_0||^2."""
    model = make()
    images = torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8)
    seen = {}

    def oracle(x_t, t, y=None):
        x0 = images.float() / 127.5 - 1
        tb = (t / TIME_SCALE).view(-1, 1, 1, 1)
        noise = (x_t - (1 - tb) * x0) / tb  # x_t = (1 - t) x0 + t e
        seen["t"] = t / TIME_SCALE
        return (noise - x0).requires_grad_(True)

    monkeypatch.setattr(model, "unet", oracle)
    monkeypatch.setattr(model.rt, "finish_grads", lambda *a: 0.0)
    monkeypatch.setattr(model.rt, "step", lambda opt: None)
    monkeypatch.setattr(model.ema, "update", lambda *a: None)
    model.opt.zero_grad = lambda set_to_none=True: None
    monkeypatch.setattr(model.rt, "backward", lambda loss: None)
    assert model.train_step(images)["loss"] < 1e-8
    assert ((seen["t"] > 0) & (seen["t"] < 1)).all()


def test_ot_pairing_is_a_permutation_that_shortens_the_paths():
    x0, noise = torch.randn(32, 1, 4, 4, generator=gen(0)), torch.randn(32, 1, 4, 4, generator=gen(1))
    paired = ot_pairing(x0, noise)
    assert sorted(paired.flatten().tolist()) == sorted(noise.flatten().tolist())
    cost = lambda e: float((x0 - e).square().sum())  # noqa: E731
    assert cost(paired) < 0.9 * cost(noise)
    for _ in range(20):  # no swap of two pairs makes it shorter
        i, j = torch.randint(0, 32, (2,), generator=gen(3)).tolist()
        swapped = paired.clone()
        swapped[[i, j]] = paired[[j, i]]
        assert cost(swapped) >= cost(paired) - 1e-9


def test_logit_normal_times_weigh_the_middle():
    seed_everything(0)
    t = make(timestep_sampling="logit-normal").times(20000)
    u = make(timestep_sampling="uniform").times(20000)
    assert 0 < float(t.min()) and float(t.max()) < 1
    assert abs(float(t.median()) - 0.5) < 0.02
    middle = lambda s: float(((s > 0.25) & (s < 0.75)).float().mean())  # noqa: E731
    assert middle(t) > 0.65 > 0.55 > middle(u)  # logit-normal: ~0.68 of its mass there; uniform 0.5


@pytest.fixture(scope="module")
def fitted():
    model = trained()[0]
    model.to_images = lambda x: x  # compare the ODE's solutions themselves, not their clamp to [-1, 1]
    return model


def test_fixed_step_solvers_converge_as_their_steps_grow(fitted):
    """Each fixed-step solver's images approach a 400-step Heun reference monotonically over 5, 10,
    20 and 50 steps, and the second-order ones get closer than Euler at every count."""
    options = type(fitted.sampling_defaults())
    ref = fitted.chain(8, generator=gen(), options=options(sampler="heun", steps=400))
    gaps = {}
    for sampler in ("euler", "heun", "midpoint"):
        gaps[sampler] = [float((fitted.chain(8, generator=gen(), options=options(sampler=sampler, steps=k)) - ref)
                               .abs().mean()) for k in (5, 10, 20, 50)]
        assert all(a > b for a, b in zip(gaps[sampler], gaps[sampler][1:])), (sampler, gaps[sampler])
    for k in range(4):
        assert gaps["heun"][k] < gaps["euler"][k] and gaps["midpoint"][k] < gaps["euler"][k]


def test_dopri5_counts_its_evaluations_and_tightens_with_its_tolerance(fitted):
    options = type(fitted.sampling_defaults())
    ref = fitted.chain(8, generator=gen(), options=options(sampler="heun", steps=400))
    gaps, nfes = [], []
    for tol in (1e-3, 1e-4, 1e-5):
        x = fitted.chain(8, generator=gen(), options=options(sampler="dopri5", tolerance=tol))
        gaps.append(float((x - ref).abs().mean()))
        nfes.append(fitted.last_nfe)
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 5e-4
    assert 6 <= nfes[0] <= nfes[1] <= nfes[2]  # dopri5: 6 evaluations a step, the first one more
    fitted.sample(2, sampler="heun", steps=4)
    assert fitted.last_nfe == 8


def test_guidance_zero_is_the_unconditional_velocity():
    model, _ = trained(steps=5, conditional=True)
    null = torch.full((3,), 10)
    x = torch.randn(3, *SHAPE, generator=gen())
    want = model.unet_ema(x, torch.full((3,), 0.5 * TIME_SCALE), null)
    assert torch.allclose(model.velocity(x, 0.5, torch.arange(3), 0.0), want)
    guided = model.sample(3, labels=torch.arange(3), generator=gen(), guidance=3.0)
    assert not torch.equal(guided, model.sample(3, labels=torch.arange(3), generator=gen(), guidance=1.0))
    # outside the guidance interval the scale is 1: an interval that holds no step is the conditional model
    assert torch.equal(model.sample(3, labels=torch.arange(3), generator=gen(), guidance=3.0, guidance_low=0.99,
                                    guidance_high=0.995), model.sample(3, labels=torch.arange(3), generator=gen()))


def test_the_ode_likelihood_matches_a_gaussians_density(monkeypatch):
    """For data N(mu, s^2 I) the rectified flow's velocity is known in closed form, E[e - x_0 | x_t];
    the ODE's log-density of points must be the Gaussian's (the Jacobian is a multiple of I, so one
    Rademacher probe gives the trace exactly and only Heun's discretisation is left)."""
    model = make(likelihood_steps=40)
    mu, s = 0.3, 0.5

    def velocity(x, t, labels, guidance):
        a = 1 - t
        var = a * a * s * s + t * t
        centred = x - a * mu
        return t / var * centred - (mu + a * s * s / var * centred)

    monkeypatch.setattr(model, "velocity", velocity)
    x = mu + s * torch.randn(6, *SHAPE, generator=gen())
    d = math.prod(SHAPE)
    want = (-0.5 * ((x - mu) / s).square().flatten(1).sum(1) - d * math.log(s) - 0.5 * d * math.log(2 * math.pi))
    probe = torch.randint(0, 2, x.shape, generator=gen(1)).float() * 2 - 1
    got = model.log_density(x, probe=probe)
    assert torch.allclose(got, want.double(), rtol=2e-3, atol=0.05), (got, want)


def test_a_trained_flow_gives_a_finite_likelihood_of_test_images():
    model, images = trained(steps=20)
    ll = model.log_likelihood(images[:4])
    assert ll.shape == (4,) and torch.isfinite(ll).all()
    assert torch.equal(ll, model.log_likelihood(images[:4]))  # fixed dequantisation and probes
    assert "estimated" in model.likelihood_convention


@pytest.mark.parametrize("options, message", [
    ({"sampler": "ddim"}, "its samplers: euler, heun, midpoint, dopri5"),
    ({"tolerance": 0.0}, "tolerance must be positive"),
    ({"tolerance": -1e-3}, "tolerance must be positive"),
    ({"steps": 0}, "at least 1"),
    ({"guidance_low": 0.6, "guidance_high": 0.4}, "guidance interval"),
], ids=str)
def test_bad_sampling_options_are_refused(options, message):
    with pytest.raises(GenlabError, match=message):
        make().sample(2, **options)


def test_latent_flow_refuses_a_vq_first_stage():
    with pytest.raises(GenlabError, match="--first-stage kl"):
        apply_overrides(default_config("latent-flow"), {"model.first_stage": "vq"}).validate()


def test_fixed_step_is_exact_where_it_should_be():
    f = lambda x, t: torch.full_like(x, 2 * t)  # noqa: E731  dx/dt = 2t: x(1) - x(0) = 1
    x = torch.zeros(3)
    assert torch.allclose(fixed_step(f, x, 0.0, 1.0, "heun"), torch.ones(3))  # trapezoid: exact for linear f
    assert torch.allclose(fixed_step(f, x, 0.0, 1.0, "midpoint"), torch.ones(3))
    assert torch.allclose(fixed_step(f, x, 0.0, 1.0, "euler"), torch.zeros(3))
