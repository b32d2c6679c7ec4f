"""Pixel Transformer: KV-cache sampling speed, sampling memory, and the budget protocol (issue:
autoregressive Transformer family).

1. Sampling speed: 64 images of 28x28 from the same weights and seed, with and without the
   key/value cache (target: cached >= 10x faster; the images must be identical).
2. Peak memory (VmHWM of a fresh process, reset at its start) of sampling 1,000 images in one call
   (target < 2 GB). `--memory-only` measures just this.
3. The GAN benchmark's 5-minute budget protocol on both datasets: FID, precision, recall, coverage
   and the exact test NLL. Sampling is ~16 ms per pixel position for 256 images on 2 cores, so
   `--n` (2,000) samples are scored instead of 10,000; the table says so.

    .venv/bin/python benchmarks/transformer.py [--minutes 5] [--n 2000] [--datasets ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from budget_protocol import ROOT, run_recipe, table  # beside this script
from write_table import write_table

RECIPES = {"fashion-mnist": "configs/transformer-fashion.yaml", "mnist-sample": "configs/transformer-mnist-sample.yaml"}

MEMORY_PROBE = """
import torch
from genlab.config import default_config
from genlab.models import build_model

def peak_mib():  # VmHWM: this process's peak resident memory
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024

# a child's peak starts at its parent's (it is inherited across fork): reset it first
open("/proc/self/clear_refs", "w").write("5")
torch.set_num_threads(2)
model = build_model(default_config("transformer").model, (1, 28, 28), 10)
before = peak_mib()
images = model.sample(1000, generator=torch.Generator().manual_seed(0))
assert images.shape == (1000, 1, 28, 28)
print(before, peak_mib())
"""


def sampling_speed(run_dir) -> dict:
    from genlab.generate import load_run

    _, model, _ = load_run(run_dir)
    times, images = {}, {}
    for cache in (True, False):
        start = time.perf_counter()
        images[cache] = model.sample(64, generator=torch.Generator().manual_seed(0), cache=cache)
        times[cache] = time.perf_counter() - start
    return {"cached_s": times[True], "uncached_s": times[False], "speedup": times[False] / times[True],
            "identical": bool(torch.equal(images[True], images[False]))}


def sampling_memory() -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], check=True, capture_output=True, text=True, cwd=ROOT)
    before, peak = map(float, out.stdout.split())
    return before, peak


def memory_line(before: float, peak: float) -> str:
    return (f"peak memory sampling 1,000 images in one call: {peak:.0f} MiB peak RSS (process with the model "
            f"loaded: {before:.0f} MiB; target < 2,048 MiB: {'met' if peak < 2048 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--n", type=int, default=2000, help="samples scored per recipe")
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES))
    parser.add_argument("--memory-only", action="store_true", help="re-measure the memory line of the last table")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.memory_only:
        before, peak = sampling_memory()
        line = memory_line(before, peak)
        results = Path(__file__).parent / "results" / "transformer.md"
        lines = [line if l.startswith("peak memory") else l for l in results.read_text().splitlines()]
        results.write_text("\n".join(lines) + "\n")
        print(line)
        return
    out_root = ROOT / "runs" / "transformer"
    rows = [run_recipe(ds, "transformer", RECIPES[ds], args.minutes, out_root, n=args.n) for ds in args.datasets]
    speed = sampling_speed(out_root / f"{args.datasets[-1]}-transformer")
    before, peak = sampling_memory()
    text = table(rows, f"budget {args.minutes:g} minutes per recipe; {args.n:,} samples scored (not 10,000: "
                       "sampling cost); unconditional")
    text += (f"\nsampling 64 images of 28x28 (trained weights of {args.datasets[-1]}, seed 0): cached "
             f"{speed['cached_s']:.1f} s, uncached {speed['uncached_s']:.1f} s, speed-up {speed['speedup']:.1f}x "
             f"(target >= 10x: {'met' if speed['speedup'] >= 10 else 'NOT met'}); identical images: {speed['identical']}\n"
             f"\n{memory_line(before, peak)}\n")
    print(text)
    write_table(__file__, text)
    (out_root / "rows.json").write_text(json.dumps({"rows": rows, "speed": speed, "memory_mib": [before, peak]},
                                                   indent=2))


if __name__ == "__main__":
    main()
