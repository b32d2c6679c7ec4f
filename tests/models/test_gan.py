import pytest
import torch

from genlab.config import apply_overrides, default_config
from genlab.models import MODELS, build_model, register_model
from genlab.models.gan import GanMlp, GanMlpConfig, d_loss, g_loss
from genlab.core.runtime import seed_everything
from tests.conftest import weights_of


def tutorial_gan(seed=0, **overrides):
    seed_everything(seed)
    cfg = apply_overrides(default_config(), {f"model.{k}": v for k, v in overrides.items()}).model
    return build_model(cfg, (1, 28, 28), 10)


def test_the_tutorial_architecture_exactly():
    gan = tutorial_gan()
    g = [(m.in_features, m.out_features) for m in gan.G.net if isinstance(m, torch.nn.Linear)]
    d = [(m.in_features, m.out_features) for m in [*gan.D.net, gan.D.head.out] if isinstance(m, torch.nn.Linear)]
    assert g == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert d == [(784, 512), (512, 256), (256, 1)]
    assert isinstance(gan.G.net[-1], torch.nn.Tanh)
    slopes = {m.negative_slope for net in (gan.G.net, gan.D.net) for m in net if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}
    for opt in (gan.opt_G, gan.opt_D):
        assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.5, 0.999)


def test_shapes_and_ranges():
    gan = tutorial_gan()
    x = gan.G(torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert gan.D(x).shape == (5,)
    s = gan.sample(7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, 1, 28, 28) and s.dtype == torch.uint8
    assert len(torch.unique(s)) > 20  # a spread of grey levels, not a constant image


def test_losses_are_the_tutorial_formulas():
    logits_real, logits_fake = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    dx, dgz = torch.sigmoid(logits_real), torch.sigmoid(logits_fake)
    torch.testing.assert_close(d_loss(logits_real, logits_fake), -(dx.log() + (1 - dgz).log()).mean())
    torch.testing.assert_close(g_loss(logits_fake, "non-saturating"), -dgz.log().mean())
    torch.testing.assert_close(g_loss(logits_fake, "minimax"), (1 - dgz).log().mean())


def test_losses_stay_finite_when_d_saturates():
    sure = torch.tensor([80.0, -80.0])  # sigmoid rounds to exactly 1 and 0 in float32
    assert torch.isfinite(d_loss(sure, -sure)) and torch.isfinite(g_loss(-sure, "non-saturating"))


def test_a_step_changes_both_nets_and_reports_finite_logs(mnist_sample):
    gan = tutorial_gan()
    before = weights_of(gan)
    logs = gan.train_step(mnist_sample.images[:32], mnist_sample.labels[:32])
    assert set(logs) == {"loss_d", "loss_g", "d_real", "d_fake", "d_acc", "grad_norm_d", "grad_norm_g"}
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1
    after = weights_of(gan)
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_sampling_is_repeatable_for_a_seed():
    gan = tutorial_gan()
    a = gan.sample(4, generator=torch.Generator().manual_seed(3))
    b = gan.sample(4, generator=torch.Generator().manual_seed(3))
    c = gan.sample(4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_state_dict_round_trip(mnist_sample):
    gan = tutorial_gan(seed=1)
    gan.train_step(mnist_sample.images[:16], None)
    other = tutorial_gan(seed=2)
    other.load_state_dict(gan.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(weights_of(gan).values(), weights_of(other).values()))
    assert other.opt_G.state_dict()["state"][0]["step"] == 1


def data_stats(images):
    x = images.float() / 255
    return x.mean(0), torch.histc(x, bins=16, min=0, max=1) / x.numel()


def distance_to(gan, real_mean, real_hist):
    mean, hist = data_stats(gan.sample(1000, generator=torch.Generator().manual_seed(1)))
    return (mean - real_mean).abs().mean().item(), 0.5 * (hist - real_hist).abs().sum().item()


def test_training_brings_samples_closer_to_the_data(mnist_sample):
    """A few hundred steps on 1,000 real digits: the samples' mean image and pixel histogram
    move measurably towards the data's (the histogram in total-variation distance). The tutorial's
    game oscillates (its distances swing by 2x from one hundred steps to the next, and where the
    swing lands depends on the thread count), so the closest of three checkpoints is judged."""
    data = mnist_sample.subset(1000)
    real_mean, real_hist = data_stats(data.images)
    gan = tutorial_gan(seed=0)
    mean0, hist0 = distance_to(gan, real_mean, real_hist)
    order = torch.Generator().manual_seed(0)
    checkpoints = []
    for step in range(1, 301):
        idx = torch.randint(0, len(data), (64,), generator=order)
        gan.train_step(data.images[idx], data.labels[idx])
        if step % 100 == 0:
            checkpoints.append(distance_to(gan, real_mean, real_hist))
    mean1, hist1 = min(c[0] for c in checkpoints), min(c[1] for c in checkpoints)
    assert mean1 < 0.5 * mean0, (mean0, checkpoints)
    assert hist1 < 0.8 * hist0, (hist0, checkpoints)


def test_register_model_checks_the_family_interface():
    class NoSample:
        def train_step(self, images, labels): ...
        def state_dict(self): ...
        def load_state_dict(self, state): ...

    with pytest.raises(TypeError, match="lacks sample"):
        register_model("broken", NoSample, GanMlpConfig, "x")
    with pytest.raises(ValueError, match="must default to 'other'"):
        register_model("other", GanMlp, GanMlpConfig, "x")
    with pytest.raises(ValueError, match="already registered"):
        register_model("gan-mlp", GanMlp, GanMlpConfig, "x")
    assert list(MODELS) == ["gan-mlp", "dcgan", "vae", "vae-mlp", "transformer", "diffusion",
                            "flow", "latent-diffusion", "latent-flow", "latent-transformer"]  # nothing half-added


def test_minimax_generator_loss_option():
    gan = tutorial_gan(loss="minimax")
    assert gan.config.loss == "minimax"
    assert isinstance(gan.config, GanMlpConfig)
