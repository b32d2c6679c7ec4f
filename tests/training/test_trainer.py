import json

import pytest
import torch

from genlab.errors import GenlabError
from genlab.generate import load_run, sample_run
from genlab.core.checkpoint import load_state
from genlab.training.trainer import train
from tests.conftest import tiny_config


def final_weights(run):
    state, _ = load_state(run / "model.safetensors")
    return {f"{n}.{k}": v for n in ("G", "D") for k, v in state[n].items()}


def test_a_run_folder_holds_everything(tmp_path):
    run = train(tiny_config(tmp_path / "run", steps=None, epochs=2, log_every=3))
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "run.json", "log.jsonl", "loss_curve.png", "model.safetensors", "samples"} <= names
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png", "view-interpolation.png"]
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 16 and meta["epochs_completed"] == 2
    assert meta["dataset_checksum"].startswith("sha256:") and meta["seed"] == 0
    assert meta["torch_version"] == torch.__version__
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 9, 12, 15, 16]
    assert {"loss_d", "loss_g", "d_real", "d_fake", "img_per_s"} <= set(log[0])


def test_each_epoch_line_names_its_losses(tmp_path, capsys):
    # epochs of 8 steps; a logged line every 20 steps comes only after the second epoch ends, so the
    # epoch lines before it show the means so far instead of an empty "step 8, "
    train(tiny_config(tmp_path / "run", steps=None, epochs=4, log_every=20))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert [line.split(",")[0] for line in lines] == ["epoch 1: step 8", "epoch 2: step 16", "epoch 3: step 24",
                                                      "epoch 4: step 32"]
    assert all(", loss_d " in line and ", loss_g " in line and not line.endswith(", ") for line in lines)
    assert "img_per_s" not in lines[0] and "img_per_s" in lines[2]  # logged at step 20: speed known
    # epoch 4 logged no line: the means of steps 21-32, not step 20's line again
    assert "img_per_s" not in lines[3] and lines[3].split(", ", 1)[1] != lines[2].split(", ", 1)[1]


def test_grid_images_are_real_pngs_of_the_right_size(tmp_path):
    from PIL import Image

    run = train(tiny_config(tmp_path / "run", steps=3, grid_size=16))
    with Image.open(run / "samples" / "final.png") as img:  # 3 steps < one epoch of 8
        # 4 x 4 images of 28 px with 2 px padding, enlarged twice
        assert img.size == (2 * (2 + 4 * 30), 2 * (2 + 4 * 30))


def test_the_same_seed_gives_the_same_weights(tmp_path):
    a = final_weights(train(tiny_config(tmp_path / "a", seed=3)))
    b = final_weights(train(tiny_config(tmp_path / "b", seed=3)))
    c = final_weights(train(tiny_config(tmp_path / "c", seed=4)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_budgets(tmp_path):
    meta = lambda run: json.loads((run / "run.json").read_text())  # noqa: E731
    assert meta(train(tiny_config(tmp_path / "s", steps=5)))["steps"] == 5
    assert meta(train(tiny_config(tmp_path / "e", steps=None, epochs=1)))["steps"] == 8  # 256 // 32
    timed = meta(train(tiny_config(tmp_path / "m", steps=None, minutes=0.002)))
    assert timed["stop_reason"] == "0.002 minutes" and timed["seconds"] < 5


def test_batch_larger_than_the_data(tmp_path):
    with pytest.raises(GenlabError, match="batch size 512 is larger than the dataset \\(256 images\\)"):
        train(tiny_config(tmp_path / "r", batch_size=512))
    assert not (tmp_path / "r").exists()


def test_an_existing_run_is_kept_unless_overwrite(tmp_path):
    run = train(tiny_config(tmp_path / "r", seed=1))
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(GenlabError, match="already holds a genlab run; pass --overwrite"):
        train(tiny_config(tmp_path / "r", seed=2))
    assert (run / "model.safetensors").read_bytes() == before
    train(tiny_config(tmp_path / "r", seed=2, overwrite=True))
    assert (run / "model.safetensors").read_bytes() != before


def test_a_folder_of_other_files_is_never_used(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(GenlabError, match="not a genlab run"):
        train(tiny_config(tmp_path / "mine", overwrite=True))
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_an_unwritable_output_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(GenlabError, match="cannot write to output folder"):
        train(tiny_config(tmp_path / "file" / "run"))


def test_load_run_and_sample(tmp_path):
    run = train(tiny_config(tmp_path / "r"))
    config, model, meta = load_run(run)
    assert config.model.name == "gan-mlp" and meta["image_shape"] == [1, 28, 28]
    a, b = sample_run(run, 2500, seed=1), sample_run(run, 2500, seed=1)
    assert a.shape == (2500, 1, 28, 28) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, sample_run(run, 2500, seed=2))


def test_load_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(GenlabError, match="not a genlab run folder"):
        load_run(tmp_path)
