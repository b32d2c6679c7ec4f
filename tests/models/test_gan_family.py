"""Every GAN variant in a tiny config: shapes, a finite step, a state round trip, sampling; and the
pieces (losses, gradient penalty, DiffAugment, conditioning, EMA) against their definitions."""

import numpy as np
import pytest
import torch

from genlab.config import apply_overrides, default_config
from genlab.errors import GenlabError
from genlab.models import MODELS, build_model
from genlab.models import diffaug
from genlab.models.gan import LOSSES, d_loss, g_loss, gradient_penalty
from genlab.train.loop import seed_everything

VARIANTS = [
    ("gan-mlp", {}),
    ("dcgan", {}),
    *[("dcgan", {"loss": loss}) for loss in LOSSES if loss != "non-saturating"],
    ("dcgan", {"conditional": True}),
    ("dcgan", {"conditional": True, "conditioning": "concat"}),
    ("gan-mlp", {"conditional": True, "conditioning": "concat", "spectral_norm": True}),
    ("dcgan", {"spectral_norm": True, "ema": 0.9, "augment": "translation,cutout,color", "d_steps": 2,
               "lr_d": 4e-4, "width": 8}),
]


def make(name, shape=(1, 28, 28), seed=0, **options):
    seed_everything(seed)
    overrides = {f"model.{k}": v for k, v in {"width": 8, **options}.items()}
    cfg = apply_overrides(default_config(name), overrides).model
    return build_model(cfg, shape, 10)


def batch(shape=(1, 28, 28), n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8), torch.arange(n) % 10


@pytest.mark.parametrize("name, options", VARIANTS, ids=lambda v: str(v))
def test_every_variant_steps_samples_and_round_trips(name, options):
    model = make(name, **options)
    images, labels = batch()
    logs = model.train_step(images, labels)
    assert all(np.isfinite(v) for v in logs.values()), logs
    s = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert s.shape == (6, 1, 28, 28) and s.dtype == torch.uint8
    other = make(name, seed=1, **options)
    other.load_state_dict(model.state_dict())
    again = other.sample(6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 32, 32), (3, 28, 28)])
def test_dcgan_sizes_and_channels(shape):
    model = make("dcgan", shape=shape)
    images, labels = batch(shape)
    model.train_step(images, labels)
    assert model.sample(2).shape == (2, *shape)


def test_dcgan_refuses_sizes_it_cannot_make():
    with pytest.raises(GenlabError, match="side divisible by 4"):
        make("dcgan", shape=(1, 30, 30))


def test_registry_has_both_architectures():
    assert {"gan-mlp", "dcgan"} <= set(MODELS)


def test_losses_against_their_definitions():
    r, f = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    torch.testing.assert_close(d_loss(r, f, "hinge"), torch.relu(1 - r).mean() + torch.relu(1 + f).mean())
    torch.testing.assert_close(g_loss(f, "hinge"), -f.mean())
    torch.testing.assert_close(d_loss(r, f, "least-squares"), 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean())
    torch.testing.assert_close(g_loss(f, "least-squares"), 0.5 * ((f - 1) ** 2).mean())
    torch.testing.assert_close(d_loss(r, f, "wgan-gp"), f.mean() - r.mean())
    torch.testing.assert_close(g_loss(f, "wgan-gp"), -f.mean())


class Recorder(torch.nn.Module):
    """A linear critic D(x) = <w, x> with ||w|| = 1 that remembers what it was called with."""

    def __init__(self, dims):
        super().__init__()
        w = torch.randn(dims)
        self.w = torch.nn.Parameter(w / w.norm())
        self.seen = None

    def forward(self, x, labels=None):
        self.seen = x.detach()
        return (x.flatten(1) * self.w).sum(1)


def test_gradient_penalty_uses_one_epsilon_per_sample():
    real, fake = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    D = Recorder(16)
    gp = gradient_penalty(D, real, fake, None)
    assert float(gp) == pytest.approx(0.0, abs=1e-10)  # a 1-Lipschitz linear critic has no penalty
    eps = (D.seen - fake) / (real - fake)  # x_hat = eps real + (1 - eps) fake
    per_sample = eps.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))  # constant over pixels
    assert per_sample[:, 0].unique().numel() == 5  # and different between samples


def test_diffaugment_keeps_shape_and_gradients():
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1
    x.requires_grad_(True)
    torch.manual_seed(0)
    out = diffaug.augment(x, ("translation", "cutout", "color"))
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cutout_zeroes_a_square_of_half_the_side():
    torch.manual_seed(1)
    out = diffaug.cutout(torch.ones(8, 1, 16, 16))
    zeros = (out == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 64)).all() and (zeros == 64).any()


def test_translation_moves_content_without_changing_it():
    torch.manual_seed(2)
    x = torch.zeros(16, 1, 16, 16)
    x[:, :, 7, 7] = 1
    out = diffaug.translation(x)
    assert (out.flatten(1).sum(1) == 1).all()  # the dot stays whole (shifts of <= 2 px stay inside)
    assert (out[:, 0, 7, 7] == 0).any()  # and some images moved


def test_conditional_sampling_follows_the_labels():
    model = make("gan-mlp", conditional=True)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample(3, labels=torch.tensor([1, 1, 1]), generator=gen())
    b = model.sample(3, labels=torch.tensor([2, 2, 2]), generator=gen())
    assert not torch.equal(a, b)  # same noise, other class, other images
    with pytest.raises(GenlabError, match="labels must be 3 class numbers in 0..9"):
        model.sample(3, labels=torch.tensor([1, 2, 10]))


def test_conditional_needs_labels():
    seed_everything(0)
    cfg = apply_overrides(default_config("gan-mlp"), {"model.conditional": True}).model
    with pytest.raises(GenlabError, match="--conditional needs a labelled dataset"):
        build_model(cfg, (1, 28, 28), 1)


def test_ema_tracks_g_slowly():
    model = make("dcgan", ema=0.5)
    images, labels = batch()
    before = [p.clone() for p in model.G_ema.parameters()]
    model.train_step(images, labels)
    for b, e, g in zip(before, model.G_ema.parameters(), model.G.parameters()):
        torch.testing.assert_close(e, 0.5 * b + 0.5 * g)  # one lerp step with decay 0.5
    assert model.nets()["G_ema"] is model.G_ema
