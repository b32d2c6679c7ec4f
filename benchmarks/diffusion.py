"""Diffusion: steps versus quality of DDIM and DDPM, and the budget protocol (issue: diffusion family).

1. The budget protocol of the GAN benchmark on both datasets (5 minutes), then the mnist-sample run
   continued with `genlab train --resume` to `--long` minutes (20), scored at each stage, to show how
   the curve continues with a longer budget.
2. Steps versus quality on the longest run's weights: DDIM with 10, 25, 50, 100 steps and full DDPM
   (1,000 steps), `--steps-n` (500) samples each, same seed; FID and sampling time.
   Target: DDIM-50 within 20 % of DDPM's FID at >= 15x less time.

A U-Net forward pass over 500 28x28 images takes about a second on 2 cores, so the budget runs
score `--n` (2,000) DDIM-50 samples instead of 10,000, and the steps table 500; the tables say so.

    .venv/bin/python benchmarks/diffusion.py [--minutes 5] [--long 20] [--n 2000] [--steps-n 500]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from budget_protocol import ROOT, genlab, run_recipe, table  # beside this script
from write_table import write_table

RECIPES = {"fashion-mnist": "configs/diffusion-fashion.yaml", "mnist-sample": "configs/diffusion-mnist-sample.yaml"}


def continue_run(run, minutes: float, n: int) -> dict:
    """Resume `run` to a total of `minutes` and score it again."""
    genlab("train", "--resume", str(run), "--minutes", str(minutes), "--no-progress")
    out = run / f"eval-{minutes:g}min.json"
    genlab("eval", str(run), "--n", str(n), "--json", str(out))
    result = json.loads(out.read_text())
    meta = json.loads((run / "run.json").read_text())
    return {"minutes": meta["seconds"] / 60, "steps": meta["steps"],
            **{k: v["value"] for k, v in result["metrics"].items()}}


def steps_versus_quality(run, n: int) -> list[dict]:
    from genlab.generate import load_run, sample_from
    from genlab.metrics.evaluate import evaluate

    config, model, _ = load_run(run)
    rows = []
    for sampler, steps, eta in [("ddim", 10, 0.0), ("ddim", 25, 0.0), ("ddim", 50, 0.0), ("ddim", 100, 0.0),
                                ("ddim", 50, 1.0), ("ddpm", 1000, 0.0)]:
        model.config.sampler, model.config.sample_steps = sampler, min(steps, model.config.timesteps)
        model.config.eta = eta
        start = time.perf_counter()
        images = sample_from(model, n, seed=0, batch_size=500)
        seconds = time.perf_counter() - start
        scores = evaluate(images, dataset=config.data.dataset, log=lambda *_: None)["metrics"]
        rows.append({"sampler": sampler if sampler == "ddpm" else f"ddim eta {eta:g}", "steps": steps, "seconds": seconds, "fid": scores["fid"]["value"],
                     "precision": scores["precision"]["value"], "recall": scores["recall"]["value"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--long", type=float, default=20.0, help="total minutes of the continued mnist-sample run")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--steps-n", type=int, default=500)
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES))
    args = parser.parse_args()
    torch.set_num_threads(2)
    out_root = ROOT / "runs" / "diffusion"
    rows = [run_recipe(ds, "diffusion", RECIPES[ds], args.minutes, out_root, n=args.n) for ds in args.datasets]
    text = table(rows, f"budget {args.minutes:g} minutes per recipe; {args.n:,} DDIM-50 samples scored (not 10,000: "
                       "sampling cost); class-conditional, guidance 1")
    long_run = out_root / "mnist-sample-diffusion"
    curve = [{"minutes": rows[-1]["minutes"], "steps": rows[-1]["steps"], "fid": rows[-1]["fid"],
              "recall": rows[-1]["recall"], "precision": rows[-1]["precision"]}]
    if args.long and "mnist-sample" in args.datasets:
        for minutes in sorted({args.long / 2, args.long}):
            if minutes > args.minutes:  # a stage the first run has already reached adds nothing
                curve.append(continue_run(long_run, minutes, args.n))
        text += "\nmnist-sample, the same run continued (`genlab train --resume RUN --minutes M`):\n\n"
        text += "| minutes | steps | FID | precision | recall |\n|---|---|---|---|---|\n"
        text += "".join(f"| {c['minutes']:.1f} | {c['steps']} | {c['fid']:.1f} | {c['precision']:.3f} | "
                        f"{c['recall']:.3f} |\n" for c in curve)
    steps = steps_versus_quality(long_run, args.steps_n)
    ddpm, ddim50 = steps[-1], min((r for r in steps if r["steps"] == 50), key=lambda r: r["fid"])
    text += (f"\nsteps versus quality ({long_run.name} after {curve[-1]['minutes']:.0f} minutes, "
             f"{args.steps_n} samples each, seed 0):\n\n| sampler | steps | seconds | FID | precision | recall |\n"
             "|---|---|---|---|---|---|\n")
    text += "".join(f"| {r['sampler']} | {r['steps']} | {r['seconds']:.1f} | {r['fid']:.1f} | {r['precision']:.3f} | "
                    f"{r['recall']:.3f} |\n" for r in steps)
    within = ddim50["fid"] <= 1.2 * ddpm["fid"]  # at most 20 % worse than DDPM
    speed = ddpm["seconds"] / ddim50["seconds"]
    text += (f"\nbest DDIM-50 ({ddim50['sampler']}) FID {ddim50['fid']:.1f} vs DDPM {ddpm['fid']:.1f} (within 20 %: {'met' if within else 'NOT met'}); "
             f"{speed:.1f}x less time (>= 15x: {'met' if speed >= 15 else 'NOT met'})\n")
    print(text)
    write_table(__file__, text)
    (out_root / "rows.json").write_text(json.dumps({"rows": rows, "curve": curve, "steps": steps}, indent=2))


if __name__ == "__main__":
    main()
