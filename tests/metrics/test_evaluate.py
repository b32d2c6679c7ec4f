import collections
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.config import DataConfig
from genlab.data import DATASETS, ImageSet, load_dataset
from genlab.errors import GenlabError
from genlab.metrics import evaluate as E
from genlab.metrics import reference
from genlab.metrics.model_metrics import ppl
from genlab.metrics.samples import load_samples_file, prepare_samples
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def test_digits():
    """The 1,000 held-out digits, shuffled (the split is stored sorted by class)."""
    test = load_dataset(DataConfig(dataset="mnist-sample", split="test"))
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    return ImageSet(test.images[perm], test.labels[perm], test.name, test.class_names)


def ev(images, extractor, **kw):
    return E.evaluate(images, dataset="mnist-sample", features=extractor.path, log=lambda *_: None, **kw)


def test_real_digits_score_like_the_floor_and_noise_scores_badly(small_extractor, test_digits):
    real = ev(test_digits.images[:500], small_extractor)
    m = real["metrics"]
    assert real["features"] == small_extractor.name and real["n"] == 500
    assert set(m) == {"fid", "kid", "is", "precision", "recall", "density", "coverage", "classes_found", "class_tv",
                      "fid_heldout", "precision_heldout", "recall_heldout", "data_copying"}
    assert m["fid"]["value"] == pytest.approx(m["fid"]["floor"], rel=0.5)
    assert m["classes_found"]["value"] == 10 and m["class_tv"]["value"] < 0.1
    assert m["fid"]["better"] == "lower" and m["recall"]["better"] == "higher"

    noise = torch.randint(0, 256, (500, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    bad = ev(noise, small_extractor)["metrics"]
    assert bad["fid"]["value"] > 10 * m["fid"]["value"]
    assert bad["precision"]["value"] < 0.05 and bad["recall"]["value"] < 0.05


def test_a_mix_of_classes_far_from_the_datas_is_told(small_extractor, test_digits):
    """Held-out digits of classes 0-4 only: real images, so FID alone would not say why they score
    worse; the warning names the mix. All ten classes: no warning."""
    half = test_digits.images[test_digits.labels < 5][:500]
    out = ev(half, small_extractor)
    told = [w for w in out["warnings"] if "mix of classes is far from the data's" in w]
    assert len(told) == 1 and "see classes_found" in told[0] and "--labels data" not in told[0]
    assert f"class TV {out['metrics']['class_tv']['value']:.2f}" in told[0]
    assert "mix of classes" in E.format_table(out)
    assert not any("mix of classes" in w for w in ev(test_digits.images[:500], small_extractor)["warnings"])


def test_equal_shares_drawn_from_unbalanced_data_are_told_apart_from_dropped_classes():
    names = ["people", "animals", "flags", "food"]
    data = torch.tensor([600, 200, 100, 100])
    equal = E.class_mix_warning([0.25, 0.25, 0.25, 0.25], data, names)
    assert len(equal) == 1 and "genlab sample RUN --labels data" in equal[0]
    assert "people: 25% of the samples, 60% of the data" in equal[0]
    assert "flags: 25% of the samples, 10% of the data" in equal[0] or "food: 25%" in equal[0]
    dropped = E.class_mix_warning([1.0, 0.0, 0.0, 0.0], data, names)
    assert len(dropped) == 1 and "see classes_found" in dropped[0] and "--labels data" not in dropped[0]
    assert E.class_mix_warning([0.55, 0.22, 0.12, 0.11], data, names) == []  # TV 0.05: near enough


def test_reference_statistics_are_cached(small_extractor, test_digits, monkeypatch):
    ev(test_digits.images[:100], small_extractor)
    cached = {p.name: p.stat().st_mtime_ns for p in small_extractor.path.iterdir()}
    assert {"reference.safetensors", "radii-100.safetensors", "floors-100-100.safetensors"} <= set(cached)
    monkeypatch.setattr(reference, "split_reference", lambda *a: pytest.fail("recomputed the reference"))
    out = ev(test_digits.images[100:200], small_extractor)
    assert out["metrics"]["fid"]["floor"] is not None
    assert {p.name: p.stat().st_mtime_ns for p in small_extractor.path.iterdir()} == cached


def test_more_samples_than_the_floor_are_also_scored_at_the_floors_n(small_extractor, mnist_sample):
    """mnist-sample holds out 1,000 images: the floor scores 1,000 and FID's bias falls as 1/N, so
    2,000 real training digits score a lower FID than the first 1,000 of them. fid_equal_n is the
    one compared with the floor at equal N; with no more samples than the floor it is not shown."""
    many = ev(mnist_sample.images[:2000], small_extractor)
    m = many["metrics"]
    assert many["floor_n"] == 1000 and many["n"] == 2000
    assert m["fid_equal_n"]["floor"] == m["fid"]["floor"] and m["fid_equal_n"]["better"] == "lower"
    assert m["fid_equal_n"]["value"] > 1.2 * m["fid"]["value"]
    first = ev(mnist_sample.images[:1000], small_extractor)["metrics"]
    assert "fid_equal_n" not in first
    assert m["fid_equal_n"]["value"] == pytest.approx(first["fid"]["value"], rel=1e-6)
    assert "as many as its floor" in E.format_table(many)


class ConstantModel:
    latent_dim = 4
    conditional_classes = None

    def decode(self, z, labels=None):
        return torch.full((len(z), 1, 28, 28), 0.0)  # [-1, 1]: mid-grey


class LikelihoodModel(ConstantModel):
    likelihood_convention = "a constant, for the test"
    likelihood_dims = 784

    def sample(self, n, labels=None, generator=None):
        return torch.zeros(n, 1, 28, 28, dtype=torch.uint8)

    def log_likelihood(self, images):
        return torch.full((len(images),), -100.0)


def test_ppl_of_a_constant_model_is_zero(small_extractor):
    assert ppl(ConstantModel(), small_extractor, n=50) == 0.0
    assert ppl(object(), small_extractor) is None  # no latent space, no PPL


def test_ppl_of_a_gan_is_positive(small_extractor):
    from tests.models.test_gan import tutorial_gan

    value = ppl(tutorial_gan(), small_extractor, n=100)
    assert math.isfinite(value) and value > 0


def test_likelihood_in_nats_and_bits_per_dim(small_extractor, test_digits):
    out = ev(test_digits.images[:50], small_extractor, model=LikelihoodModel(), ppl_samples=20)
    m = out["metrics"]
    assert m["nll_nats"]["value"] == pytest.approx(100.0)
    assert m["bits_per_dim"]["value"] == pytest.approx(100.0 / (784 * math.log(2)))
    assert m["ppl"]["value"] == 0.0


class IdentityAutoencoder(LikelihoodModel):
    """An Encoder whose reconstructions are its inputs, or blank with `blank`."""

    def __init__(self, blank=False):
        self.blank = blank

    def encode(self, images, labels=None):
        return images.flatten(1).float()

    def reconstruct(self, images, labels=None):
        return torch.zeros_like(images) if self.blank else images.clone()


def test_reconstructions_are_scored_beside_their_own_floor(small_extractor, test_digits):
    exact = ev(test_digits.images[:200], small_extractor, model=IdentityAutoencoder(), ppl_samples=20)["metrics"]
    assert exact["fid_reconstruction"]["value"] == pytest.approx(exact["fid_reconstruction"]["floor"], rel=1e-4)
    assert exact["fid_reconstruction"]["floor"] == exact["fid"]["floor"]
    assert exact["psnr_reconstruction"]["value"] > 140  # mse 0 (counted as 1e-10)
    assert exact["class_tv_reconstruction"]["value"] == pytest.approx(exact["class_tv"]["floor"])
    assert exact["class_tv_reconstruction"]["floor"] == exact["class_tv"]["floor"]
    blank = ev(test_digits.images[:200], small_extractor, model=IdentityAutoencoder(blank=True), ppl_samples=20)
    assert blank["metrics"]["fid_reconstruction"]["value"] > 10 * exact["fid_reconstruction"]["value"]
    assert blank["metrics"]["psnr_reconstruction"]["value"] < 20
    assert blank["metrics"]["class_tv_reconstruction"]["value"] > 0.7  # blank images: one class for all
    plain = ev(test_digits.images[:200], small_extractor, model=LikelihoodModel(), ppl_samples=20)["metrics"]
    assert "fid_reconstruction" not in plain  # not an Encoder


@pytest.mark.parametrize("images, message", [
    (np.zeros((10, 1, 30, 30), np.uint8), "images are 1x30x30 .* dataset's are 1x28x28; pass --resize to convert "
                                          "them \\(or --image-size 30 to measure at theirs\\)"),
    (np.zeros((10, 3, 28, 28), np.uint8), "images are 3x28x28 .* 1x28x28; pass --resize to convert them$"),
    (np.full((10, 28, 28), np.nan, np.float32), "10 image\\(s\\) contain NaN"),
    (np.full((10, 28, 28), 2.0, np.float32), "float images must lie in \\[0, 1\\]"),
    (np.zeros((1, 28, 28), np.uint8), "1 image\\(s\\); the metrics need at least 6"),
    (np.zeros((5, 28, 28), np.uint8), "5 image\\(s\\); the metrics need at least 6"),
    (np.zeros((10, 784), np.uint8), "expected images \\[N, H, W\\], \\[N, C, H, W\\] or \\[N, H, W, C\\]"),
    (np.zeros((10, 28, 28, 3), np.uint8), "images are 3x28x28"),  # channels last, read as such
])
def test_bad_samples(small_extractor, images, message):
    with pytest.raises(GenlabError, match=message):
        ev(images, small_extractor)


def test_resize_only_when_asked(small_extractor, test_digits):
    big = torch.nn.functional.interpolate(test_digits.images[:50].float(), size=(32, 32)).to(torch.uint8)
    rgb = big.expand(-1, 3, -1, -1)
    out = ev(rgb, small_extractor, resize=True)
    assert out["n"] == 50 and out["metrics"]["classes_found"]["value"] >= 8


def test_extractor_of_another_dataset_is_refused(small_extractor, tmp_path):
    other = tmp_path / "fashion-mnist-00000000"
    shutil.copytree(small_extractor.path, other)
    spec = json.loads((other / "spec.json").read_text())
    spec["dataset"] = "fashion-mnist"
    (other / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(GenlabError, match="was trained on fashion-mnist, not mnist-sample"):
        ev(np.zeros((10, 28, 28), np.uint8), small_extractor.__class__(small_extractor.net, spec, other))


def test_channels_last_samples_are_read_as_such():
    """[N, H, W, C] arrays (PIL's and numpy's layout) are turned to [N, C, H, W], not refused or
    scrambled; an array whose layout is in doubt is taken as [N, C, H, W]."""
    rgb = torch.randint(0, 256, (6, 3, 28, 28), dtype=torch.uint8)
    assert torch.equal(prepare_samples(rgb.permute(0, 2, 3, 1).numpy(), (3, 28, 28)), rgb)
    assert torch.equal(prepare_samples(rgb[:, :1].permute(0, 2, 3, 1), (1, 28, 28)), rgb[:, :1])
    assert torch.equal(prepare_samples(rgb[:, :, :3, :3], (3, 3, 3)), rgb[:, :, :3, :3])  # 3x3x3: as given


def test_transparent_png_samples_are_painted_on_the_datasets_background(tmp_path):
    """A folder of RGBA samples is read as the data is: transparent pixels on --background, not the
    colour that happens to sit under them."""
    from PIL import Image

    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, but transparent ...
    rgba[:3, :, 3] = 255  # ... except the top half
    for i in range(6):
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{i}.png")
    white = load_samples_file(tmp_path, 3)[0]
    black = load_samples_file(tmp_path, 3, "black")[0]
    assert white[:, :3].tolist() == black[:, :3].tolist()  # opaque red either way
    assert (white[0, :3] == 255).all() and (black[0, :3] == 255).all()
    assert (white[:, 3:] == 255).all() and (black[:, 3:] == 0).all()
    assert (load_samples_file(tmp_path, 1)[0, 0, 3:] == 255).all()  # grey: white too


def test_eval_samples_reads_the_data_as_the_run_was_trained(monkeypatch):
    """`genlab eval --samples` passes --background and --crop to both sides: the folder dataset it
    compares with, and the PNG samples it reads."""
    import genlab.metrics.evaluate as evaluate_module
    from genlab.config import parse_command
    from genlab.metrics.evaluate import EvalOptions, eval_command

    seen = {}
    monkeypatch.setattr(evaluate_module, "load_dataset", lambda data: seen.update(data=data) or _ColourData)
    monkeypatch.setattr(evaluate_module, "load_samples_file",
                        lambda path, channels, background: seen.update(read=(channels, background)) or "imgs")
    monkeypatch.setattr(evaluate_module, "evaluate", lambda images, data, **kw: seen.update(scored=(images, data)) or {})
    opts = parse_command("genlab eval", EvalOptions, ["--samples", "pngs", "--dataset", "folder", "--data-dir", "d",
                                                      "--background", "black", "--crop"], "")
    eval_command(opts, log=lambda *a: None)
    assert seen["data"].background == "black" and seen["data"].crop and seen["data"].split == "train"
    assert seen["read"] == (3, "black")
    assert seen["scored"][0] == "imgs" and seen["scored"][1].background == "black" and seen["scored"][1].crop


class _ColourData:  # what eval_command asks of the loaded data: its shape
    shape = (3, 28, 28)


def test_samples_files(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(GenlabError, match="is empty"):
        load_samples_file(tmp_path / "empty.npz", 1)
    np.savez(tmp_path / "other.npz", pictures=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(GenlabError, match="has no array named `images` \\(it has: pictures\\)"):
        load_samples_file(tmp_path / "other.npz", 1)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(GenlabError, match="neither an .npz nor an .npy file"):
        load_samples_file(tmp_path / "junk.npz", 1)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "other.npz").read_bytes()[:200])  # a zip cut short
    with pytest.raises(GenlabError, match="not a readable .npz"):
        load_samples_file(tmp_path / "cut.npz", 1)
    (tmp_path / "one.png").write_bytes(b"\x89PNG")
    with pytest.raises(GenlabError, match="one.png is one image; --samples takes .* a folder"):
        load_samples_file(tmp_path / "one.png", 1)
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.save(tmp_path / "bare.npy", images)  # a bare array, as np.save writes it
    assert np.array_equal(load_samples_file(tmp_path / "bare.npy", 1).numpy(), images)
    with pytest.raises(GenlabError, match="does not exist"):
        load_samples_file(tmp_path / "none.npz", 1)


def test_eval_from_the_command_line(small_extractor, tmp_path, capsys):
    from genlab.training.trainer import train

    run = train(tiny_config(tmp_path / "run", steps=20))
    assert main(["eval", str(run), "--n", "300", "--features", str(small_extractor.path),
                 "--ppl-samples", "50", "--json", str(tmp_path / "e.json")]) == 0
    table = capsys.readouterr().out
    assert small_extractor.name in table and "real floor" in table and "ppl" in table
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["n"] == 300 and saved["model"] == "gan-mlp" and (run / "eval.json").is_file()

    assert main(["sample", str(run), "--n", "200", "--out", str(tmp_path / "s.npz")]) == 0
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "mnist-sample",
                 "--features", str(small_extractor.path)]) == 0
    assert "200 samples" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    ([], "give either a run folder or --samples"),
    (["--samples", "x.npz"], "--samples needs --dataset"),
    (["--samples", "missing.npz", "--dataset", "mnist-sample"], "does not exist"),
])
def test_eval_bad_usage(argv, message, capsys, small_extractor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", *argv, "--features", str(small_extractor.path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_with_eval_every_keeps_the_best(small_extractor, tmp_path):
    from genlab.generate import load_run
    from genlab.training.trainer import train

    cfg = tiny_config(tmp_path / "run", steps=12, eval_every=4, eval_n=100,
                      eval_features=str(small_extractor.path))
    run = train(cfg)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4, 8, 12] and all(x["features"] == small_extractor.name for x in lines)
    best_fid = min(x["fid"] for x in lines)
    from genlab.core.checkpoint import load_state

    _, meta = load_state(run / "best.safetensors")
    assert float(meta["fid"]) == best_fid
    assert load_run(run, weights="best.safetensors")[1] is not None


def count_reads(monkeypatch) -> collections.Counter:
    """How often each split of mnist-sample is read from disk from now on."""
    reads = collections.Counter()
    entry = DATASETS["mnist-sample"]

    def loader(cfg):
        reads[cfg.split] += 1
        return entry.loader(cfg)
    monkeypatch.setitem(DATASETS, "mnist-sample", dataclasses.replace(entry, loader=loader))
    return reads


def test_each_command_reads_each_split_once(small_extractor, tmp_path, monkeypatch):
    # a copy of the extractor without its reference statistics, so that both commands compute them
    features = tmp_path / "features"
    shutil.copytree(small_extractor.path, features, ignore=shutil.ignore_patterns("reference*", "radii*", "floors*"))
    reads = count_reads(monkeypatch)
    run = tmp_path / "vae"  # an Encoder with a likelihood: its eval scores reconstructions and the test NLL too
    assert main(["train", "--model", "vae", "--width", "8", "--steps", "4", "--batch-size", "16", "--no-progress",
                 "--device", "cpu", "--eval-every", "2", "--eval-n", "100", "--eval-features", str(features),
                 "--out", str(run)]) == 0
    assert reads == {"train": 1, "test": 1}, reads  # the training data, and the held-out split for the reference
    (features / "reference.safetensors").unlink()
    reads.clear()
    assert main(["eval", str(run), "--n", "100", "--features", str(features), "--ppl-samples", "10"]) == 0
    assert reads == {"train": 1, "test": 1}, reads  # reference, floors, likelihood and reconstructions share them
