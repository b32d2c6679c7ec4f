"""Evaluation where there are no labels (a self-supervised extractor), with your own TorchScript
features, and the honest view of small data: scores against held-out images and the data-copying test."""

import json

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.config import DataConfig
from genlab.metrics import contrastive
from genlab.metrics import evaluate as E
from genlab.training.trainer import train
from tests.conftest import tiny_config, write_colour_folder

QUICK = contrastive.ContrastiveRecipe(steps=40, batch_size=32)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("unlabelled") / "p", n=60, classes=())


def test_nt_xent_pulls_twins_together():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    assert contrastive.nt_xent(z, z, 0.2) < contrastive.nt_xent(z, z.roll(1, 0), 0.2)


def test_a_folder_without_labels_is_evaluated_reported_and_served(pictures, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(contrastive, "DEFAULT_RECIPE", QUICK)
    run = tmp_path / "run"
    assert main(["train", "--model", "dcgan", "--width", "8", "--dataset", "folder", "--data-dir", str(pictures),
                 "--image-size", "32", "--steps", "4", "--batch-size", "8", "--no-progress", "--out", str(run)]) == 0
    assert main(["eval", str(run), "--n", "60", "--ppl-samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "features folder-ssl-" in out and "(self-supervised)" in out and "PIL bicubic" in out
    saved = json.loads((run / "eval.json").read_text())
    assert saved["features_kind"] == "contrastive" and "is" not in saved["metrics"]  # no classes, no IS
    assert {"fid", "fid_heldout", "recall_heldout"} <= set(saved["metrics"])
    assert main(["report", str(run)]) == 0 and "fid_heldout" in (run / "report.html").read_text()
    from fastapi.testclient import TestClient

    from genlab.serve import create_app

    assert TestClient(create_app([run])).get("/api/generate.png", params={"run": "run", "count": 2}).status_code == 200


def test_the_contrastive_features_tell_real_from_noise():
    data = DataConfig(dataset="mnist-sample")
    extractor = contrastive.get_contrastive_extractor(data, contrastive.ContrastiveRecipe(steps=150), log=lambda *_: None)
    assert extractor.kind == "contrastive" and extractor.spec["probe_accuracy"] > 0.5  # 10 classes: chance 0.1
    from genlab.data import load_dataset

    real = load_dataset(DataConfig(dataset="mnist-sample", split="test")).images[:300]
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fid = lambda x: E.evaluate(x, features=str(extractor.path), log=lambda *_: None)["metrics"]["fid"]["value"]  # noqa
    assert fid(noise) > 10 * fid(real)


def test_your_own_exported_program_features(tmp_path, capsys):
    """torch.export's programs (torch 2.13 deprecates TorchScript): named by hash, the same features
    as the module they were exported from, and a fixed batch size refused with the way to export."""
    class Pool(torch.nn.Module):  # with weights of its own, so that a float64 copy must convert them
        def __init__(self):
            super().__init__()
            self.project = torch.nn.Linear(16, 8)

        def forward(self, x):
            return self.project(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))

    torch.manual_seed(0)
    pool, x = Pool().eval(), torch.rand(4, 1, 28, 28)
    torch.export.save(torch.export.export(pool, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}),
                      tmp_path / "pool.pt2")
    torch.jit.save(torch.jit.script(pool), tmp_path / "pool.pt")
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=images)
    scores = {}
    for name in ("pool.pt2", "pool.pt"):
        assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "mnist-sample",
                     "--features", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        scores[name] = next(line.split()[1] for line in out.splitlines() if line.startswith("fid "))
        kind = "export" if name.endswith("2") else "torchscript"
        assert f"features {kind}-" in out and ("exported program" in out) == (kind == "export")
    assert scores["pool.pt2"] == scores["pool.pt"]  # the same features either way
    # a run with a latent space: perceptual path length runs the extractor in float64
    run = train(tiny_config(tmp_path / "gan", steps=2))
    ppl = {}
    for name in ("pool.pt2", "pool.pt"):
        assert main(["eval", str(run), "--n", "50", "--ppl-samples", "20", "--features", str(tmp_path / name)]) == 0
        ppl[name] = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("ppl "))
    assert ppl["pool.pt2"] == ppl["pool.pt"] and float(ppl["pool.pt"]) > 0

    torch.export.save(torch.export.export(pool, (x,)), tmp_path / "fixed.pt2")
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "mnist-sample",
                 "--features", str(tmp_path / "fixed.pt2")]) == 2
    err = capsys.readouterr().err
    assert "exported extractor" in err and "fails on 2 images" in err and "dynamic_shapes" in err
    damaged = (tmp_path / "pool.pt2").read_bytes()
    (tmp_path / "cut.pt2").write_bytes(damaged[:len(damaged) // 2])
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "mnist-sample",
                 "--features", str(tmp_path / "cut.pt2")]) == 2
    assert "nor an exported program; save one with torch.jit.save or torch.export.save" in capsys.readouterr().err


def test_your_own_torchscript_features(tmp_path, capsys):
    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    torch.jit.save(torch.jit.script(Pool()), tmp_path / "pool.pt")
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=images)
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "mnist-sample",
                 "--features", str(tmp_path / "pool.pt")]) == 0
    assert "features torchscript-" in capsys.readouterr().out

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.mean()

    torch.jit.save(torch.jit.script(Flat()), tmp_path / "flat.pt")
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "mnist-sample",
                 "--features", str(tmp_path / "flat.pt")]) == 2
    err = capsys.readouterr().err
    assert "returned () for 2 images; it must map float images [N, C, H, W] in [0, 1] to features [N, D]" in err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "mnist-sample",
                 "--features", str(tmp_path / "junk.pt")]) == 2
    assert "is not a TorchScript module" in capsys.readouterr().err


def test_copies_of_training_images_are_caught_and_held_out_images_are_not(small_extractor):
    from genlab.data import load_dataset

    train = load_dataset(DataConfig(dataset="mnist-sample")).images
    test = load_dataset(DataConfig(dataset="mnist-sample", split="test")).images
    ev = lambda x: E.evaluate(x, features=str(small_extractor.path), log=lambda *_: None)  # noqa
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:1000]  # the file is sorted by class
    copies, fresh = ev(train[pick]), ev(test[:1000])
    assert copies["data_copying"]["ct"] < -5 and any("closer to the training images" in w for w in copies["warnings"])
    assert abs(fresh["data_copying"]["ct"]) < 3 and not any("closer to the training" in w for w in fresh["warnings"])
    # copies look perfect against the training split, and no better than real data held out
    m = copies["metrics"]
    assert m["fid"]["value"] < m["fid"]["floor"] and m["fid_heldout"]["value"] >= 0.5 * m["fid_heldout"]["floor"]


def test_the_contrastive_extractor_is_cached_not_retrained(monkeypatch):
    data = DataConfig(dataset="mnist-sample", limit=200)
    first = contrastive.get_contrastive_extractor(data, QUICK, log=lambda *_: None)
    monkeypatch.setattr(contrastive, "train_contrastive", lambda *a, **k: pytest.fail("retrained"))
    assert contrastive.get_contrastive_extractor(data, QUICK, log=lambda *_: None).name == first.name
