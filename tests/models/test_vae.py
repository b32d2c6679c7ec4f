"""The VAE family: every variant in a tiny config, the likelihood pieces against their definitions,
the bound ordering on real digits, and that training does what a VAE should."""

import math

import numpy as np
import pytest
import torch

from genlab.config import apply_overrides, default_config
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.models.vae import bernoulli_log_prob, gaussian_kl, logistic_log_prob
from genlab.core.runtime import seed_everything

VARIANTS = [("vae", {}), ("vae-mlp", {}), ("vae", {"likelihood": "logistic"}),
            ("vae-mlp", {"likelihood": "logistic", "conditional": True}), ("vae", {"conditional": True}),
            ("vae", {"beta": 4.0, "kl_warmup": 10, "latent_dim": 2})]


def make(name="vae", shape=(1, 28, 28), seed=0, **options):
    seed_everything(seed)
    overrides = {f"model.{k}": v for k, v in {"width": 8, "iw_samples": 10, **options}.items()}
    return build_model(apply_overrides(default_config(name), overrides).model, shape, 10)


def train(model, data, steps, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logs = []
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        logs.append(model.train_step(data.images[idx], data.labels[idx]))
    return logs


@pytest.mark.parametrize("name, options", VARIANTS, ids=lambda v: str(v))
def test_every_variant_steps_samples_and_round_trips(name, options):
    model = make(name, **options)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    logs = model.train_step(images, torch.arange(8))
    assert all(np.isfinite(v) for v in logs.values()), logs
    s = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert s.shape == (6, 1, 28, 28) and s.dtype == torch.uint8
    other = make(name, seed=1, **options)
    other.load_state_dict(model.state_dict())
    assert torch.equal(s, other.sample(6, generator=torch.Generator().manual_seed(0)))
    assert other.steps == 1


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 32, 32), (3, 28, 28)])
def test_sizes_and_channels(shape):
    model = make("vae", shape=shape, likelihood="logistic")
    model.train_step(torch.randint(0, 256, (4, *shape), dtype=torch.uint8), torch.arange(4))
    assert model.sample(2).shape == (2, *shape)


def test_kl_is_zero_exactly_when_the_encoder_outputs_the_prior():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    assert (gaussian_kl(torch.randn(3, 5), torch.randn(3, 5)) > 0).all()
    model = make("vae-mlp")
    last = model.encoder.net[-1]
    with torch.no_grad():
        last.weight.zero_(), last.bias.zero_()  # mu = 0, logvar = 0 for every image
    logs = model.train_step(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), torch.arange(8))
    assert logs["kl"] == 0.0


def test_bernoulli_log_prob_is_the_sum_of_pixel_log_probabilities():
    logits = torch.randn(2, 1, 3, 3)
    x = (torch.rand(2, 1, 3, 3) < 0.5).float()
    p = torch.sigmoid(logits)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(bernoulli_log_prob(logits, x), expected, atol=1e-5)


@pytest.mark.parametrize("mean, log_scale", [(0.0, -2.0), (0.9, -4.0), (-0.3, 0.5), (0.2, -6.5)])
def test_discretised_logistic_is_a_distribution_over_the_256_levels(mean, log_scale):
    values = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1)
    params = torch.tensor([mean, log_scale]).view(1, 2, 1, 1).expand(256, 2, 1, 1)
    total = logistic_log_prob(params, values).double().exp().sum()
    assert abs(float(total) - 1) < 2e-3
    interior = logistic_log_prob(params, values)[1:255]  # the end bins also hold the tails
    if log_scale <= -2:  # a peaked logistic: its mode is the level nearest the mean
        assert abs(int(interior.argmax()) + 1 - (mean + 1) * 127.5) <= 0.5


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_elbo_below_importance_weighted_below_zero_on_real_digits(mnist_sample, likelihood):
    model = make("vae", likelihood=likelihood)
    train(model, mnist_sample, 30)
    x = mnist_sample.images[:64]
    elbo, iw = model.likelihood_bounds(x, k=50)
    assert (elbo <= iw + 1e-4).all() and (iw < 0).all()
    assert float(iw.mean() - elbo.mean()) > 0.01  # the IW bound is strictly tighter on average
    assert torch.equal(model.likelihood_bounds(x, k=10)[1], model.log_likelihood(x))  # seeded, k = iw_samples


def test_iw_bound_tightens_with_more_samples(mnist_sample):
    model = make("vae")
    train(model, mnist_sample, 30)
    x = mnist_sample.images[:64]
    means = [float(model.likelihood_bounds(x, k=k)[1].mean()) for k in (1, 10, 200)]
    assert means[0] < means[1] < means[2] < 0


def test_reconstructions_improve_over_a_few_hundred_steps(mnist_sample):
    model = make("vae", width=16)
    x = mnist_sample.images[:128]

    def error():
        return float((model.reconstruct(x).float() - x.float()).square().mean())

    before = error()
    logs = train(model, mnist_sample, 200)
    assert error() < 0.5 * before
    assert np.mean([l["rec"] for l in logs[-20:]]) < 0.6 * np.mean([l["rec"] for l in logs[:20]])


def test_beta_zero_is_an_autoencoder_loss_and_warmup_ramps_the_kl_weight():
    model = make("vae", beta=0.0)
    logs = model.train_step(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), torch.arange(8))
    assert logs["loss"] == logs["rec"] and logs["kl"] > 0
    warm = make("vae", beta=2.0, kl_warmup=4)
    weights = []
    for _ in range(6):
        weights.append(warm.kl_weight())
        warm.train_step(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), torch.arange(4))
    assert weights == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]


def test_temperature_scales_the_prior_and_is_checked():
    model = make("vae-mlp")
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    cold = model.sample(4, generator=gen(), temperature=1e-6)
    assert torch.equal(cold, model.sample(4, generator=torch.Generator().manual_seed(9), temperature=1e-6))
    assert not torch.equal(model.sample(4, generator=gen()), cold)
    with pytest.raises(GenlabError, match="temperature"):
        model.sample(2, temperature=0)


def test_conditional_vae_draws_the_asked_class(mnist_sample, small_extractor):
    model = make("vae", conditional=True, width=32)
    train(model, mnist_sample, 300)
    hits = []
    for cls in range(10):
        s = model.sample(50, labels=torch.full((50,), cls), generator=torch.Generator().manual_seed(cls))
        _, logits = small_extractor(s.float() / 255)
        hits.append(float((logits.argmax(1) == cls).float().mean()))
    assert np.mean(hits) > 0.5, hits  # chance is 0.1


def test_conditional_likelihood_needs_labels_and_bad_labels_are_refused():
    model = make("vae", conditional=True)
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with pytest.raises(GenlabError, match="labels"):
        model.log_likelihood(x)
    assert model.log_likelihood(x, labels=torch.arange(4)).shape == (4,)
    with pytest.raises(GenlabError, match="class numbers"):
        model.sample(2, labels=torch.tensor([0, 10]))


def test_bad_options_are_refused():
    for options, text in [({"latent_dim": 0}, "latent_dim"), ({"beta": -1.0}, "beta"),
                          ({"iw_samples": 0}, "iw_samples"), ({"temperature": 0.0}, "temperature")]:
        with pytest.raises(GenlabError, match=text):
            apply_overrides(default_config("vae"), {f"model.{k}": v for k, v in options.items()}).validate()
    with pytest.raises(GenlabError, match="labelled dataset"):
        build_model(apply_overrides(default_config("vae"), {"model.conditional": True}).model, (1, 28, 28), 1)


def test_nats_and_bits_per_dim_agree(mnist_sample):
    from genlab.metrics.evaluate import likelihood

    model = make("vae")
    train(model, mnist_sample, 10)
    test = mnist_sample.subset(100)
    out = likelihood(model, test)
    assert out["neg_elbo_nats"] >= out["nll_nats"] > 0
    assert math.isclose(out["bits_per_dim"], out["nll_nats"] / (784 * math.log(2)))
