"""How much does genlab's Trainer cost over a plain PyTorch loop? (target: ratio >= 0.97)

Trains the tutorial GAN for the same number of steps, batch size and threads twice in one process:
once with a plain 20-line PyTorch loop over a float tensor, once with genlab's Trainer and the
callbacks `genlab train` gives it (progress bar, log.jsonl, a sample grid after every epoch, the
GAN diagnostics, a checkpoint every 1,000 steps and at the end; uint8 batches converted per step,
the NaN/inf guard on every loss and gradient). Runs alternate in ABBA order (plain, genlab, genlab,
plain, ...) so that drift in the machine's speed hits both; the ratio is the median of the repeats'
ratios. End-to-end `genlab.train` (which adds loading the data, the loss-curve plot and the final
weights) is timed once for reference.

    .venv/bin/python benchmarks/loop_overhead.py [--steps 1500] [--repeats 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import DataConfig, RunConfig, TrainConfig, default_config
from genlab.core.distributed import Ranks
from genlab.core.run import Run
from genlab.core.runtime import Runtime, seed_everything
from genlab.data import load_dataset
from genlab.models import build_model
from genlab.training.trainer import Trainer, make_callbacks, train
from write_table import write_table  # benchmarks/write_table.py, beside this script


def plain_loop(images: torch.Tensor, steps: int, batch: int, seed: int) -> float:
    """The tutorial's loop, written out by hand; returns img/s."""
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(100, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                      nn.Linear(512, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 784), nn.Tanh())
    D = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256), nn.LeakyReLU(0.2),
                      nn.Linear(256, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x_all = images.float().view(len(images), -1) / 127.5 - 1
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
    per_epoch, step, start = len(x_all) // batch, 0, time.perf_counter()
    while step < steps:
        perm = torch.randperm(len(x_all))
        for i in range(min(per_epoch, steps - step)):
            x = x_all[perm[i * batch:(i + 1) * batch]]
            fake = G(torch.randn(batch, 100))
            loss_d = (F.binary_cross_entropy_with_logits(D(x), ones)
                      + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
            opt_d.zero_grad(); loss_d.backward(); opt_d.step()  # noqa: E702
            loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
            opt_g.zero_grad(); loss_g.backward(); opt_g.step()  # noqa: E702
            step += 1
    return steps * batch / (time.perf_counter() - start)


def genlab_loop(data, steps: int, batch: int, seed: int, out: Path) -> float:
    """genlab's Trainer with the callbacks of `genlab train` (not the setup); returns img/s."""
    cfg = RunConfig(DataConfig(dataset="mnist-sample"), default_config().model,
                    TrainConfig(epochs=None, steps=steps, batch_size=batch, seed=seed, out=str(out), progress=True,
                                device="cpu"))
    seed_everything(seed)
    rt = Runtime()
    model = build_model(cfg.model, data.shape, data.num_classes, rt)
    run = Run.create(out, cfg, {"status": "running"})
    trainer = Trainer(model, data, cfg.train, rt, Ranks(), make_callbacks(cfg, run, model, data, Ranks()))
    start = time.perf_counter()
    trainer.fit()
    return trainer.state.images_seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(DataConfig(dataset="mnist-sample"))
    plain, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            # ABBA: plain first in even repeats, genlab first in odd ones, so a drift in the machine's
            # speed (it moves by 20 % within a minute on this shared host) falls on both alike
            runs = [("plain", lambda: plain_loop(data.images, args.steps, args.batch_size, seed=r)),
                    ("genlab", lambda: genlab_loop(data, args.steps, args.batch_size, r, Path(tmp) / f"run{r}"))]
            for name, fn in (runs if r % 2 == 0 else runs[::-1]):
                (plain if name == "plain" else ours).append(fn())
            print(f"repeat {r + 1}: plain {plain[-1]:.0f} img/s, genlab {ours[-1]:.0f} img/s, "
                  f"ratio {ours[-1] / plain[-1]:.3f}", file=sys.stderr)
        cfg = RunConfig(DataConfig(dataset="mnist-sample"), default_config().model,
                        TrainConfig(epochs=None, steps=args.steps, batch_size=args.batch_size,
                                    out=f"{tmp}/e2e", progress=False, device="cpu"))
        start = time.perf_counter()
        train(cfg)
        e2e = args.steps * args.batch_size / (time.perf_counter() - start)
    p, g = statistics.median(plain), statistics.median(ours)
    pair = statistics.median(o / q for o, q in zip(ours, plain))
    table = "\n".join([
        f"| loop | img/s (median of {args.repeats}) |", "|---|---|",
        f"| plain PyTorch, 20 lines | {p:.0f} |", f"| genlab Trainer with its callbacks | {g:.0f} |",
        f"| genlab.train end to end (load data, plot, save) | {e2e:.0f} |", "",
        f"steps {args.steps}, batch {args.batch_size}, threads {args.threads}, torch {torch.__version__}",
        f"ratio genlab / plain: {pair:.3f} (median of the {args.repeats} alternating repeats' ratios; ratio "
        f"of the medians {g / p:.3f}); target >= 0.97",
        "repeats' ratios: " + ", ".join(f"{o / q:.3f}" for o, q in zip(ours, plain)), ""])
    print("\n" + table)
    write_table(__file__, table)


if __name__ == "__main__":
    main()
