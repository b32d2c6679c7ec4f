"""Runs others can use: the model card in every run folder, `genlab.load` of a run and of an export,
`genlab export` and its refusals, and TensorBoard's event files."""

import json

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.core.run import Run

TINY = ["--limit", "128", "--batch-size", "16", "--no-progress", "--device", "cpu", "--grid-size", "4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("share") / "run"
    assert main(["train", "--model", "dcgan", "--width", "8", "--conditional", "--steps", "8", "--out", str(out),
                 *TINY]) == 0
    return out


def test_every_run_has_a_model_card(run):
    card = (run / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: genlab\n")
    for part in ("# run: dcgan on mnist-sample", "conditional on 10 classes", "- parameters:", "content checksum sha256:",
                 "licence: MNIST", "8 steps", "## Scores", "Not evaluated yet", "![samples](samples/epoch_001.png)",
                 f"genlab train --config {run / 'config.yaml'} --out NEW_RUN", f'model = genlab.load("{run}")'):
        assert part in card, part
    meta = json.loads((run / "run.json").read_text())
    assert sum(meta["parameters"].values()) > 1000 and meta["dataset_licence"].startswith("MNIST")


def test_an_export_samples_as_the_run_does(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                                     "samples.png"]
    from_run, from_export = genlab.load(run), genlab.load(tmp_path / "exp")
    labels = [3, 1, 4]
    assert torch.equal(from_run.sample(6, seed=7, labels=labels), from_export.sample(6, seed=7, labels=labels))
    assert from_export.class_names == [str(i) for i in range(10)] and from_export.conditional_classes == 10
    assert f'genlab.load("{tmp_path / "exp"}")' in (tmp_path / "exp" / "README.md").read_text()
    assert main(["sample", str(tmp_path / "exp"), "--n", "2", "--out", str(tmp_path / "s.npz")]) == 0


def test_an_export_over_a_folder_is_refused_unless_overwrite(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 2
    assert "already holds a genlab export; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "exp"), "--overwrite"]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert main(["export", str(run), "--out", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert "not a genlab export" in capsys.readouterr().err and (tmp_path / "mine" / "thesis.tex").is_file()


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-10]), "sha256 differs"),
    (lambda d: (d / "config.json").write_text("{ not json"), "config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "missing"),
])
def test_a_damaged_export_is_refused_in_one_line(run, tmp_path, capsys, damage, message):
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    damage(tmp_path / "exp")
    assert main(["sample", str(tmp_path / "exp"), "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert "is a damaged genlab export" in err and message in err and len(err.strip().splitlines()) == 1


def events(run) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / Run.TENSORBOARD), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc.Tags()


def logged(run) -> dict[str, list[tuple[int, float]]]:
    lines = Run(run).read_lines(Run.LOG)
    keys = [k for k in lines[0] if k not in ("step", "epoch")]
    return {f"train/{k}": [(x["step"], float(x[k])) for x in lines] for k in keys}


def test_tensorboard_holds_what_the_log_holds(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "tb"
    assert main(["train", "--tensorboard", "--steps", "12", "--log-every", "2", "--out", str(run), *TINY]) == 0
    scalars, tags = events(run)
    expected = logged(run)
    assert set(expected) <= set(scalars)
    for tag, values in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in values]
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in values], rel=1e-6)
    assert tags["images"]  # the epoch grids


def test_a_resumed_run_purges_what_its_killed_session_wrote(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "tb"
    args = ["--tensorboard", "--log-every", "2", "--checkpoint-every", "5", "--keep-checkpoints", "5", *TINY]
    assert main(["train", "--steps", "10", "--out", str(run), *args]) == 0
    Run(run).checkpoint_path(10).unlink()  # as if killed after step 10 was logged, before its checkpoint
    assert main(["train", "--resume", str(run), "--steps", "14"]) == 0
    scalars, _ = events(run)
    steps = [s for s, _ in scalars["train/loss_d"]]
    assert steps == [2, 4, 6, 8, 10, 12, 14]  # once each: the first session's 6..10 were purged
    assert [v for _, v in scalars["train/loss_d"]] == pytest.approx([v for _, v in logged(run)["train/loss_d"]])


def test_tensorboard_without_the_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert main(["train", "--tensorboard", "--steps", "2", "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "pip install 'genlab[tensorboard]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
