"""GAN recipes on the same wall-clock budget, evaluated the same way (issue: GAN family).

Each recipe trains for `--minutes` (5) on this machine's cores, then 10,000 samples are scored with
`genlab eval` in the dataset's own features, on the training split and held out. The tutorial
recipe runs beside the best recipe of each dataset. Targets for the best recipe: FID <= 1/10 of the
tutorial's, recall >= 0.6, all 10 classes found with class-histogram TV distance <= 0.05; on the
MNIST sample also, held out: FID within 1.5x of the held-out floor and recall >= 0.65. The emoji rows
(32 and 64 px) show how the recipes do on colour.

    .venv/bin/python benchmarks/gan_budget.py [--minutes 5] [--datasets fashion-mnist mnist-sample] [--recipes best]

Runs go to runs/gan_budget/; the rows to benchmarks/results/gan_budget.rows.json (recipes not rerun
keep theirs); the table to benchmarks/results/gan_budget.md.
"""

from __future__ import annotations

import argparse

from budget_protocol import ROOT, run_recipe, table  # beside this script
from write_table import read_rows, write_rows, write_table

RECIPES = {  # dataset -> [(label, config file, extra flags)]
    "fashion-mnist": [("tutorial", "configs/tutorial-gan-mnist.yaml", ()), ("best", "configs/dcgan-fashion.yaml", ())],
    "mnist-sample": [("tutorial", "configs/tutorial-gan-mnist.yaml", ()),
                     ("best", "configs/dcgan-mnist-sample.yaml", ())],
    "emoji": [("tutorial 32px", "configs/tutorial-gan-mnist.yaml", ("--image-size", "32")),
              ("best 32px", "configs/dcgan-emoji.yaml", ("--image-size", "32")),
              ("best 64px", "configs/dcgan-emoji.yaml", ())],
}


def verdict(rows: list[dict], dataset: str) -> str:
    """The targets: the GAN family's (FID a tenth of the tutorial's, recall, classes) and, for the
    MNIST sample, the held-out view's (FID within 1.5x its floor, recall >= 0.65)."""
    if dataset == "emoji":
        return ""
    tut = next((r for r in rows if r["dataset"] == dataset and r["recipe"] == "tutorial"), None)
    best = next((r for r in rows if r["dataset"] == dataset and r["recipe"] == "best"), None)
    if tut is None or best is None:
        return ""
    checks = [(f"FID {best['fid']:.1f} <= {tut['fid'] / 10:.1f} (tutorial / 10)", best["fid"] <= tut["fid"] / 10),
              (f"recall {best['recall']:.3f} >= 0.6", best["recall"] >= 0.6),
              (f"classes {best['classes_found']}/10", best["classes_found"] == 10),
              (f"class TV {best['class_tv']:.3f} <= 0.05", best["class_tv"] <= 0.05)]
    if dataset == "mnist-sample" and best.get("fid_heldout") is not None:
        ratio = best["fid_heldout"] / best["fid_heldout_floor"]
        checks += [(f"held-out FID {best['fid_heldout']:.1f} = {ratio:.2f}x its floor {best['fid_heldout_floor']:.1f} "
                    "(target <= 1.5x)", ratio <= 1.5),
                   (f"held-out recall {best['recall_heldout']:.3f} >= 0.65", best["recall_heldout"] >= 0.65)]
    return f"{dataset}: " + "; ".join(f"{text} {'met' if ok else 'NOT met'}" for text, ok in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES))
    parser.add_argument("--recipes", nargs="+", help="only these recipes (labels, e.g. best 'best 64px'); the "
                        "others keep their rows from the last run")
    args = parser.parse_args()
    out_root = ROOT / "runs" / "gan_budget"
    todo = [(ds, label, cfg, extra) for ds in args.datasets for label, cfg, extra in RECIPES[ds]
            if not args.recipes or label in args.recipes]
    rows = read_rows(__file__)  # recipes not rerun keep their rows from the last run
    for ds, label, cfg, extra in todo:
        new = run_recipe(ds, label, cfg, args.minutes, out_root, extra=extra)
        rows = [r for r in rows if (r["dataset"], r["recipe"]) != (ds, label)] + [new]
        write_rows(__file__, rows)
    order = [(ds, label) for ds in RECIPES for label, _, _ in RECIPES[ds]]
    rows.sort(key=lambda r: order.index((r["dataset"], r["recipe"])))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    text = table(rows, f"budget {args.minutes:g} minutes per recipe; 10,000 samples; features "
                 + ", ".join(sorted({r['features'] for r in rows})))
    text += "\n".join(v for v in (verdict(rows, ds) for ds in datasets) if v) + "\n"
    print(text)
    write_table(__file__, text)


if __name__ == "__main__":
    main()
