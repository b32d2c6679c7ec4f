"""Checkpoint write and resume time for the largest family present, and training throughput with
1 vs 2 gloo processes under torchrun on this machine (issue: runs that survive).

    .venv/bin/python benchmarks/checkpoint_resume.py [--steps 300]

On 2 cores two processes cannot be faster than one (each gets one core and they exchange every
gradient); the point of the distributed path is correctness, which tests/train/test_distributed.py
checks. The numbers here say what it costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from genlab.models import MODELS, build_model
from genlab.core.checkpoint import load_state
from genlab.core.run import Run
from genlab.core.runtime import capture_rng, restore_rng
from write_table import write_table  # benchmarks/write_table.py, beside this script


def largest_family() -> tuple[str, object]:
    sizes = {}
    for name, entry in MODELS.items():
        model = build_model(entry.config_class(), (1, 28, 28), 10)
        sizes[name] = sum(p.numel() for net in model.nets().values() for p in net.parameters())
    name = max(sizes, key=sizes.get)
    return name, build_model(MODELS[name].config_class(), (1, 28, 28), 10)


def time_checkpoints(repeats: int = 5) -> dict:
    name, model = largest_family()
    model.train_step(torch.zeros(64, 1, 28, 28, dtype=torch.uint8), torch.zeros(64, dtype=torch.int64))
    tree = {"model": model.state_dict(), "loop": {"step": 1}, "rng": capture_rng()}
    writes, reads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))
        for i in range(repeats):
            start = time.perf_counter()
            path = run.save_checkpoint(i + 1, tree, keep=1)
            writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded, _ = load_state(path)
            model.load_state_dict(loaded["model"])
            restore_rng(loaded["rng"])
            reads.append(time.perf_counter() - start)
        size = path.stat().st_size
    return {"family": name, "mb": size / 2**20, "write_s": statistics.median(writes),
            "resume_s": statistics.median(reads)}


def throughput(procs: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["train", "--steps", str(steps), "--batch-size", "64", "--out", f"{tmp}/run", "--no-progress",
                "--device", "cpu", "--checkpoint-every", str(10 * steps)]
        if procs == 1:
            cmd = [sys.executable, "-m", "genlab.cli", *args, "--threads", "2"]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                   "-m", "genlab.cli", *args, "--threads", "1"]
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads(Path(f"{tmp}/run/run.json").read_text())["img_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    ck = time_checkpoints()
    one, two = throughput(1, args.steps), throughput(2, args.steps)
    table = "\n".join([
        "| measure | value |", "|---|---|",
        f"| largest family | {ck['family']} |",
        f"| checkpoint size | {ck['mb']:.1f} MiB |",
        f"| checkpoint write (fsync, rename, prune; median of 5) | {ck['write_s'] * 1000:.0f} ms |",
        f"| resume: load + restore state and RNGs (median of 5) | {ck['resume_s'] * 1000:.0f} ms |",
        f"| 1 process, 2 threads | {one:.0f} img/s |",
        f"| 2 gloo processes, 1 thread each | {two:.0f} img/s |", "",
        f"{args.steps} steps of batch 64, torch {torch.__version__}", ""])
    print(table)
    write_table(__file__, table)


if __name__ == "__main__":
    main()
