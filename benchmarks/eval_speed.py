"""Time the full metric suite on 10,000 samples once the extractor and real statistics are cached
(issue: evaluation, target <= 20 s on 2 cores), and report each dataset's feature extractor.

    .venv/bin/python benchmarks/eval_speed.py [--datasets mnist-sample fashion-mnist] [--n 10000]

The first run trains and caches each dataset's extractor (about 1.5 to 2.5 minutes each); the
timed evaluation is the second one: sampling from a tutorial GAN, features, FID, KID, IS,
precision/recall, density/coverage, class coverage and PPL (2,000 latent pairs).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import genlab
from genlab.config import DataConfig, default_config
from genlab.data import load_dataset
from genlab.generate import sample_from
from genlab.metrics.features import get_extractor
from genlab.models import build_model
from write_table import write_table  # benchmarks/write_table.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist-sample", "fashion-mnist"])
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    rows = []
    for dataset in args.datasets:
        cfg = DataConfig(dataset=dataset)
        started = time.perf_counter()
        extractor = get_extractor(cfg, log=say)
        setup = time.perf_counter() - started
        data = load_dataset(cfg)
        torch.manual_seed(0)
        gan = build_model(default_config().model, data.shape, data.num_classes)
        genlab.evaluate(data.images[:100], dataset=dataset, log=say)  # reference statistics cached
        started = time.perf_counter()
        images = sample_from(gan, args.n, seed=0)
        result = genlab.evaluate(images, dataset=dataset, model=gan, log=say)
        seconds = time.perf_counter() - started
        rows.append(f"| {dataset} | {extractor.name} | {extractor.spec['test_accuracy']:.2%} | "
                    f"{extractor.spec['train_seconds']:.0f} s | {args.n} | {seconds:.1f} s | "
                    f"{result['metrics']['fid']['floor']:.3g} |")
        say(f"{dataset}: {seconds:.1f} s (extractor ready in {setup:.1f} s)")
    table = "\n".join([
        "| dataset | features | extractor test accuracy | extractor training | samples | full suite (cached) | FID real floor |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"threads {torch.get_num_threads()}, torch {torch.__version__}; target: full suite <= 20 s", ""])
    print(table)
    write_table(__file__, table)


if __name__ == "__main__":
    main()
