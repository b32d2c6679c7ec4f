"""Data parallelism under torchrun on the CPU (gloo, 2 processes, loopback only)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genlab.core import distributed

from tests.training.test_resume import assert_same_bits, full_state

ARGS = ["--limit", "256", "--batch-size", "32", "--seed", "3", "--no-progress", "--device", "cpu",
        "--threads", "1", "--grid-size", "4", "--log-every", "1"]


def torchrun(*args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "genlab.cli", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def single(*args, env=None):
    return subprocess.run([sys.executable, "-m", "genlab.cli", "train", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    done = torchrun("--steps", "6", "--checkpoint-every", "3", "--keep-checkpoints", "5", "--out", str(root / "ddp"), *ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # rank 0 alone speaks and writes
    done = single("--steps", "6", "--out", str(root / "single"), *ARGS)
    assert done.returncode == 0, done.stderr
    return root


def test_two_processes_match_one_with_the_same_global_batch(runs):
    """Each rank trains on half of every batch of 32 and the gradients are averaged, so the result
    equals one process with batch 32 up to float rounding: the all-reduce sums the two half-batch
    means in another order than one full-batch mean (differences ~1e-7), and Adam's per-element
    normalisation can enlarge a rounding difference in a near-zero gradient. After 6 steps we allow
    1e-5, 40 times what we observe and far below one Adam step (lr 2e-4)."""
    worst = worst_difference(runs / "ddp", runs / "single", ("/G/", "/D/"))
    assert worst < 1e-5, worst
    meta = json.loads((runs / "ddp" / "run.json").read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 6 and meta["images_seen"] == 6 * 32
    checkpoints = sorted(p.name for p in (runs / "ddp" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000003.safetensors", "step-00000006.safetensors"]


def test_a_distributed_run_resumes_to_the_same_bits(runs, tmp_path):
    done = torchrun("--steps", "3", "--out", str(tmp_path / "r"), *ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    done = torchrun("--resume", str(tmp_path / "r"), "--steps", "6")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_bits(tmp_path / "r", runs / "ddp")


def test_a_batch_that_does_not_split_over_the_ranks(tmp_path):
    done = torchrun("--steps", "2", "--out", str(tmp_path / "r"), *ARGS[:2], "--batch-size", "31", "--no-progress")
    assert done.returncode != 0
    # each rank says it in one line (torchrun's own launcher then adds its report of the failure)
    assert done.stderr.count("genlab train: error: batch size 31 does not split evenly over 2 processes") == 2


def test_a_decayed_rate_is_the_same_on_every_rank(tmp_path):
    """--lr-decay reads the budget spent on rank 0 (broadcast each step): two processes still match one."""
    decay = ["--steps", "4", "--lr-decay", "cosine", *ARGS]
    done = torchrun(*decay, "--out", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    done = single(*decay, "--out", str(tmp_path / "single"))
    assert done.returncode == 0, done.stderr
    assert worst_difference(tmp_path / "ddp", tmp_path / "single", ("/G/", "/D/")) < 1e-5


def alone_then_together(rank: int, port: int, folder: str) -> None:
    """One rank of `test_the_others_wait_for_work_the_first_rank_does_alone`: the process group's
    collectives may wait 2 s, and the first rank works alone for 6 s before the barrier."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.init_from_env(torch.device("cpu"), timeout=timedelta(seconds=2))
    try:
        if rank == 0:
            time.sleep(6)  # a first stage or a feature extractor trained into the cache
        distributed.barrier()
        total = torch.tensor([rank + 1.0])
        dist.all_reduce(total)  # the group works after the wait
        (Path(folder) / f"rank{rank}").write_text(str(total.item()))
    finally:
        distributed.shutdown()


def test_the_others_wait_for_work_the_first_rank_does_alone(tmp_path):
    """Under torchrun the first rank trains a first stage (or --eval-every's feature extractor) while
    the others wait at `distributed.barrier`. That wait is not bound by the process group's timeout
    (30 minutes on gloo, 10 on NCCL: shorter than a first stage can take), which would kill the
    waiting ranks: here the group's timeout is 2 s and the first rank's work 6 s."""
    mp.spawn(alone_then_together, args=(free_port(), str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["3.0", "3.0"]


LATENT = ["--model", "latent-diffusion", "--width", "16", "--timesteps", "20", "--sample-steps", "3",
          "--first-stage-width", "16", "--first-stage-steps", "30", *ARGS, "--steps", "3"]


def test_every_node_trains_the_prior_over_rank_0s_first_stage(tmp_path):
    """Two nodes (one process each), each with a genlab cache of its own: the second node's cache
    holds a first stage for the same data and settings whose latent scale (a buffer, like a VQ
    codebook) differs, as one trained on another GPU or CPU can. Every rank must train over rank 0's
    first stage: the two processes then match one process with the same global batch."""
    from genlab.core.checkpoint import load_state, save_state
    from genlab.models.first_stage import SPEC, WEIGHTS

    done = single(*LATENT, "--out", str(tmp_path / "single"),
                  env={**os.environ, "GENLAB_CACHE": str(tmp_path / "cache0")})
    assert done.returncode == 0, done.stderr
    shutil.copytree(tmp_path / "cache0", tmp_path / "cache1")
    entry = next((tmp_path / "cache1" / "first_stage").glob(f"*/{SPEC}")).parent
    state, meta = load_state(entry / WEIGHTS)
    state["scale"] = state["scale"] * 1.5
    save_state(entry / WEIGHTS, state, meta)

    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               "-m", "genlab.cli", "train", *LATENT, "--out", str(tmp_path / f"ddp{node}")],
                              env={**os.environ, "GENLAB_CACHE": str(tmp_path / f"cache{node}")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    assert worst_difference(tmp_path / "ddp0", tmp_path / "single", ("/unet/", "/unet_ema/")) < 1e-5


def worst_difference(run_a, run_b, nets: tuple[str, ...]) -> float:
    """The largest difference between two runs' final weights, over the tensors of `nets` (name
    prefixes of the state: the networks, not the optimisers' moments). (A width-16 U-Net: at width 8
    its GroupNorm has one channel a group, which makes the gradient of a convolution's bias before it
    exactly 0 up to rounding, and Adam turns that rounding into steps of ~lr that differ between one
    and two processes.)"""
    a, b = full_state(run_a), full_state(run_b)
    names = [k for k in a if k.startswith(nets)]
    assert names, f"no tensor {nets} in {run_a}"
    return max((a[k] - b[k]).abs().max().item() for k in names)


DRAWS = {  # a family each whose training step draws noise, masks or augmentations per image, and its nets
    # the tutorial GAN (DCGAN's BatchNorm normalises each rank's share of a batch by its own statistics)
    "gan-mlp": (["--model", "gan-mlp", "--augment", "translation,cutout,color", "--loss", "wgan-gp"], ("/G/", "/D/")),
    "vae": (["--model", "vae", "--width", "8"], ("/encoder/", "/decoder/")),
    "transformer": (["--model", "transformer", "--d-model", "16", "--layers", "1", "--heads", "2", "--conditional",
                     "--label-dropout", "0.5"], ("/net/",)),
}


@pytest.mark.parametrize("family", DRAWS)
def test_two_processes_draw_what_one_process_draws(family, tmp_path):
    """Every per-image draw of a training step (DiffAugment's shifts, cut-outs and colours, WGAN-GP's
    mixing weights, the VAE's binarisation and reparameterisation noise, label dropout; diffusion's
    steps and noise and the latent draw above) is the rank's share of one draw for the global batch:
    drawn per rank, the ranks' alike-seeded streams gave every rank the same noise."""
    options, nets = DRAWS[family]
    args = [*options, *ARGS, "--steps", "3"]
    done = torchrun(*args, "--out", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    done = single(*args, "--out", str(tmp_path / "single"))
    assert done.returncode == 0, done.stderr
    assert worst_difference(tmp_path / "ddp", tmp_path / "single", nets) < 1e-5
