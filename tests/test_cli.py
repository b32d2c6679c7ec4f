"""The `genlab` command end to end, and one clear line for every kind of bad input."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import torch

import genlab.cli as genlab_cli
from genlab.cli import main
from genlab.models.common import proportional_labels
from tests.training.test_trainer import final_weights
from tests.data.test_sources import write_mnist_folder

TINY = ["--limit", "256", "--batch-size", "32", "--no-progress", "--device", "cpu"]


def genlab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "genlab.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_train_then_sample_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    done = genlab("train", "--model", "gan-mlp", "--dataset", "mnist-sample", "--epochs", "1",
                  "--out", run, "--seed", "1", *TINY)
    assert done.returncode == 0, done.stderr
    assert f"run folder: {run}" in done.stdout and (run / "samples" / "epoch_001.png").is_file()

    done = genlab("sample", run, "--n", "300", "--out", tmp_path / "s.npz", "--seed", "2")
    assert done.returncode == 0, done.stderr
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert genlab("sample", run, "--n", "300", "--out", tmp_path / "t.npz", "--seed", "2").returncode == 0
    assert np.array_equal(images, np.load(tmp_path / "t.npz")["images"])

    assert genlab("sample", run, "--n", "5", "--out", tmp_path / "pngs", "--seed", "2").returncode == 0
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir())[0] == "000000.png"
    assert len(list((tmp_path / "pngs").iterdir())) == 5


def test_config_file_with_flag_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  steps: 3\n  seed: 5\n  batch_size: 16\n"
                                     "data:\n  limit: 64\nmodel:\n  lr: 0.001\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"),
                 "--seed", "9", "--no-progress"]) == 0
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "seed: 9" in saved and "lr: 0.001" in saved and "steps: 3" in saved
    # the saved config repeats the run
    assert main(["train", "--config", str(tmp_path / "r" / "config.yaml"), "--out", str(tmp_path / "r2")]) == 0
    first, again = final_weights(tmp_path / "r"), final_weights(tmp_path / "r2")
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_minutes_alone_replaces_the_epoch_budget(tmp_path):
    assert main(["train", "--minutes", "0.005", "--out", str(tmp_path / "r"), *TINY]) == 0
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "epochs: null" in saved and "minutes: 0.005" in saved


def bad(capsys, *argv):
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("raised, said", [
    (KeyboardInterrupt(), "genlab eval: interrupted\n"),  # a bare Ctrl-C: no dangling "; "
    (KeyboardInterrupt("stopped at step 7; checkpoint saved"),
     "genlab eval: interrupted; stopped at step 7; checkpoint saved\n"),
])
def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, raised, said):
    def interrupted(argv):
        raise raised
    monkeypatch.setitem(genlab_cli.HANDLERS, "eval", interrupted)
    assert bad(capsys, "eval", "runs/r") == (130, said)


@pytest.mark.parametrize("argv, message", [
    (["--model", "gan-xl"], "unknown model 'gan-xl'; known models: gan-mlp, dcgan"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'; known datasets: mnist-sample, mnist, fashion-mnist, folder"),
    (["--batch-size", "0"], "batch_size must be positive, got 0"),
    (["--batch-size", "-3"], "batch_size must be positive, got -3"),
    (["--epochs", "0"], "epochs must be positive, got 0"),
    (["--epochs", "-2"], "epochs must be positive, got -2"),
    (["--minutes", "0"], "minutes must be positive, got 0.0"),
    (["--dataset", "mnist", "--data-dir", "/no/such/folder"], "data folder /no/such/folder does not exist"),
    (["--dataset", "folder"], "needs --data-dir"),
])
def test_bad_options_get_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code, err = bad(capsys, "train", "--out", tmp_path / "r", *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("genlab train: error: ")
    assert not (tmp_path / "r").exists()  # nothing half-made is left


def test_corrupt_and_mismatched_idx_files(tmp_path, capsys):
    folder = write_mnist_folder(tmp_path / "m", gz=False, label_count=11)
    code, err = bad(capsys, "train", "--dataset", "mnist", "--data-dir", folder, "--out", tmp_path / "r")
    assert code == 2 and "12 images but" in err
    folder = write_mnist_folder(tmp_path / "m2", gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    code, err = bad(capsys, "train", "--dataset", "mnist", "--data-dir", folder, "--out", tmp_path / "r")
    assert code == 2 and "damaged gzip" in err


def test_non_image_in_folder_dataset(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "readme.md").write_text("#")
    code, err = bad(capsys, "train", "--dataset", "folder", "--data-dir", tmp_path / "imgs", "--out", tmp_path / "r")
    assert code == 2 and "readme.md is not an image" in err


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("train:\n  batchsize: 8\n")
    code, err = bad(capsys, "train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "r")
    assert code == 2 and "unknown key `batchsize` (did you mean `batch_size`?)" in err


def test_existing_run_and_unwritable_out(tmp_path, capsys):
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "r"), *TINY]) == 0
    code, err = bad(capsys, "train", "--steps", "2", "--out", tmp_path / "r", *TINY)
    assert code == 2 and "already holds a genlab run; pass --overwrite" in err
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "r"), "--overwrite", *TINY]) == 0
    (tmp_path / "f").write_text("")
    code, err = bad(capsys, "train", "--steps", "2", "--out", tmp_path / "f" / "r", *TINY)
    assert code == 2 and "cannot write to output folder" in err


def test_sample_bad_inputs(tmp_path, capsys):
    code, err = bad(capsys, "sample", tmp_path, "--out", tmp_path / "s.npz")
    assert code == 2 and "not a genlab run folder" in err
    assert main(["train", "--steps", "1", "--out", str(tmp_path / "r"), *TINY]) == 0
    code, err = bad(capsys, "sample", tmp_path / "r", "--n", "0", "--out", tmp_path / "s.npz")
    assert code == 2 and "--n must be a positive number" in err


def test_argparse_type_errors_and_help_exit_cleanly(tmp_path):
    done = genlab("train", "--epochs", "many")
    assert done.returncode == 2 and "expected a int, got 'many'" in done.stderr
    assert "Traceback" not in done.stderr
    help_text = genlab("train", "--help").stdout
    for flag in ("--model", "--dataset", "--epochs", "--minutes", "--out", "--seed", "--overwrite", "--g-loss"):
        assert flag in help_text
    assert "mnist-sample" in help_text and "gan-mlp" in help_text
    assert "train" in genlab("--help").stdout and genlab("nonsense").returncode == 2


def test_every_familys_train_help_renders_every_option():
    """argparse %-formats help texts: a "%" in an option's help once crashed `--help` for its family."""
    from genlab.cli import train_parser
    from genlab.config import model_config_class
    from genlab.models import MODELS

    for name in MODELS:
        help_text = train_parser(name).format_help()
        for f in dataclasses.fields(model_config_class(name)):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            assert flag in help_text, (name, f.name)


def test_conditional_sampling_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    assert main(["train", "--steps", "2", "--conditional", "--grid-size", "20", "--out", str(tmp_path / "c"), *TINY]) == 0
    with Image.open(tmp_path / "c" / "samples" / "final.png") as grid:  # one column per class: 10 x 2
        assert grid.size == (2 * (2 + 10 * 30), 2 * (2 + 2 * 30))
    assert main(["sample", str(tmp_path / "c"), "--n", "7", "--labels", "0,1,2", "--out", str(tmp_path / "s.npz")]) == 0
    saved = np.load(tmp_path / "s.npz")
    assert saved["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0] and saved["images"].shape == (7, 28, 28)
    code, err = bad(capsys, "sample", tmp_path / "c", "--labels", "0,11", "--out", tmp_path / "t.npz")
    assert code == 2 and "labels must be class numbers 0..9" in err
    # --labels data: the training data's mix, as `genlab eval RUN` draws it
    counts = json.loads((tmp_path / "c" / "run.json").read_text())["class_counts"]
    assert main(["sample", str(tmp_path / "c"), "--n", "50", "--labels", "data", "--out", str(tmp_path / "d.npz")]) == 0
    assert np.load(tmp_path / "d.npz")["labels"].tolist() == proportional_labels(50, counts).tolist()
    assert main(["train", "--steps", "1", "--out", str(tmp_path / "u"), *TINY]) == 0
    code, err = bad(capsys, "sample", tmp_path / "u", "--labels", "1", "--out", tmp_path / "t.npz")
    assert code == 2 and "not class-conditional" in err
    code, err = bad(capsys, "sample", tmp_path / "u", "--labels", "data", "--out", tmp_path / "t.npz")
    assert code == 2 and "--labels data: this model is not class-conditional" in err


def test_unknown_gan_options_are_refused(tmp_path, capsys):
    done = genlab("train", "--model", "dcgan", "--loss", "wasserstein", "--out", tmp_path / "r")
    assert done.returncode == 2 and "invalid choice: 'wasserstein'" in done.stderr and "hinge" in done.stderr
    code, err = bad(capsys, "train", "--augment", "rotate", "--out", tmp_path / "r")
    assert code == 2 and "unknown augmentation rotate" in err


def one_line(capsys, *argv):
    code, err = bad(capsys, *argv)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_your_own_images_bad_input(tmp_path, capsys):
    from tests.conftest import write_colour_folder
    from tests.data.test_cifar import records

    pictures = write_colour_folder(tmp_path / "p", n=12)
    err = one_line(capsys, "train", "--model", "dcgan", "--dataset", "folder", "--data-dir", pictures,
                   "--image-size", "30", "--batch-size", "4", "--out", tmp_path / "r")
    assert "dcgan needs square images with a side divisible by 4 (28, 32, 64), got 30x30" in err
    (pictures / "squares" / "broken.png").write_bytes(b"\x89PNG garbage")
    err = one_line(capsys, "train", "--dataset", "folder", "--data-dir", pictures, "--out", tmp_path / "r")
    assert "broken.png is not a readable image" in err
    (pictures / "squares" / "broken.png").unlink()
    cifar_dir = tmp_path / "c"
    cifar_dir.mkdir()
    (cifar_dir / "test_batch.bin").write_bytes(records(2)[0] + b"xx")
    err = one_line(capsys, "train", "--dataset", "cifar10", "--data-dir", cifar_dir, "--split", "test",
                   "--out", tmp_path / "r")
    assert "not a multiple of 3,073" in err
    assert main(["train", "--dataset", "folder", "--data-dir", str(pictures), "--image-size", "32", "--steps", "1",
                 "--batch-size", "4", "--no-progress", "--out", str(tmp_path / "colour")]) == 0
    err = one_line(capsys, "sample", tmp_path / "colour", "--channels", "1", "--out", tmp_path / "s.npz")
    assert "--channels 1: run" in err and "was trained on 3-channel images" in err
    err = one_line(capsys, "eval", tmp_path / "colour", "--channels", "1")
    assert "was trained on 3-channel images" in err


def test_sampler_and_steps_flags_and_their_bad_values(tmp_path, capsys):
    """--sampler and --sample-steps choose a diffusion or flow run's solver in sample (and eval); a
    sampler the family lacks, too few steps for a solver, and a tolerance that is not positive are
    refused in one line each."""
    tiny = ["--steps", "2", "--width", "8", "--limit", "64", "--batch-size", "16", "--no-progress", "--grid-size", "4"]
    diff, flow = tmp_path / "d", tmp_path / "f"
    assert main(["train", "--model", "diffusion", "--timesteps", "50", "--sample-steps", "5", "--out", str(diff), *tiny]) == 0
    assert main(["train", "--model", "flow", "--sample-steps", "3", "--out", str(flow), *tiny]) == 0
    capsys.readouterr()
    out = tmp_path / "s.npz"
    assert main(["sample", str(diff), "--n", "3", "--out", str(out), "--sampler", "dpm++2m", "--sample-steps", "4"]) == 0
    assert "4 network evaluations a sample" in capsys.readouterr().err
    solver = np.load(out)["images"]
    assert main(["sample", str(diff), "--n", "3", "--out", str(out)]) == 0
    assert not np.array_equal(solver, np.load(out)["images"])  # the run's own DDIM-5
    assert main(["sample", str(flow), "--n", "2", "--out", str(out), "--sampler", "dopri5"]) == 0
    assert "network evaluations a sample" in capsys.readouterr().err
    for run, args, message in [
        (diff, ["--sampler", "euler"], "unknown sampler 'euler' for a diffusion model; its samplers: ddim, ddpm, "
                                       "dpm++2m, unipc"),
        (diff, ["--sampler", "dpm++2m", "--sample-steps", "1"], "second-order multistep solver"),
        (flow, ["--sampler", "ddim"], "its samplers: euler, heun, midpoint, dopri5"),
        (flow, ["--sampler", "dopri5", "--option", "tolerance=0"], "tolerance must be positive"),
    ]:
        code, err = bad(capsys, "sample", run, "--n", "2", "--out", out, *args)
        assert code == 2 and message in err and "Traceback" not in err, err
    code, err = bad(capsys, "train", "--model", "flow", "--tolerance", "-1", "--out", tmp_path / "x", *tiny)
    assert code == 2 and "tolerance must be positive" in err
    code, err = bad(capsys, "eval", "--samples", out, "--dataset", "mnist-sample", "--sampler", "ddim")
    assert code == 2 and "with --samples there is no run" in err
