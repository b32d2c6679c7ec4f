"""--lr-decay: every optimiser's rate follows the budget spent, and a decayed run resumes to the
same bits."""

import math
import shutil

import pytest

from genlab.cli import main
from genlab.config import TrainConfig
from genlab.core.checkpoint import load_state
from genlab.core.run import Run
from genlab.training.callbacks import budget_progress, lr_factor
from genlab.training.trainer import TrainState
from tests.training.test_resume import assert_same_bits

ARGS = ["--model", "dcgan", "--width", "8", "--limit", "96", "--batch-size", "16", "--no-progress", "--device",
        "cpu", "--grid-size", "4", "--seed", "5", "--lr", "0.001"]


def test_the_decays():
    assert [lr_factor("cosine", p) for p in (0, 0.5, 1)] == pytest.approx([1, 0.5, 0])
    assert [lr_factor("linear", p) for p in (0, 0.25, 1)] == pytest.approx([1, 0.75, 0])
    assert lr_factor("none", 0.9) == 1
    assert lr_factor("cosine", 0.25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_progress_is_the_first_budget_to_run_out():
    state = TrainState(step=30, seconds=150.0)
    assert budget_progress(state, TrainConfig(steps=120, epochs=None), per_epoch=10) == pytest.approx(0.25)
    assert budget_progress(state, TrainConfig(steps=None, epochs=2), per_epoch=50) == pytest.approx(0.3)
    # minutes count from where the loop began: 150 s of a 5-minute budget whose first 60 s went elsewhere
    assert budget_progress(state, TrainConfig(minutes=5), per_epoch=10, start_seconds=60) == pytest.approx(0.375)
    assert budget_progress(state, TrainConfig(minutes=5, steps=40), per_epoch=10) == pytest.approx(0.75)
    assert budget_progress(TrainState(step=99), TrainConfig(steps=50), per_epoch=10) == 1.0  # resumed past it


def rates(tree):
    return [x for name in ("opt_G", "opt_D") for g in tree[name]["param_groups"] for x in (g["lr"], g["initial_lr"])]


def test_every_optimiser_follows_the_budget_and_ends_at_zero(tmp_path):
    run = tmp_path / "r"
    assert main(["train", *ARGS, "--steps", "8", "--lr-decay", "linear", "--checkpoint-every", "4",
                 "--keep-checkpoints", "3", "--out", str(run)]) == 0
    (step4, path4), (step8, path8) = Run.open(run).checkpoints()
    assert (step4, step8) == (4, 8)
    halfway, _ = load_state(path4)
    end, _ = load_state(path8)
    # the checkpoint after step 4 holds the rate of step 5: half of 0.001 (and G's and D's both)
    assert rates(halfway["model"]) == pytest.approx([0.0005, 0.001] * 2)
    assert rates(end["model"]) == pytest.approx([0.0, 0.001] * 2)
    assert main(["train", *ARGS, "--steps", "8", "--out", str(tmp_path / "c")]) == 0  # no decay: the rate stays
    constant, _ = load_state(tmp_path / "c" / "model.safetensors")
    assert [g["lr"] for g in constant["opt_G"]["param_groups"]] == [0.001]


def test_a_decayed_run_resumes_to_the_same_bits(tmp_path):
    """Cut a finished run back to its checkpoint after step 4 (as a kill there would leave it) and
    resume: the rates of steps 5-10 come back from the budget and the stored base rates."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", *ARGS, "--steps", "10", "--lr-decay", "cosine", "--checkpoint-every", "4",
                 "--keep-checkpoints", "5", "--out", str(whole)]) == 0
    shutil.copytree(whole, cut)
    for step, path in Run.open(cut).checkpoints():
        if step > 4:
            path.unlink()
    assert [s for s, _ in Run.open(cut).checkpoints()] == [4]
    assert main(["train", "--resume", str(cut)]) == 0
    assert_same_bits(whole, cut)
    assert Run.open(cut).meta["resumed"][0]["from_step"] == 4


def test_two_schedules_are_refused(tmp_path, capsys):
    assert main(["train", *ARGS, "--steps", "2", "--lr-decay", "cosine", "--lr-half-life", "100",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--lr-decay cosine and --lr-half-life both set the learning rate; pass one of them" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
