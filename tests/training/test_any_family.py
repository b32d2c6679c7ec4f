"""The Trainer, checkpoints, exact resume, `genlab sample` and `genlab serve` work for any family that
follows the protocol: shown with a stand-in registered only here (tests/toy_family.py)."""

import json

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.core.run import Run
from genlab.models import MODELS, build_model
from genlab.models.protocols import Encoder, Family, LatentSpace, Likelihood
from tests.toy_family import Toy, toy_registered
from tests.training.test_resume import assert_same_bits

ARGS = ["--model", "toy", "--limit", "96", "--batch-size", "16", "--no-progress", "--device", "cpu",
        "--grid-size", "4", "--log-every", "2", "--seed", "5"]


@pytest.fixture(autouse=True)
def toy():
    with toy_registered():
        yield
    assert "toy" not in MODELS


def test_the_stand_in_is_a_family_and_nothing_more():
    from genlab.config import default_config

    model = build_model(default_config("toy").model, (1, 28, 28), 10)
    assert isinstance(model, Family) and isinstance(model, Toy)
    assert not isinstance(model, (LatentSpace, Encoder, Likelihood))


def test_it_trains_checkpoints_and_leaves_a_run(tmp_path):
    run = tmp_path / "r"
    assert main(["train", *ARGS, "--steps", "14", "--checkpoint-every", "4", "--out", str(run)]) == 0
    opened = Run.open(run)
    assert opened.meta["status"] == "finished" and opened.meta["steps"] == 14
    assert [s for s, _ in opened.checkpoints()] == [14]
    lines = opened.read_lines(Run.LOG)
    assert [x["step"] for x in lines] == [2, 4, 6, 8, 10, 12, 14] and lines[-1]["loss"] < lines[0]["loss"]
    assert (run / "samples" / "final.png").is_file() and (run / "loss_curve.png").is_file()
    assert not list((run / "samples").glob("view-*.png"))  # no capability, no views


def test_it_resumes_to_the_same_bits(tmp_path):
    assert main(["train", *ARGS, "--steps", "20", "--checkpoint-every", "100", "--out", str(tmp_path / "whole")]) == 0
    assert main(["train", *ARGS, "--steps", "7", "--checkpoint-every", "100", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--steps", "20"]) == 0
    assert_same_bits(tmp_path / "whole", tmp_path / "split")
    assert json.loads((tmp_path / "split" / "run.json").read_text())["resumed"][0]["from_step"] == 7


def test_sampling_from_the_command_line_with_its_own_options(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *ARGS, "--steps", "6", "--out", str(run)]) == 0
    for name in ("a", "b"):
        assert main(["sample", str(run), "--n", "5", "--seed", "2", "--out", str(tmp_path / f"{name}.npz")]) == 0
    a, b = (np.load(tmp_path / f"{n}.npz")["images"] for n in "ab")
    assert a.shape == (5, 28, 28) and np.array_equal(a, b)
    assert main(["sample", str(run), "--n", "3", "--option", "scale=0", "--out", str(tmp_path / "m.npz")]) == 0
    mean = np.load(tmp_path / "m.npz")["images"]
    assert (mean == mean[0]).all()  # no noise: every sample is the mean image
    assert main(["sample", str(run), "--option", "temperature=2", "--out", str(tmp_path / "x.npz")]) == 2
    assert "unknown sampling option 'temperature' for this model; its options: scale" in capsys.readouterr().err


def test_serve_offers_its_options(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from genlab.serve import create_app

    run = tmp_path / "r"
    assert main(["train", *ARGS, "--steps", "4", "--conditional", "--out", str(run)]) == 0
    client = TestClient(create_app([run]))
    listed = client.get("/api/runs").json()["runs"][0]
    assert listed["options"] == {"scale": {"type": "float", "help": "multiply the noise by this (0: the mean image)",
                                           "default": 1.0}}
    assert listed["conditional"] and not listed["interpolation"]
    grid = client.get("/api/generate.png", params={"run": "r", "count": 4, "scale": "0.5", "label": 3})
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert client.get("/api/generate.png", params={"run": "r", "scale": "lots"}).status_code == 400
    assert client.get("/api/interpolate.png", params={"run": "r"}).status_code == 400


def test_the_trainer_takes_the_family_through_python(tmp_path):
    import genlab
    from genlab.config import apply_overrides, default_config

    cfg = apply_overrides(default_config("toy"), {"data.limit": 64, "train.batch_size": 16, "train.steps": 3,
                                                  "train.progress": False, "train.out": str(tmp_path / "p")})
    run = genlab.train(cfg)
    images = genlab.load(run).sample(6, seed=1)
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images, genlab.load(run).sample(6, seed=1))
