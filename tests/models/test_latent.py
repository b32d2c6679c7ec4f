"""Latent models: the first stage (kl and vq) and the two priors over it."""

import functools
import json

import pytest
import torch

from genlab.cli import main
from genlab.config import DataConfig, apply_overrides, default_config
from genlab.core.runtime import seed_everything
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.models.first_stage import (FirstStage, FirstStageSettings, get_first_stage, random_crops,
                                       reconstruction_psnr, train_first_stage)
from tests.training.test_resume import assert_same_bits

QUICK = dict(width=16, steps=60, batch_size=32)
TINY_FS = ["--first-stage-width", "16", "--first-stage-steps", "30"]
TINY = {"latent-diffusion": ["--width", "8", "--timesteps", "20", "--sample-steps", "3", *TINY_FS],
        "latent-transformer": ["--d-model", "16", "--layers", "1", "--heads", "2", "--codebook-size", "32", *TINY_FS]}


def equal_tensors(a: torch.nn.Module, b: torch.nn.Module) -> list[bool]:
    """For each tensor of two modules' states, whether they hold the same bits."""
    return [torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())]


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(dataset="mnist-sample", limit=512))


@pytest.fixture(scope="module")
def test_digits():
    return load_dataset(DataConfig(dataset="mnist-sample", split="test", limit=200))


def test_reconstructions_improve_over_a_few_hundred_steps(digits, test_digits):
    early, _ = train_first_stage(digits, FirstStageSettings(kind="kl", **{**QUICK, "steps": 20}), log=lambda *_: None)
    later, _ = train_first_stage(digits, FirstStageSettings(kind="kl", **{**QUICK, "steps": 300}), log=lambda *_: None)
    assert reconstruction_psnr(later, test_digits.images) > reconstruction_psnr(early, test_digits.images) + 2


def test_random_crops_are_slices_of_their_images_with_corners_on_the_grid():
    x = torch.arange(5 * 3 * 16 * 16, dtype=torch.float32).view(5, 3, 16, 16)
    crops = random_crops(x, 8, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 3, 8, 8)
    corners = set()
    for image, crop in zip(x, crops):
        top, left = divmod(int(crop[0, 0, 0]) % 256, 16)  # the crop's first value gives its corner
        assert top % 4 == 0 and left % 4 == 0 and torch.equal(crop, image[:, top:top + 8, left:left + 8])
        corners.add((top, left))
    assert len(corners) > 1  # not one fixed window


def test_a_first_stage_trained_on_crops_reconstructs_whole_images(digits, test_digits):
    early, _ = train_first_stage(digits, FirstStageSettings(kind="kl", crop=16, **{**QUICK, "steps": 20}),
                                 log=lambda *_: None)
    later, _ = train_first_stage(digits, FirstStageSettings(kind="kl", crop=16, **{**QUICK, "steps": 300}),
                                 log=lambda *_: None)
    assert later.reconstruct(test_digits.images[:4]).shape == (4, 1, 28, 28)
    assert later.encode(test_digits.images[:4]).shape == (4, 4, 7, 7)  # the whole image's grid
    assert reconstruction_psnr(later, test_digits.images) > reconstruction_psnr(early, test_digits.images) + 2
    for crop, why in ((18, "multiple of --downsample \\(4\\)"), (28, "from 8 to below 28"), (4, "from 8")):
        with pytest.raises(GenlabError, match=f"--first-stage-crop {crop} does not fit 28 px images.*{why}"):
            FirstStage(FirstStageSettings(crop=crop), (1, 28, 28))


def test_a_crop_that_does_not_fit_is_one_line_on_the_command_line(tmp_path, capsys):
    from tests.test_cli import one_line

    err = one_line(capsys, "train", "--model", "latent-diffusion", "--first-stage-crop", "30", "--limit", "64",
                   "--steps", "1", "--out", tmp_path / "r")
    assert "--first-stage-crop 30 does not fit 28 px images" in err and not (tmp_path / "r" / "run.json").exists()


def test_the_kl_scale_factor_gives_unit_variance(digits):
    model, _ = train_first_stage(digits, FirstStageSettings(kind="kl", **QUICK), log=lambda *_: None)
    z = model.encode(digits.images, generator=torch.Generator().manual_seed(1))
    assert z.shape[1:] == (4, 7, 7) and abs(float(z.std()) - 1) < 0.05 and float(model.scale) != 1.0


def test_vq_codes_are_used_and_dead_ones_restart(digits):
    model, record = train_first_stage(digits, FirstStageSettings(kind="vq", codebook_size=64, **QUICK),
                                      log=lambda *_: None)
    assert record["final"]["perplexity"] > 8  # codes in use, not one or two
    tokens = model.encode(digits.images[:64])
    assert tokens.shape == (64, 7, 7) and tokens.dtype == torch.int64 and len(tokens.unique()) > 8
    book = FirstStage(FirstStageSettings(kind="vq", codebook_size=16, channels=4), (1, 28, 28)).codebook
    z = torch.randn(200, 4) + 10  # far from every initial code: only one code wins at first
    gen = torch.Generator().manual_seed(0)
    restarted = sum(book.update(z, book.nearest(z), gen) for _ in range(400))
    assert restarted > 0 and len(book.nearest(z).unique()) > 1


def test_a_patch_discriminator_joins_after_a_third_of_the_steps(digits, test_digits, monkeypatch):
    from genlab.models import first_stage

    calls = []
    forward = first_stage.PatchDiscriminator.forward
    monkeypatch.setattr(first_stage.PatchDiscriminator, "forward",
                        lambda self, x: calls.append(len(x)) or forward(self, x))
    settings = dict(kind="vq", codebook_size=32, **QUICK)
    plain, _ = train_first_stage(digits, FirstStageSettings(**settings), log=lambda *_: None)
    assert calls == []  # no discriminator without --adversarial
    sharp, _ = train_first_stage(digits, FirstStageSettings(adversarial=0.2, **settings), log=lambda *_: None)
    # steps 21..60 of 60: D on the reconstructions for the autoencoder's loss, then on real and reconstructed
    assert len(calls) == 3 * (QUICK["steps"] - QUICK["steps"] // 3)
    again, _ = train_first_stage(digits, FirstStageSettings(adversarial=0.2, **settings), log=lambda *_: None)
    # seeded like the rest of the recipe; its loss moved the weights
    assert all(equal_tensors(sharp, again)) and not all(equal_tensors(sharp, plain))
    # not at the reconstructions' cost (a weight of 5 takes ~2.4 dB off at this size)
    assert reconstruction_psnr(sharp, test_digits.images) > reconstruction_psnr(plain, test_digits.images) - 1.5


def test_the_first_stage_is_cached_and_reused_not_retrained(digits, monkeypatch):
    settings = FirstStageSettings(kind="kl", **QUICK)
    first, spec = get_first_stage(digits, settings, log=lambda *_: None)
    from genlab.models import first_stage

    monkeypatch.setattr(first_stage, "train_first_stage", lambda *a, **k: pytest.fail("retrained"))
    said = []
    again, spec_again = get_first_stage(digits, settings, log=said.append)
    assert spec_again["name"] == spec["name"] and spec["name"].startswith("mnist-sample-kl-")
    assert said == [f"first stage {spec['name']} from the cache (trained once in {spec['train_seconds']:.0f} s)"]
    assert all(equal_tensors(first, again))
    assert "crop" not in spec["settings"]  # entries cached before crops existed are found as before
    with pytest.raises(pytest.fail.Exception, match="retrained"):  # crops make another first stage
        get_first_stage(digits, FirstStageSettings(kind="kl", crop=16, **QUICK), log=lambda *_: None)


def test_an_interrupted_first_stage_continues_to_the_same_bits(digits, monkeypatch, ctrl_c_raises):
    import signal

    from genlab.core.progress import UNFINISHED
    from genlab.models import first_stage
    from genlab.paths import cache_dir
    from tests.core.test_progress import interrupt_at

    settings = FirstStageSettings(kind="vq", codebook_size=32, adversarial=0.2, seed=11, **QUICK)  # D joins at 21
    whole, _ = train_first_stage(digits, settings, log=lambda *_: None)

    def power_cut():
        raise RuntimeError("power cut")

    unfinished = cache_dir() / "first_stage" / UNFINISHED
    interrupt_at(monkeypatch, 30)  # Ctrl-C
    with pytest.raises(KeyboardInterrupt, match="stopped at step 30/60; its progress is kept"):
        get_first_stage(digits, settings, log=lambda *_: None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    assert len(list(unfinished.iterdir())) == 1
    # a crash between saves: what was saved (here every step) is where the next call goes on from
    monkeypatch.undo()
    interrupt_at(monkeypatch, 45, power_cut)
    monkeypatch.setattr(first_stage, "train_first_stage", functools.partial(train_first_stage, save_every=0.0))
    said = []
    with pytest.raises(RuntimeError, match="power cut"):
        get_first_stage(digits, settings, log=said.append)
    assert any("continuing the first stage (vq) from step 30/60" in line for line in said)
    monkeypatch.undo()
    said.clear()
    resumed, spec = get_first_stage(digits, settings, log=said.append)
    assert any("from step 44/60" in line for line in said)
    assert all(equal_tensors(whole, resumed))  # as if never interrupted
    assert list(unfinished.iterdir()) == [] and spec["name"].startswith("mnist-sample-vq-")


def test_training_a_first_stage_leaves_the_global_random_stream_as_it_was(digits):
    settings = FirstStageSettings(kind="vq", seed=7, **QUICK)  # a cold cache entry: trained now
    torch.manual_seed(123)
    before = torch.get_rng_state()
    get_first_stage(digits, settings, log=lambda *_: None)
    assert torch.equal(torch.get_rng_state(), before)  # a run is the same with a cold or a warm cache


def latent_model(name, shape=(1, 28, 28), classes=10, seed=0, **options):
    seed_everything(seed)
    cfg = apply_overrides(default_config(name), {f"model.{k}": v for k, v in options.items()}).model
    return build_model(cfg, shape, classes)


def test_a_prior_refuses_a_state_made_with_another_first_stage(digits, test_digits):
    a = latent_model("latent-diffusion", width=8, first_stage_width=16, first_stage_steps=30)
    a.prepare(digits, test_digits, log=lambda *_: None)
    b = latent_model("latent-diffusion", width=8, first_stage_width=16, first_stage_steps=31)
    b.prepare(digits, test_digits, log=lambda *_: None)
    with pytest.raises(GenlabError, match="trained on the first stage .* not .*a prior means nothing"):
        b.load_state_dict(a.state_dict())
    fresh = latent_model("latent-diffusion", width=8, first_stage_width=16, first_stage_steps=30)
    fresh.load_state_dict(a.state_dict())  # a model that has no first stage yet takes the state's
    with pytest.raises(GenlabError, match="no first stage yet"):
        latent_model("latent-diffusion").train_step(digits.images[:4], digits.labels[:4])


def test_latent_transformer_cached_sampling_equals_uncached(digits, test_digits):
    model = latent_model("latent-transformer", d_model=16, layers=1, heads=2, codebook_size=32,
                         first_stage_width=16, first_stage_steps=30, conditional=True)
    model.prepare(digits, test_digits, log=lambda *_: None)
    model.train_step(digits.images[:16], digits.labels[:16])
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    labels = torch.tensor([1, 2, 3])
    assert torch.equal(model.sample(3, labels, gen()), model.sample(3, labels, gen(), cache=False))
    nll = model.log_likelihood(test_digits.images[:4], test_digits.labels[:4])
    assert nll.shape == (4,) and (nll < 0).all() and "not a likelihood of the pixels" in model.likelihood_convention.lower()


def test_latent_diffusion_guidance_zero_is_the_unconditional_model(digits, test_digits):
    model = latent_model("latent-diffusion", width=8, timesteps=20, sample_steps=3, first_stage_width=16,
                         first_stage_steps=30, conditional=True)
    model.prepare(digits, test_digits, log=lambda *_: None)
    model.train_step(digits.images[:16], digits.labels[:16])
    x_t = torch.randn(4, *model.space_shape, generator=torch.Generator().manual_seed(5))  # in latent space:
    t = torch.full((4,), 12)  # a 30-step first stage decodes everything to nearly the same picture
    unconditional, _ = model.predict(x_t, t, torch.tensor([0, 1, 2, 3]), guidance=0.0)
    assert torch.equal(unconditional, model.predict(x_t, t, torch.tensor([9, 9, 5, 5]), guidance=0.0)[0])
    assert not torch.equal(unconditional, model.predict(x_t, t, torch.tensor([9, 9, 5, 5]), guidance=2.0)[0])
    assert model.sample(2, torch.tensor([1, 2]), guidance=0.0).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("name", sorted(TINY))
def test_attached_training_images_are_encoded_once_not_at_every_step(name, digits, test_digits):
    prior = dict(width=8, timesteps=20) if name == "latent-diffusion" else dict(d_model=16, layers=1, heads=2,
                                                                                 codebook_size=32)
    model = latent_model(name, first_stage_width=16, first_stage_steps=30, **prior)
    model.prepare(digits, test_digits, log=lambda *_: None)
    first_stage = model.slot.model
    batch = digits.images[100:116]
    torch.manual_seed(4)
    fresh = model.latents(batch)  # nothing attached yet: encoded now
    model.attach(digits, log=lambda *_: None)
    assert len(model.encodings) == len(digits)
    calls = []
    first_stage.encoder.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(4)
    found = model.latents(batch)  # the same draw from the codes computed at attach
    if name == "latent-diffusion":
        assert found.shape == fresh.shape and torch.allclose(found, fresh, atol=1e-5)
    else:
        assert found.dtype == torch.int64 and torch.equal(found, fresh)
    model.train_step(batch, digits.labels[100:116])
    assert calls == []  # the step found its batch's codes
    model.latents(test_digits.images[:4])  # images it was not given are encoded now
    assert calls == [1]


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_latent_run_resumes_to_the_same_bits_and_records_its_first_stage(name, tmp_path):
    common = ["--model", name, "--limit", "128", "--batch-size", "16", "--no-progress", "--device", "cpu",
              "--grid-size", "4", "--checkpoint-every", "100", *TINY[name]]
    assert main(["train", "--steps", "8", "--out", str(tmp_path / "whole"), *common]) == 0
    assert main(["train", "--steps", "3", "--out", str(tmp_path / "split"), *common]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--steps", "8"]) == 0
    assert_same_bits(tmp_path / "whole", tmp_path / "split")
    meta = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert meta["prepared"]["name"].startswith("mnist-sample-") and len(meta["prepared"]["sha256"]) == 64
    assert {p.stem for p in (tmp_path / "whole" / "samples").glob("view-*.png")} >= {"view-reconstructions"}


def test_a_budget_spent_on_the_first_stage_is_said_not_passed_off_as_a_finished_run(tmp_path, capsys):
    common = ["--model", "latent-diffusion", "--limit", "128", "--batch-size", "16", "--no-progress", "--device",
              "cpu", "--grid-size", "4", *TINY["latent-diffusion"]]
    assert main(["train", "--minutes", "0.0001", "--out", str(tmp_path / "spent"), *common]) == 0
    err = capsys.readouterr().err
    assert "all of the 0.0001-minute budget, so the model gets no training step" in err and "--minutes over" in err
    assert json.loads((tmp_path / "spent" / "run.json").read_text())["steps"] == 0
    assert main(["train", "--minutes", "5", "--steps", "2", "--out", str(tmp_path / "trained"), *common]) == 0
    assert "budget" not in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 64, 64)])
def test_shapes_for_one_and_three_channels(name, shape, digits):
    options = {"first_stage_width": 16, "first_stage_steps": 20}
    if name == "latent-diffusion":
        options.update(width=8, timesteps=20, sample_steps=2)
    else:
        options.update(d_model=16, layers=1, heads=2, codebook_size=16)
    model = latent_model(name, shape=shape, **options)
    data = type(digits)(torch.randint(0, 256, (40, *shape), dtype=torch.uint8), torch.zeros(40), "noise")
    model.prepare(data, None, log=lambda *_: None)
    model.train_step(data.images[:8], data.labels[:8])
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *shape)
