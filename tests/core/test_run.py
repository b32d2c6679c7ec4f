"""The Run class: what a folder is (one message each way it is not a run), the files of a run, its
checkpoints and the logs a resumed run keeps."""

import pytest

from genlab.config import default_config
from genlab.core.run import Run
from genlab.errors import GenlabError


def make_run(path, **train):
    config = default_config("gan-mlp")
    config.train.out = str(path)
    for k, v in train.items():
        setattr(config.train, k, v)
    return Run.create(path, config, {"status": "running", "model": "gan-mlp"})


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "not a genlab run folder: it does not exist"),
    (lambda p: p.mkdir(), "not a genlab run folder: it is empty .* start it again with `genlab train"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), "is not a genlab run folder \\(no config file"),
    (lambda p: p.write_text("x"), "not a genlab run folder: it is a file"),
])
def test_what_is_not_a_run_is_said_in_one_line(tmp_path, setup, message):
    path = tmp_path / "r"
    setup(path)
    with pytest.raises(GenlabError, match=message):
        Run.open(path)


def test_a_new_run_has_its_config_first_and_reads_back_typed(tmp_path):
    run = make_run(tmp_path / "r", seed=7)
    assert Run.is_run(run.path) and (run / "samples").is_dir()
    again = Run.open(run.path)
    assert again.config.train.seed == 7 and again.config.model.name == "gan-mlp"
    assert again.meta["status"] == "running" and again.eval is None
    again.write_eval({"metrics": {"fid": {"value": 3.0}}})
    assert Run.open(run.path).eval["metrics"]["fid"]["value"] == 3.0


def test_out_folders_are_never_mixed_or_replaced_silently(tmp_path):
    make_run(tmp_path / "r")
    with pytest.raises(GenlabError, match="already holds a genlab run; pass --overwrite"):
        Run.check_out(tmp_path / "r", overwrite=False)
    assert Run.check_out(tmp_path / "r", overwrite=True) == tmp_path / "r"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(GenlabError, match="not a genlab run; choose a new or empty --out"):
        Run.check_out(tmp_path / "mine", overwrite=True)


def test_a_run_without_checkpoints_says_how_to_start_again(tmp_path):
    run = make_run(tmp_path / "r", checkpoint_every=500)
    with pytest.raises(GenlabError) as err:
        run.latest_checkpoint()
    text = str(err.value)
    assert "no checkpoint to resume from: it was stopped before its first checkpoint (one every 500 steps" in text
    assert f"genlab train --config {run.path / 'config.yaml'} --out {run.path} --overwrite" in text


def test_checkpoints_are_kept_newest_first_and_pruned(tmp_path):
    import torch

    run = make_run(tmp_path / "r")
    for step in (5, 10, 15):
        run.save_checkpoint(step, {"loop": {"step": step}, "w": torch.ones(2) * step}, keep=2)
    assert [s for s, _ in run.checkpoints()] == [10, 15]
    (run / "checkpoints" / ".step-00000020.safetensors.tmp-1").write_bytes(b"half")
    tree, path = run.latest_checkpoint()
    assert path == run.checkpoint_path(15) and tree["loop"]["step"] == 15
    run.checkpoint_path(15).write_bytes(b"damaged")
    assert run.latest_checkpoint()[0]["loop"]["step"] == 10


def test_a_resumed_run_keeps_only_the_lines_before_its_checkpoint(tmp_path):
    run = make_run(tmp_path / "r")
    for step in range(1, 8):
        run.append(Run.LOG, {"step": step})
        run.append(Run.DIAGNOSES, {"step": step, "kind": "x"})
    run.truncate_logs(4)
    assert [x["step"] for x in run.read_lines(Run.LOG)] == [1, 2, 3, 4]
    assert [x["step"] for x in run.read_lines(Run.DIAGNOSES)] == [1, 2, 3, 4]
    assert run.read_lines(Run.METRICS) == []


def test_missing_weights_are_named(tmp_path):
    run = make_run(tmp_path / "r")
    with pytest.raises(GenlabError, match="has no model.safetensors: it has not finished"):
        run.weights()
    with pytest.raises(GenlabError, match="has no best.safetensors: train with --eval-every"):
        run.weights(Run.BEST)
