"""The pixel Transformer: causality, the key/value cache against the uncached reference, the exact
likelihood, and that it learns (tiny widths and 8x8 images, so each test takes a second or less)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlab.config import apply_overrides, default_config
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.core.runtime import seed_everything

SHAPE = (1, 8, 8)


def make(shape=SHAPE, seed=0, num_classes=10, **options):
    seed_everything(seed)
    overrides = {f"model.{k}": v for k, v in {"d_model": 16, "layers": 2, "heads": 2, **options}.items()}
    return build_model(apply_overrides(default_config("transformer"), overrides).model, shape, num_classes)


def patterns(n=64, seed=0):
    """Two classes of 8x8 images: class 0 bright in the top half, class 1 in the bottom half, with noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
    for i, y in enumerate(labels):
        rows = slice(0, 4) if y == 0 else slice(4, 8)
        x[i, :, rows] += 180
    return x.to(torch.uint8), labels


@pytest.mark.parametrize("options", [{}, {"positional": "sinusoidal"}, {"conditional": True, "levels": 256},
                                     {"levels": 2, "top_k": 1}, {"dropout": 0.1}], ids=str)
def test_steps_samples_and_round_trips(options):
    model = make(**options)
    images, labels = patterns(8)
    logs = model.train_step(images, labels)
    assert all(np.isfinite(v) for v in logs.values())
    s = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, *SHAPE) and s.dtype == torch.uint8
    other = make(seed=1, **options)
    other.load_state_dict(model.state_dict())
    assert torch.equal(s, other.sample(5, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 28, 28)], ids=str)
def test_channels_and_sizes(shape):
    model = make(shape=shape)
    model.train_step(torch.randint(0, 256, (2, *shape), dtype=torch.uint8), torch.arange(2))
    assert model.sample(1).shape == (1, *shape)


def test_changing_pixel_i_never_changes_the_predictions_up_to_i():
    model = make()
    model.net.eval()
    x = torch.randint(0, 256, (1, *SHAPE), dtype=torch.uint8)
    tokens = model.tokens(x)
    base = model.net(model._inputs(tokens, None))
    for i in (0, 5, 31, 62):
        changed = tokens.clone()
        changed[0, i] = (changed[0, i] + 7) % 16
        out = model.net(model._inputs(changed, None))
        assert torch.equal(out[0, :i + 1], base[0, :i + 1])  # pixels 0..i are predicted before pixel i is seen
        assert not torch.allclose(out[0, i + 1:], base[0, i + 1:])  # and the later ones do see it


@pytest.mark.parametrize("options", [{}, {"conditional": True}, {"positional": "sinusoidal", "levels": 256}], ids=str)
def test_cached_and_uncached_sampling_agree_at_every_step(options):
    model = make(**options)
    for _ in range(3):
        model.train_step(*patterns(16))
    labels = torch.tensor([0, 1, 1]) if options.get("conditional") else None
    a, logits_a = model.generate(3, labels, torch.Generator().manual_seed(4), cache=True, record=True)
    b, logits_b = model.generate(3, labels, torch.Generator().manual_seed(4), cache=False, record=True)
    assert torch.equal(a, b)
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    # and the recorded logits are those of the teacher-forced pass over the finished sequence
    full = model.net(model._inputs(a, labels))
    assert torch.allclose(full, logits_a, atol=1e-5)


def test_nll_is_exactly_the_sum_of_the_pixel_cross_entropies():
    model = make(levels=256)
    x = torch.randint(0, 256, (4, *SHAPE), dtype=torch.uint8)
    logits = model.net(model._inputs(model.tokens(x), None))
    ce = F.cross_entropy(logits.reshape(-1, 256), model.tokens(x).reshape(-1), reduction="none").view(4, -1)
    assert torch.allclose(model.log_likelihood(x), -ce.sum(1).double(), atol=1e-3)
    assert (model.log_likelihood(x) < 0).all()
    # an untrained model is close to uniform over the levels: about T * log(256) nats
    assert abs(float(-model.log_likelihood(x).mean()) / (64 * math.log(256)) - 1) < 0.1


def test_loss_drops_on_a_tiny_dataset():
    model = make(lr=3e-3)
    images, labels = patterns(32)
    losses = [model.train_step(images, labels)["loss"] for _ in range(150)]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_the_conditional_variant_follows_its_label():
    model = make(conditional=True, lr=3e-3)
    images, labels = patterns(64)
    for _ in range(200):
        model.train_step(images, labels)
    for cls, bright in ((0, slice(0, 4)), (1, slice(4, 8))):
        s = model.sample(20, labels=torch.full((20,), cls), generator=torch.Generator().manual_seed(cls)).float()
        dark = slice(4, 8) if cls == 0 else slice(0, 4)
        follows = (s[:, :, bright].mean((1, 2, 3)) > s[:, :, dark].mean((1, 2, 3)) + 50).float().mean()
        assert follows >= 0.75  # an unconditional model would follow either label about half the time


def test_quantisation_and_levels():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    model = make(shape=(1, 16, 16), levels=256)
    assert torch.equal(model.images(model.tokens(x)), x)  # 256 levels: lossless
    model = make(shape=(1, 16, 16), levels=2)
    assert model.tokens(x).unique().tolist() == [0, 1] and int(model.tokens(x)[0, 127]) == 0 \
        and int(model.tokens(x)[0, 128]) == 1
    assert model.images(model.tokens(x)).unique().tolist() == [64, 192]  # bin centres (63.5 and 191.5, rounded half to even)


def test_temperature_top_k_and_bad_sampling_options():
    model = make()
    greedy = [model.sample(2, generator=torch.Generator().manual_seed(s), top_k=1) for s in (0, 1)]
    assert torch.equal(*greedy)  # top-1 is greedy decoding: the seed no longer matters
    for kwargs, text in [({"temperature": 0}, "temperature"), ({"top_k": 17}, "top_k")]:
        with pytest.raises(GenlabError, match=text):
            model.sample(1, **kwargs)
    with pytest.raises(GenlabError, match="divide"):
        apply_overrides(default_config("transformer"), {"model.heads": 3}).validate()
    with pytest.raises(GenlabError, match="labels"):
        make(conditional=True).log_likelihood(torch.zeros(1, *SHAPE, dtype=torch.uint8))


def guided_model(steps=200):
    model = make(conditional=True, label_dropout=0.3, lr=3e-3)
    images, labels = patterns(64)
    for _ in range(steps):
        model.train_step(images, labels)
    return model


def test_guided_logits_are_the_unconditional_ones_pushed_toward_the_class():
    model = guided_model(steps=5)
    labels = torch.tensor([0, 1, 1])
    a, logits_a = model.generate(3, labels, torch.Generator().manual_seed(4), record=True, guidance=2.5)
    b, logits_b = model.generate(3, labels, torch.Generator().manual_seed(4), cache=False, record=True, guidance=2.5)
    assert torch.equal(a, b) and torch.allclose(logits_a, logits_b, atol=1e-5)
    # teacher-forced over the finished sequences, once from the class tokens and once from "no class"
    cond = model.net(model._inputs(a, labels))
    null = model._inputs(a, labels)
    null[:, 0] = model.null_start
    uncond = model.net(null)
    assert torch.allclose(logits_a, uncond + 2.5 * (cond - uncond), atol=1e-4)
    # guidance 0 is the unconditional model: the labels no longer matter
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(model.sample(4, labels=torch.tensor([0, 0, 1, 1]), generator=gen(), guidance=0.0),
                       model.sample(4, labels=torch.tensor([1, 1, 0, 0]), generator=gen(), guidance=0.0))
    assert not torch.equal(model.sample(4, labels=torch.tensor([0, 0, 1, 1]), generator=gen(), guidance=2.0),
                           model.sample(4, labels=torch.tensor([1, 1, 0, 0]), generator=gen(), guidance=2.0))


def test_label_dropout_teaches_the_mixture_and_guidance_follows_the_label():
    model = guided_model()
    images, labels = patterns(64)
    targets = model.tokens(images)
    with_class = model._inputs(targets, labels)
    without = with_class.clone()
    without[:, 0] = model.null_start
    with torch.no_grad():
        ce = [F.cross_entropy(model.net(x).reshape(-1, 16), targets.reshape(-1)).item() for x in (with_class, without)]
    assert ce[1] < 1.15 * ce[0]  # the "no class" token was trained too (left untrained: over 2x)

    def top_bright(s):  # how many images are bright at the top (a count: no float rounding at the bounds)
        return int((s[:, :, :4].mean((1, 2, 3)) > s[:, :, 4:].mean((1, 2, 3))).sum())

    free = model.sample(60, labels=torch.zeros(60, dtype=torch.int64), generator=torch.Generator().manual_seed(0),
                        guidance=0.0).float()
    assert 12 <= top_bright(free) <= 48  # without its class the model draws both kinds (20-80 %)
    for cls in (0, 1):
        s = model.sample(30, labels=torch.full((30,), cls), generator=torch.Generator().manual_seed(cls),
                         guidance=3.0).float()
        assert abs(top_bright(s) - 30 * (1 - cls)) <= 3  # at most 10 % of the other kind


def test_guidance_needs_a_model_trained_without_labels_sometimes():
    for plain in (make(conditional=True), make()):  # not offered guidance, and told how to train one that is
        assert not hasattr(plain.sampling_defaults(), "guidance")
        with pytest.raises(GenlabError, match="takes no guidance.*--label-dropout"):
            plain.sample(2, guidance="2")
    assert make(conditional=True, label_dropout=0.1).sampling_defaults().guidance == 1.0
    for overrides, text in [({"model.label_dropout": 0.1}, "--conditional"),
                            ({"model.conditional": True, "model.guidance": 3.0}, "label-dropout"),
                            ({"model.conditional": True, "model.label_dropout": 1.0}, r"\[0, 1\)"),
                            ({"model.conditional": True, "model.label_dropout": 0.1, "model.guidance": -1.0}, ">= 0")]:
        with pytest.raises(GenlabError, match=text):
            apply_overrides(default_config("transformer"), overrides).validate()
    model = make(conditional=True, label_dropout=0.1)
    assert model.net.embed.num_embeddings == 16 + 10 + 1  # levels, the class tokens, "no class"
    assert make(conditional=True).net.embed.num_embeddings == 16 + 10  # as before: old checkpoints load
