"""VAE recipes on the GAN benchmark's budget protocol, with the GAN's rows beside them (issue: VAE family).

Each recipe trains for `--minutes` (5) and 10,000 samples are scored with `genlab eval`, which also
reports the test NLL (importance-weighted, k = 100) and the negative ELBO. The GAN rows come from
benchmarks/results/gan_budget.rows.json (benchmarks/gan_budget.py's last rows). Then one
longer run on mnist-sample (`--full-minutes`, 20) reports the IW-NLL reached and the minutes it took.

    .venv/bin/python benchmarks/vae_budget.py [--minutes 5] [--full-minutes 20] [--datasets ...]
"""

from __future__ import annotations

import argparse
import json

from budget_protocol import ROOT, run_recipe, table  # beside this script
from write_table import read_rows, write_table

RECIPES = {"fashion-mnist": "configs/vae-fashion.yaml", "mnist-sample": "configs/vae-mnist-sample.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--full-minutes", type=float, default=20.0, help="the longer mnist-sample run (0: skip)")
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES))
    args = parser.parse_args()
    out_root = ROOT / "runs" / "vae_budget"
    rows = [run_recipe(ds, "vae", RECIPES[ds], args.minutes, out_root) for ds in args.datasets]
    gans = [r for r in read_rows("gan_budget.py") if r["dataset"] in args.datasets]
    text = table(sorted(rows + gans, key=lambda r: (r["dataset"], r["model"])),
                 f"budget {args.minutes:g} minutes per recipe; 10,000 samples; GAN rows from benchmarks/gan_budget.py")
    if args.full_minutes:
        full = run_recipe("mnist-sample", f"vae-{args.full_minutes:g}min", RECIPES["mnist-sample"], args.full_minutes,
                          out_root)
        rows.append(full)
        text += (f"\nlonger run: {RECIPES['mnist-sample']} for {full['minutes']:.1f} minutes ({full['steps']} steps): "
                 f"test IW-NLL {full['nll_nats']:.1f} nats (negative ELBO {full['neg_elbo_nats']:.1f}), "
                 f"{full['bits_per_dim']:.4f} bits/dim; FID {full['fid']:.1f}\n")
    print(text)
    write_table(__file__, text)
    (out_root / "rows.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
