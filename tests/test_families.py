"""What every registered model family must do through the one loop and the command line: train a
tiny config, leave its views, sample deterministically, and resume to the same bits."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.models import MODELS
from genlab.core.checkpoint import load_state

TINY = ["--limit", "128", "--batch-size", "16", "--no-progress", "--device", "cpu", "--grid-size", "8"]
SMALL = {  # options that make each family tiny
    "gan-mlp": [], "dcgan": ["--width", "8"], "vae": ["--width", "8"], "vae-mlp": ["--width", "8"],
    # the Transformers conditional with label dropout, so that their guided sampling runs here too
    "transformer": ["--d-model", "16", "--layers", "1", "--heads", "2", "--conditional", "--label-dropout", "0.1"],
    "diffusion": ["--width", "8", "--timesteps", "20", "--sample-steps", "3"],
    "latent-diffusion": ["--width", "8", "--timesteps", "20", "--sample-steps", "3", "--first-stage-width", "16",
                         "--first-stage-steps", "30"],
    "latent-transformer": ["--d-model", "16", "--layers", "1", "--heads", "2", "--codebook-size", "32",
                           "--first-stage-width", "16", "--first-stage-steps", "30", "--conditional",
                           "--label-dropout", "0.1"],
    # the flows conditional, with OT pairing and SD3's times, so that all their training options run here
    "flow": ["--width", "8", "--sample-steps", "3", "--conditional", "--ot", "--timestep-sampling", "logit-normal"],
    "latent-flow": ["--width", "8", "--sample-steps", "3", "--first-stage-width", "16", "--first-stage-steps", "30",
                    "--conditional", "--sampler", "heun"],
}
VIEWS = {  # the views each family's run must leave in samples/
    "gan-mlp": {"interpolation"}, "dcgan": {"interpolation"},
    "vae": {"interpolation", "reconstructions", "real-interpolation", "traversal"},
    "vae-mlp": {"interpolation", "reconstructions", "real-interpolation", "traversal"},
    "transformer": set(),  # no latent space: its samples are the view
    "diffusion": {"denoising"},
    "latent-diffusion": {"denoising", "reconstructions"},  # the first stage's reconstructions
    "latent-transformer": {"reconstructions"},
    "flow": {"flow"},
    "latent-flow": {"flow", "reconstructions"},
}

OPTIONS = {  # a valid value of every sampling option each family has
    "gan-mlp": {}, "dcgan": {}, "vae": {"temperature": "0.5"}, "vae-mlp": {"temperature": "0.5"},
    "transformer": {"temperature": "0.9", "top_k": "3", "guidance": "2"},
    "diffusion": {"sampler": "dpm++2m", "steps": "2", "eta": "0.5", "spacing": "karras", "guidance": "2",
                  "guidance_low": "0.1", "guidance_high": "0.9", "negative_prompt": ""},
    "latent-diffusion": {"sampler": "unipc", "steps": "2", "eta": "0.5", "spacing": "uniform", "guidance": "2",
                         "guidance_low": "0.1", "guidance_high": "0.9", "negative_prompt": ""},
    "latent-transformer": {"temperature": "0.9", "top_k": "3", "guidance": "2"},
    "flow": {"sampler": "midpoint", "steps": "2", "tolerance": "0.01", "guidance": "2", "guidance_low": "0.1",
             "guidance_high": "0.9", "negative_prompt": ""},
    "latent-flow": {"sampler": "dopri5", "steps": "2", "tolerance": "0.01", "guidance": "2", "guidance_low": "0.1",
                    "guidance_high": "0.9", "negative_prompt": ""},
}


def flat_state(run):
    state, _ = load_state(run / "model.safetensors")
    out = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, torch.Tensor):
            out[prefix] = node
    walk("", state)
    return out


def test_every_registered_family_is_covered_here():
    assert set(MODELS) == set(SMALL) == set(VIEWS) == set(OPTIONS)
    for name, entry in MODELS.items():
        assert {f.name for f in dataclasses.fields(entry.family.SamplingOptions)} == set(OPTIONS[name])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_family_trains_samples_and_shows_its_views(name, tmp_path):
    run = tmp_path / name
    assert main(["train", "--model", name, "--steps", "6", "--out", str(run), *TINY, *SMALL[name]]) == 0
    views = {p.stem.removeprefix("view-") for p in (run / "samples").glob("view-*.png")}
    assert views == VIEWS[name]
    for seed_run in ("a", "b"):
        assert main(["sample", str(run), "--n", "5", "--seed", "3", "--out", str(tmp_path / f"{seed_run}.npz")]) == 0
    a, b = (np.load(tmp_path / f"{s}.npz")["images"] for s in ("a", "b"))
    assert a.shape == (5, 28, 28) and a.dtype == np.uint8 and np.array_equal(a, b)
    options = [f"--option={k}={v}" for k, v in OPTIONS[name].items()]
    assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "o.npz"), *options]) == 0
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "x.npz"), "--option", "colour=red"]) == 2
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "x.npz"), "--option", "novalue"]) == 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_family_resumes_to_the_same_bits(name, tmp_path):
    common = ["--model", name, *TINY, *SMALL[name], "--checkpoint-every", "100"]
    assert main(["train", "--steps", "10", "--out", str(tmp_path / "whole"), *common]) == 0
    assert main(["train", "--steps", "4", "--out", str(tmp_path / "split"), *common]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--steps", "10"]) == 0
    whole, split = flat_state(tmp_path / "whole"), flat_state(tmp_path / "split")
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) for k in whole)


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    from tests.conftest import write_colour_folder

    return write_colour_folder(tmp_path_factory.mktemp("colour") / "pictures", n=40)


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_family_trains_and_samples_in_colour(name, side, colour_folder, tmp_path):
    slow = name == "transformer" and side == 64  # 12,288 tokens an image: one step of two images
    run = tmp_path / "run"
    assert main(["train", "--model", name, "--dataset", "folder", "--data-dir", str(colour_folder),
                 "--image-size", str(side), "--steps", "1" if slow else "3", "--batch-size", "2" if slow else "8",
                 "--no-progress", "--device", "cpu", "--grid-size", "2", "--out", str(run), *SMALL[name]]) == 0
    assert json.loads((run / "run.json").read_text())["image_shape"] == [3, side, side]
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s.npz")]) == 0
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (2, 3, side, side) and images.dtype == np.uint8
