"""GAN recipes on the same wall-clock budget, evaluated the same way (issue: GAN family).

Each recipe trains for `--minutes` (5) on this machine's cores, then 10,000 samples are scored with
`genlab eval` in the dataset's own features. The tutorial recipe runs beside the best recipe of each
dataset. Targets for the best recipe: FID <= 1/10 of the tutorial's, recall >= 0.6, all 10 classes
found with class-histogram TV distance <= 0.05.

    .venv/bin/python benchmarks/gan_budget.py [--minutes 5] [--datasets fashion-mnist mnist-sample]

Runs go to runs/gan_budget/; the table to benchmarks/results/gan_budget.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from write_table import write_table  # benchmarks/write_table.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {  # dataset -> [(label, config file)]
    "fashion-mnist": [("tutorial", "configs/tutorial-gan-mnist.yaml"), ("best", "configs/dcgan-fashion.yaml")],
    "mnist-sample": [("tutorial", "configs/tutorial-gan-mnist.yaml"), ("best", "configs/dcgan-mnist-sample.yaml")],
}


def genlab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "genlab.cli", *args], check=True, cwd=ROOT)


def run_recipe(dataset: str, label: str, config: str, minutes: float, out_root: Path) -> dict:
    out = out_root / f"{dataset}-{label}"
    genlab("train", "--config", config, "--dataset", dataset, "--minutes", str(minutes), "--out", str(out),
           "--overwrite", "--no-progress", "--checkpoint-every", "1000000")
    genlab("eval", str(out), "--n", "10000", "--json", str(out / "eval.json"))
    result = json.loads((out / "eval.json").read_text())
    meta = json.loads((out / "run.json").read_text())
    return {"dataset": dataset, "recipe": label, "config": config, "model": meta["model"], "steps": meta["steps"],
            "img_per_s": meta["img_per_s"], "features": result["features"],
            **{k: v["value"] for k, v in result["metrics"].items()},
            "fid_floor": result["metrics"]["fid"]["floor"], "recall_floor": result["metrics"]["recall"]["floor"]}


def verdict(rows: list[dict], dataset: str) -> str:
    tut = next(r for r in rows if r["dataset"] == dataset and r["recipe"] == "tutorial")
    best = next(r for r in rows if r["dataset"] == dataset and r["recipe"] == "best")
    checks = [(f"FID {best['fid']:.1f} <= {tut['fid'] / 10:.1f} (tutorial / 10)", best["fid"] <= tut["fid"] / 10),
              (f"recall {best['recall']:.3f} >= 0.6", best["recall"] >= 0.6),
              (f"classes {best['classes_found']}/10", best["classes_found"] == 10),
              (f"class TV {best['class_tv']:.3f} <= 0.05", best["class_tv"] <= 0.05)]
    return f"{dataset}: " + "; ".join(f"{text} {'met' if ok else 'NOT met'}" for text, ok in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES))
    args = parser.parse_args()
    out_root = ROOT / "runs" / "gan_budget"
    rows = [run_recipe(ds, label, cfg, args.minutes, out_root) for ds in args.datasets for label, cfg in RECIPES[ds]]
    head = ("| dataset | recipe | model | steps | img/s | FID | KID | IS | precision | recall | coverage | "
            "classes | class TV | FID floor |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['recipe']} ({r['config'].split('/')[-1]}) | {r['model']} | {r['steps']} | "
                     f"{r['img_per_s']:.0f} | {r['fid']:.1f} | {r['kid']:.3g} | {r['is']:.2f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['coverage']:.3f} | {r['classes_found']} | {r['class_tv']:.3f} | "
                     f"{r['fid_floor']:.2f} |")
    table = "\n".join(lines + ["", f"budget {args.minutes:g} minutes per recipe; 10,000 samples; features "
                               + ", ".join(sorted({r['features'] for r in rows})), ""]
                      + [verdict(rows, ds) for ds in args.datasets] + [""])
    print(table)
    write_table(__file__, table)
    (out_root / "rows.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
