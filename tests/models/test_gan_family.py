"""Every GAN variant in a tiny config: shapes, a finite step, a state round trip, sampling; and the
pieces (losses, gradient penalty, DiffAugment, conditioning, EMA) against their definitions."""

import copy

import numpy as np
import pytest
import torch

from genlab.config import apply_overrides, default_config
from genlab.errors import GenlabError
from genlab.models import MODELS, build_model
from genlab.models import diffaug
from genlab.models.common import to_unit
from genlab.models.gan import LOSSES, d_loss, g_loss, gradient_penalty, mode_seeking_penalty, r1_penalty
from genlab.core.runtime import Runtime, seed_everything

VARIANTS = [
    ("gan-mlp", {}),
    ("dcgan", {}),
    *[("dcgan", {"loss": loss}) for loss in LOSSES if loss != "non-saturating"],
    ("dcgan", {"conditional": True}),
    ("dcgan", {"conditional": True, "conditioning": "concat"}),
    ("gan-mlp", {"conditional": True, "conditioning": "concat", "spectral_norm": True}),
    ("dcgan", {"spectral_norm": True, "ema": 0.9, "augment": "translation,cutout,color", "d_steps": 2,
               "lr_d": 4e-4, "width": 8}),
    ("dcgan", {"minibatch_std": True, "lr_half_life": 3, "ema": 0.99, "conditional": True}),
    ("dcgan", {"r1": 1.0, "r1_every": 1, "augment": "translation", "conditional": True}),
    ("dcgan", {"lecam": 0.1, "mode_seeking": 1.0, "g_width": 12, "conditional": True, "d_steps": 2}),
    ("dcgan", {"class_norm": True, "conditional": True, "ema": 0.99}),
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


def test_r1_penalty_is_the_squared_gradient_norm_on_real_images():
    w = torch.randn(1, 4, 4)
    x = torch.rand(5, 1, 4, 4, requires_grad=True)
    score = (x * w).flatten(1).sum(1) + (x.flatten(1) ** 2).sum(1)  # grad = w + 2x per image
    expected = (w + 2 * x.detach()).flatten(1).square().sum(1).mean()
    torch.testing.assert_close(r1_penalty(score, x), expected)


def _real_gradient_norm(model, images, labels):
    x = to_unit(images).requires_grad_(True)  # as train_step shows D the real images
    grad, = torch.autograd.grad(model.D(x, labels).sum(), x)
    return float(grad.flatten(1).norm(dim=1).mean())


def test_r1_flattens_d_around_the_real_images_lazily():
    """With R1, D's gradient on the real images it trains on stays small where D without it grows
    steep; lazily (every N updates, weight times N) only those updates change, and resume keeps count."""
    images, labels = batch(n=16)
    norms = {}
    for r1 in (0.0, 10.0):
        model = make("dcgan", r1=r1, r1_every=1, conditional=True, lr=1e-3)
        for _ in range(20):
            model.train_step(images, labels)
        norms[r1] = _real_gradient_norm(model, images, labels)
    assert norms[10.0] < 0.5 * norms[0.0], norms  # measured: 0.71 against 2.18
    plain, lazy = make("dcgan", r1=0.0), make("dcgan", r1=10.0, r1_every=2)
    changed = []
    for step in range(3):
        before = [p.clone() for p in lazy.D.parameters()]
        torch.manual_seed(step)
        plain.train_step(images, labels)
        torch.manual_seed(step)
        lazy.train_step(images, labels)
        changed.append(any(not torch.equal(a, b) for a, b in zip(plain.D.parameters(), lazy.D.parameters())))
        assert any(not torch.equal(a, b) for a, b in zip(before, lazy.D.parameters()))
        if step == 0:
            # same weights again (a copy: Adam's load_state_dict keeps the very tensors it is given)
            plain.load_state_dict(copy.deepcopy(lazy.state_dict()))
    assert changed == [True, False, True]
    other = make("dcgan", r1=10.0, r1_every=2)  # the count comes back with the step count
    other.load_state_dict(copy.deepcopy(lazy.state_dict()))
    for model in (other, lazy):
        torch.manual_seed(3)
        model.train_step(images, labels)
    assert all(torch.equal(a, b) for a, b in zip(other.D.parameters(), lazy.D.parameters()))
    for bad, match in (({"r1": -1.0}, "r1 is a penalty weight >= 0"), ({"r1_every": 0}, "r1_every is a number")):
        cfg = apply_overrides(default_config("dcgan"), {f"model.{k}": v for k, v in bad.items()})
        with pytest.raises(GenlabError, match=match):
            cfg.validate()


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
    out = diffaug.cutout(torch.ones(8, 1, 16, 16), Runtime())
    zeros = (out == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 64)).all() and (zeros == 64).any()


def test_translation_moves_content_without_changing_it():
    torch.manual_seed(2)
    x = torch.zeros(16, 1, 16, 16)
    x[:, :, 7, 7] = 1
    out = diffaug.translation(x, Runtime())
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


def test_ema_warmup_lets_the_initial_weights_fade_fast():
    """With --ema-warmup step t uses decay min(ema, (1 + t) / (10 + t)): 0.1 at the first step, so the
    average is mostly the trained G at once; without it, 0.999 keeps the initial G almost whole."""
    images, labels = batch()
    for warmup, decay in ((True, 0.1), (False, 0.999)):
        model = make("dcgan", ema=0.999, ema_warmup=warmup)
        before = [p.clone() for p in model.G_ema.parameters()]
        model.train_step(images, labels)
        for b, e, g in zip(before, model.G_ema.parameters(), model.G.parameters()):
            torch.testing.assert_close(e, decay * b + (1 - decay) * g)
    cfg = apply_overrides(default_config("dcgan"), {"model.ema_warmup": True})
    with pytest.raises(GenlabError, match="--ema-warmup warms up a moving average; give its decay"):
        cfg.validate()


def test_the_average_samples_with_its_own_batchnorm_statistics():
    """G_ema's BatchNorm statistics are measured on G_ema's activations before it samples, not
    copied from G (whose weights they belong to); measuring them draws nothing from the global
    random stream, and the saved state samples like the live model."""
    model = make("dcgan", ema=0.5, conditional=True)
    images, labels = batch(n=32)
    for _ in range(5):
        model.train_step(images, labels)
    first_norm = model.G_ema.project[1]
    torch.testing.assert_close(first_norm.running_mean, model.G.project[1].running_mean)  # copied during training
    rng = torch.get_rng_state()
    samples = model.sample(16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), rng)
    assert not torch.allclose(first_norm.running_mean, model.G.project[1].running_mean)
    # the refreshed mean is G_ema's own: the mean of its projection on fresh noise and labels
    z, y = torch.randn(4096, model.latent_dim), torch.randint(10, (4096,))
    with torch.no_grad():
        pre_norm = model.G_ema.project[0](model.G_ema.cond(z, y))
    torch.testing.assert_close(first_norm.running_mean, pre_norm.mean(0), atol=0.05, rtol=0.05)
    gap_own = (first_norm.running_mean - pre_norm.mean(0)).abs().mean()
    gap_g = (model.G.project[1].running_mean - pre_norm.mean(0)).abs().mean()
    assert gap_own < gap_g / 2
    # the G being trained (what the diagnostics probe) samples differently from its average
    assert not torch.equal(model.sample(16, generator=torch.Generator().manual_seed(3), averaged=False), samples)
    # a fresh model loaded from the saved state samples the same images
    other = make("dcgan", seed=1, ema=0.5, conditional=True)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.sample(16, generator=torch.Generator().manual_seed(3)), samples)


def test_minibatch_std_sees_a_batch_of_look_alikes():
    from genlab.models.nets import MinibatchStd

    layer = MinibatchStd(group=4)
    varied = torch.randn(8, 3, 5, 5)
    same = torch.randn(1, 3, 5, 5).expand(8, 3, 5, 5)
    out_varied, out_same = layer(varied), layer(same)
    assert out_varied.shape == (8, 4, 5, 5) and torch.equal(out_varied[:, :3], varied)
    assert out_same[:, 3].max() < 1e-3 < 0.5 < out_varied[:, 3].min()  # N(0, 1) features: spread ~0.85
    # groups are images 0-3 strided: image i is grouped with i + 2, i + 4, i + 6 (ProGAN's layout)
    mixed = varied.clone()
    mixed[0::2] = same[0::2]
    spread = layer(mixed)[:, 3, 0, 0]
    assert spread[0::2].max() < 1e-3 < 0.5 < spread[1::2].min()
    # a batch that 4 does not divide is judged image by image: no spread to see
    torch.testing.assert_close(layer(torch.randn(6, 2, 4, 4))[:, 2], torch.full((6, 4, 4), 1e-4))
    model = make("dcgan", minibatch_std=True, conditional=True)
    images, labels = batch(n=8)
    assert model.D(images.float() / 127.5 - 1, labels).shape == (8,)


def test_minibatch_std_is_refused_for_the_mlp():
    cfg = apply_overrides(default_config("gan-mlp"), {"model.minibatch_std": True})
    with pytest.raises(GenlabError, match="--minibatch-std is an option of the dcgan"):
        cfg.validate()


def test_learning_rates_halve_every_half_life_and_resume():
    model = make("dcgan", lr=1e-3, lr_d=4e-3, lr_half_life=4)
    images, labels = batch()
    for _ in range(9):
        model.train_step(images, labels)  # the 9th step ran at 0.5 ** (8 / 4) of the learning rates
    assert model.opt_G.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)
    assert model.opt_D.param_groups[0]["lr"] == pytest.approx(4e-3 / 4)
    other = make("dcgan", seed=1, lr=1e-3, lr_d=4e-3, lr_half_life=4)
    other.load_state_dict(copy.deepcopy(model.state_dict()))  # a copy, as from disk: Adam keeps tensors it is given
    assert other.steps == 9
    torch.manual_seed(5)
    model.train_step(images, labels)
    torch.manual_seed(5)
    other.train_step(images, labels)
    assert other.opt_G.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 ** (9 / 4))
    for a, b in zip(model.G.parameters(), other.G.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(GenlabError, match="lr_half_life is a number of steps > 0"):
        apply_overrides(default_config("dcgan"), {"model.lr_half_life": 0}).validate()


def test_lecam_is_its_definition_and_keeps_d_from_drifting():
    """LeCam (Tseng et al. 2021): relu(D(x) - mean fake)^2 + relu(mean real - D(G(z)))^2 against
    debiased moving averages of D's mean scores; with it D's real and fake scores stay closer
    together than without it, and the averages resume with the run."""
    model = make("dcgan", lecam=1.0)
    d_real, d_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    penalty = model._lecam(d_real, d_fake)  # first batch: the averages are its own means, 0.5 and -1.25
    expected = (torch.tensor([2.0 + 1.25, -1.0 + 1.25]).square().mean() + torch.tensor([0.0, 0.5 + 3.0]).square().mean())
    torch.testing.assert_close(penalty, expected)
    images, labels = batch(n=16)
    gaps = {}
    for weight in (0.0, 10.0):
        model = make("dcgan", lecam=weight, conditional=True, lr=2e-3)
        for _ in range(30):
            logs = model.train_step(images, labels)
        gaps[weight] = abs(logs["d_real"] - logs["d_fake"])
    assert gaps[10.0] < 0.5 * gaps[0.0], gaps  # measured: 0.07 against 0.77
    other = make("dcgan", seed=1, lecam=10.0, conditional=True, lr=2e-3)
    other.load_state_dict(copy.deepcopy(model.state_dict()))
    for m in (model, other):
        torch.manual_seed(3)
        m.train_step(images, labels)
    assert torch.equal(model.lecam_anchors, other.lecam_anchors)
    assert all(torch.equal(a, b) for a, b in zip(other.D.parameters(), model.D.parameters()))
    cfg = apply_overrides(default_config("dcgan"), {"model.lecam": -1.0})
    with pytest.raises(GenlabError, match="lecam is a penalty weight >= 0"):
        cfg.validate()


def test_g_width_sizes_the_generator_alone():
    model = make("dcgan", width=8, g_width=16)
    assert model.G.start[0] == 32  # G's first map: 2 x g_width channels at 28 px
    assert sum(p.numel() for p in model.D.parameters()) == sum(p.numel() for p in make("dcgan", width=8).D.parameters())
    assert sum(p.numel() for p in model.G.parameters()) > sum(p.numel() for p in make("dcgan", width=8).G.parameters())
    for bad, match in (({"g_width": 7}, "g_width must be an even number"),
                       ({"g_width": 16, "name": "gan-mlp"}, "--g-width is an option of the dcgan")):
        cfg = apply_overrides(default_config("dcgan"), {f"model.{k}": v for k, v in bad.items()})
        with pytest.raises(GenlabError, match=match):
            cfg.validate()


def test_mode_seeking_pairs_images_of_one_class():
    """MSGAN: 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + 1e-5) over same-label pairs in the batch."""
    fake = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.5, 1.0, -1.0)])
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 4.0]])
    labels = torch.tensor([3, 5, 3, 5])  # pairs (0, 2): images 1.0 apart, z 1.0; (1, 3): 1.5 and 2.0
    expected = (1 / (1.0 / 1.0 + 1e-5) + 1 / (1.5 / 2.0 + 1e-5)) / 2
    assert float(mode_seeking_penalty(fake, z, labels)) == pytest.approx(expected)
    # unconditional: each image with the next: (0, 1), (1, 2), (2, 3)
    ratios = [0.5 / 1.0, 0.5 / 1.0, 2.0 / 3.0]
    assert float(mode_seeking_penalty(fake, z, None)) == pytest.approx(sum(1 / (r + 1e-5) for r in ratios) / 3)
    assert float(mode_seeking_penalty(fake, z, torch.tensor([0, 1, 2, 3]))) == 0.0  # no pair shares a label
    cfg = apply_overrides(default_config("dcgan"), {"model.mode_seeking": -1.0})
    with pytest.raises(GenlabError, match="mode_seeking is a weight >= 0"):
        cfg.validate()


def test_class_norm_gives_each_class_its_own_gain_and_bias():
    from genlab.models.nets import ClassBatchNorm2d

    norm = ClassBatchNorm2d(3, 4)
    with torch.no_grad():
        norm.gain[2] = torch.tensor([2.0, 0.0, 1.0])
        norm.bias[2] = torch.tensor([0.5, 1.0, -1.0])
    x, labels = torch.randn(6, 3, 5, 5), torch.tensor([2, 0, 2, 1, 3, 2])
    out = norm(x, labels)
    plain = torch.nn.functional.batch_norm(x, None, None, training=True)
    torch.testing.assert_close(out[1], plain[1])  # an untouched class: plain BatchNorm
    torch.testing.assert_close(out[0], plain[0] * torch.tensor([2.0, 0.0, 1.0])[:, None, None]
                               + torch.tensor([0.5, 1.0, -1.0])[:, None, None])
    # in a G, the label reaches the image through the norms alone when the input embedding is silenced
    model = make("dcgan", class_norm=True, conditional=True)
    with torch.no_grad():
        model.G.cond.embed.weight.zero_()
        for m in model.G.modules():
            if isinstance(m, ClassBatchNorm2d):
                m.bias[3] += 1.0
    z = torch.randn(4, model.latent_dim)
    a, b = model.decode(z, torch.full((4,), 3)), model.decode(z, torch.full((4,), 5))
    assert (a - b).abs().mean() > 0.01
    for bad in ({"class_norm": True}, {"class_norm": True, "conditional": True, "name": "gan-mlp"}):
        cfg = apply_overrides(default_config("dcgan"), {f"model.{k}": v for k, v in bad.items()})
        with pytest.raises(GenlabError, match="--class-norm is an option of a conditional dcgan"):
            cfg.validate()
