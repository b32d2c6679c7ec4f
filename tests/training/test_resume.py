"""Runs that survive: real SIGKILLs and SIGTERMs, resumes that end on the same bits, NaN guards,
full disks, checkpoint pruning."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab.cli import main
from genlab.errors import GenlabError
from genlab.core.run import Run
from genlab.core.checkpoint import load_state
from genlab.training.trainer import train
from tests.conftest import tiny_config

# 256 digits, batch 32: 8 steps an epoch; checkpoints every 5 steps fall inside and at ends of epochs
RUN_ARGS = ["--limit", "256", "--batch-size", "32", "--seed", "3", "--no-progress", "--device", "cpu",
            "--log-every", "1", "--grid-size", "4", "--threads", "1"]


def full_state(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final state (nets and optimisers), flattened."""
    tree, _ = load_state(run / "model.safetensors")
    flat = {}

    def walk(node, path):
        if isinstance(node, torch.Tensor):
            flat[path] = node
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(tree, "")
    return flat


def assert_same_bits(a: Path, b: Path) -> None:
    sa, sb = full_state(a), full_state(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def start_training(out: Path, steps: int, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genlab.cli", "train", "--steps", str(steps), "--out", str(out),
                             "--checkpoint-every", "5", *RUN_ARGS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_step(run: Path) -> int:
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, json.JSONDecodeError, IndexError):
        return 0


def kill_when(proc: subprocess.Popen, condition, timeout=120.0) -> bool:
    """SIGKILL `proc` as soon as `condition()` holds; False when it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    proc.kill()
    raise AssertionError("training neither reached the kill point nor finished")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run every resumed run must match, bit for bit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run([sys.executable, "-m", "genlab.cli", "train", "--steps", "40", "--out", str(out),
                           "--checkpoint-every", "5", *RUN_ARGS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def resume_to_end(run: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "genlab.cli", "train", "--resume", str(run)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr


@pytest.mark.parametrize("kill_after", [7, 12, 23])
def test_sigkill_at_a_step_then_resume_gives_the_same_bits(reference_run, tmp_path, kill_after):
    run = tmp_path / "run"
    proc = start_training(run, 40)
    assert kill_when(proc, lambda: logged_step(run) >= kill_after), "finished before the kill"
    assert proc.returncode == -signal.SIGKILL
    if not Run(run).checkpoints():  # killed before the first checkpoint: nothing to resume
        done = subprocess.run([sys.executable, "-m", "genlab.cli", "train", "--resume", str(run)],
                              capture_output=True, text=True)
        assert done.returncode == 2 and "no checkpoint to resume from" in done.stderr
        return
    resume_to_end(run)
    assert_same_bits(run, reference_run)
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 40 and meta["resumed"]
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # lines the killed process wrote after its checkpoint are dropped


def test_sigkill_during_a_checkpoint_write(reference_run, tmp_path):
    """Kill while the temporary checkpoint file exists: the half-written file is never taken for a
    checkpoint, resume starts from the previous one and still ends on the same bits."""
    caught = False
    for attempt in range(6):
        run = tmp_path / f"run{attempt}"
        proc = start_training(run, 40)
        folder = run / "checkpoints"

        def writing():
            try:
                return any(".tmp-" in e.name for e in os.scandir(folder)) and logged_step(run) >= 10
            except OSError:
                return False

        if kill_when(proc, writing):
            caught = True
            break
    assert caught, "could not catch a checkpoint write in 6 tries"
    finished = Run(run).checkpoints()
    for _, path in finished:
        load_state(path)  # every finished checkpoint is whole
    resume_to_end(run)
    assert_same_bits(run, reference_run)
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]


def test_sigterm_saves_a_checkpoint_and_prints_how_to_resume(reference_run, tmp_path):
    run = tmp_path / "run"
    proc = start_training(run, 40)
    deadline = time.monotonic() + 120
    while logged_step(run) < 7 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"Resume with: genlab train --resume {run}" in err and "Traceback" not in err
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "interrupted"
    assert Run(run).checkpoints()[-1][0] == meta["steps"]  # a checkpoint at the stopping step
    resume_to_end(run)
    assert_same_bits(run, reference_run)


def test_resume_can_extend_the_budget(tmp_path):
    train(tiny_config(tmp_path / "a", steps=20, checkpoint_every=100))
    train(tiny_config(tmp_path / "b", steps=9, checkpoint_every=100))
    cfg = tiny_config(tmp_path / "b", steps=20, checkpoint_every=100)
    train(cfg, resume_run=tmp_path / "b")
    assert_same_bits(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("flag, value, named", [
    ("--batch-size", "16", "train.batch_size: 32 -> 16"),
    ("--lr", "0.001", "model.lr: 0.0002 -> 0.001"),
    ("--dataset", "fashion-mnist", "data.dataset: 'mnist-sample' -> 'fashion-mnist'"),
    ("--seed", "4", "train.seed: 3 -> 4"),
])
def test_resume_refuses_a_config_that_changes_the_checkpoint(tmp_path, capsys, flag, value, named):
    assert main(["train", "--steps", "5", "--out", str(tmp_path / "r"), *RUN_ARGS]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), flag, value]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and named in err


def test_a_run_without_checkpoints_cannot_resume(tmp_path, capsys):
    import shutil

    assert main(["train", "--steps", "3", "--out", str(tmp_path / "r"), *RUN_ARGS]) == 0
    shutil.rmtree(tmp_path / "r" / "checkpoints")
    assert main(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_resume_usage_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "config file" in capsys.readouterr().err
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "r"), *RUN_ARGS]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--out", str(tmp_path / "x")]) == 2
    assert "leave out --out" in capsys.readouterr().err


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    run = train(tiny_config(tmp_path / "one", steps=12, checkpoint_every=4))
    assert [s for s, _ in Run(run).checkpoints()] == [12]
    run = train(tiny_config(tmp_path / "two", steps=12, checkpoint_every=4, keep_checkpoints=2))
    assert [s for s, _ in Run(run).checkpoints()] == [8, 12]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    run = train(tiny_config(tmp_path / "r", steps=8, checkpoint_every=4, keep_checkpoints=2))
    newest = Run(run).checkpoint_path(8)
    newest.write_bytes(newest.read_bytes()[:1000])
    (run / "checkpoints" / ".step-00000012.safetensors.tmp-99").write_bytes(b"half")
    tree, path = Run(run).latest_checkpoint()
    assert path == Run(run).checkpoint_path(4) and tree["loop"]["step"] == 4


# ---------------------------------------------------------------- NaN and inf

def inject_nan_at(monkeypatch, step: int):
    """Make the GAN's input batch NaN at optimisation step `step` (1-based)."""
    from genlab.models import gan

    calls = {"n": 0}
    real_to_unit = gan.to_unit

    def poisoned(images):
        calls["n"] += 1
        x = real_to_unit(images)
        return x * float("nan") if calls["n"] == step else x

    monkeypatch.setattr(gan, "to_unit", poisoned)


def test_a_nan_stops_the_run_with_the_previous_weights(tmp_path, monkeypatch):
    train(tiny_config(tmp_path / "six", steps=6))
    inject_nan_at(monkeypatch, 7)
    with pytest.raises(GenlabError, match="loss of D became nan at step 7; the optimiser was not given it") as err:
        train(tiny_config(tmp_path / "nan", steps=12, checkpoint_every=5))
    assert "the last checkpoint (step 5) is kept" in str(err.value) and "--on-nan skip" in str(err.value)
    assert_same_bits(tmp_path / "nan", tmp_path / "six")  # the weights after step 6, exactly
    assert json.loads((tmp_path / "nan" / "run.json").read_text())["status"] == "diverged"
    assert [s for s, _ in Run(tmp_path / "nan").checkpoints()] == [5]


def test_on_nan_skip_skips_and_counts(tmp_path, monkeypatch):
    inject_nan_at(monkeypatch, 4)
    run = train(tiny_config(tmp_path / "skip", steps=10, on_nan="skip"))
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["skipped_batches"] == 1 and meta["steps"] == 10
    assert all(torch.isfinite(t.float()).all() for t in full_state(run).values())


def test_a_non_finite_gradient_with_a_finite_loss_is_caught(tmp_path, monkeypatch):
    from genlab.models import gan

    original = gan.GanMlp.__init__

    def with_hook(self, *a, **k):
        original(self, *a, **k)
        calls = {"n": 0}

        def poison(grad):
            calls["n"] += 1
            return grad * float("inf") if calls["n"] == 3 else grad

        self.D.net[1].weight.register_hook(poison)

    monkeypatch.setattr(gan.GanMlp, "__init__", with_hook)
    with pytest.raises(GenlabError, match="gradient of D became (inf|nan) at step 3"):
        train(tiny_config(tmp_path / "g", steps=6))


# ---------------------------------------------------------------- disks and files

def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from genlab.core import checkpoint

    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 6:  # the first checkpoint is written, later ones find the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    with pytest.raises(GenlabError, match="No space left on device.*earlier file there is untouched"):
        train(tiny_config(tmp_path / "r", steps=20, checkpoint_every=4))
    found = Run(tmp_path / "r").checkpoints()
    assert found and load_state(found[-1][1])[0]["loop"]["step"] == found[-1][0]
    assert not [p for p in (tmp_path / "r" / "checkpoints").iterdir() if ".tmp-" in p.name]


def test_weights_of_the_wrong_shape_are_refused(tmp_path):
    from genlab.generate import load_run

    run = train(tiny_config(tmp_path / "r", steps=2))
    text = (run / "config.yaml").read_text().replace("latent_dim: 100", "latent_dim: 64")
    (run / "config.yaml").write_text(text)
    with pytest.raises(GenlabError, match="does not fit the run's config.yaml.*size mismatch"):
        load_run(run)


def test_sha256_download_verification(tmp_path):
    import hashlib

    from genlab.data.download import download

    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(1000))
    good = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert download(src.as_uri(), tmp_path / "d" / "a", good).read_bytes() == src.read_bytes()
    with pytest.raises(GenlabError, match="has sha256 .* the file was deleted"):
        download(src.as_uri(), tmp_path / "d" / "b", "sha256:" + "0" * 64)
    assert not (tmp_path / "d" / "b").exists() and not (tmp_path / "d" / "b.part").exists()


# ---------------------------------------------------------------- precision and devices

def test_bf16_on_the_cpu_trains(tmp_path):
    run = train(tiny_config(tmp_path / "r", steps=4, precision="bf16"))
    meta = json.loads((run / "run.json").read_text())
    assert meta["precision"] == "bf16" and meta["status"] == "finished"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(line["loss_d"])) for line in log)


@pytest.mark.parametrize("options, message", [
    (dict(precision="fp16"), "fp16 needs a CUDA GPU"),
    (dict(device="cuda"), "no CUDA GPU is visible"),
])
def test_impossible_device_options(tmp_path, options, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(GenlabError, match=message):
        train(tiny_config(tmp_path / "r", **options))


def test_a_checkpoint_with_a_tensor_of_the_wrong_shape_is_refused(tmp_path):
    from genlab.core.checkpoint import save_state

    run = train(tiny_config(tmp_path / "r", steps=4, checkpoint_every=4))
    path = Run(run).checkpoint_path(4)
    tree, _ = load_state(path)
    tree["model"]["G"]["net.0.weight"] = torch.zeros(3, 3)
    save_state(path, tree)
    with pytest.raises(GenlabError, match="does not fit the run's config.yaml: size mismatch for net.0.weight"):
        train(tiny_config(run, steps=8, checkpoint_every=4), resume_run=run)


# ---------------------------------------------------------------- the end of a run

def killed_at_the_end(tmp_path, condition_of, tries=6) -> Path:
    """A 40-step run killed by SIGKILL when `condition_of(run)` first holds (retried: the windows
    are short); returns the run folder."""
    for attempt in range(tries):
        run = tmp_path / f"run{attempt}"
        proc = start_training(run, 40)
        if kill_when(proc, lambda: condition_of(run)):
            return run
    raise AssertionError(f"could not kill at that point in {tries} tries")


def final_checkpoint_written(run: Path) -> bool:
    return (run / "checkpoints" / "step-00000040.safetensors").is_file() and not (run / "model.safetensors").exists()


def writing(folder: Path, name: str) -> bool:
    try:
        return any(e.name.startswith(f".{name}.tmp-") for e in os.scandir(folder))
    except OSError:
        return False


@pytest.mark.parametrize("moment", ["after the final checkpoint", "during the final checkpoint",
                                    "during the final save"])
def test_a_kill_at_the_end_resumes_to_the_same_step_and_bits(reference_run, tmp_path, moment):
    """The bug found from outside: killed after its final checkpoint, a resumed run took one step
    more than the budget. Budgets are asked before each step, so it only finishes the run."""
    condition = {"after the final checkpoint": final_checkpoint_written,
                 "during the final checkpoint": lambda r: writing(r / "checkpoints", "step-00000040.safetensors"),
                 "during the final save": lambda r: writing(r, "model.safetensors")}[moment]
    run = killed_at_the_end(tmp_path, condition)
    resume_to_end(run)
    assert_same_bits(run, reference_run)
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 40
    expected_from = 35 if moment == "during the final checkpoint" else 40
    assert meta["resumed"][-1]["from_step"] == expected_from
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    run = train(tiny_config(tmp_path / "r", steps=9, checkpoint_every=100))
    before = full_state(run)
    train(tiny_config(run, steps=9, checkpoint_every=100), resume_run=run)
    after = full_state(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    meta = json.loads((run / "run.json").read_text())
    assert meta["steps"] == 9 and meta["resumed"][0]["from_step"] == 9 and meta["status"] == "finished"


def test_log_lines_name_the_epoch_their_step_belongs_to(tmp_path):
    run = train(tiny_config(tmp_path / "r", steps=None, epochs=2, log_every=3))  # 8 steps an epoch
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [(x["step"], x["epoch"]) for x in lines] == [(3, 1), (6, 1), (9, 2), (12, 2), (15, 2), (16, 2)]
