"""The budget protocol every family's quality benchmark shares (issue: GAN family, and the VAE,
Transformer and diffusion issues after it): train a recipe for the same wall-clock budget on this
machine's cores, then score 10,000 samples with `genlab eval` in the dataset's own features."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def genlab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "genlab.cli", *args], check=True, cwd=ROOT)


def run_recipe(dataset: str, label: str, config: str, minutes: float, out_root: Path, n: int = 10_000,
               extra: tuple[str, ...] = ()) -> dict:
    """Train `config` on `dataset` for `minutes`, evaluate `n` samples; one row of the table."""
    out = out_root / f"{dataset}-{label}"
    genlab("train", "--config", config, "--dataset", dataset, "--minutes", str(minutes), "--out", str(out),
           "--overwrite", "--no-progress", "--checkpoint-every", "1000000", *extra)
    genlab("eval", str(out), "--n", str(n), "--json", str(out / "eval.json"))
    result = json.loads((out / "eval.json").read_text())
    meta = json.loads((out / "run.json").read_text())
    return {"dataset": dataset, "recipe": label, "config": config, "model": meta["model"], "steps": meta["steps"],
            "img_per_s": meta["img_per_s"], "minutes": meta["seconds"] / 60, "features": result["features"],
            **{k: v["value"] for k, v in result["metrics"].items()},
            "fid_floor": result["metrics"]["fid"]["floor"], "recall_floor": result["metrics"]["recall"]["floor"],
            "likelihood_convention": result.get("likelihood_convention")}


def table(rows: list[dict], note: str) -> str:
    """Markdown table of rows (FID, KID, IS, precision, recall, coverage, classes, NLL, img/s)."""
    head = ("| dataset | recipe | model | steps | img/s | FID | KID | IS | precision | recall | coverage | "
            "classes | class TV | NLL nats | bits/dim | FID floor |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        nll = f"{r['nll_nats']:.1f}" if r.get("nll_nats") is not None else "-"
        bpd = f"{r['bits_per_dim']:.3f}" if r.get("bits_per_dim") is not None else "-"
        lines.append(f"| {r['dataset']} | {r['recipe']} ({r['config'].split('/')[-1]}) | {r['model']} | {r['steps']} | "
                     f"{r['img_per_s']:.0f} | {r['fid']:.1f} | {r['kid']:.3g} | {r['is']:.2f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['coverage']:.3f} | {r['classes_found']} | {r['class_tv']:.3f} | "
                     f"{nll} | {bpd} | {r['fid_floor']:.2f} |")
    conventions = sorted({f"{r['model']} on {r['dataset']}: {r['likelihood_convention']}" for r in rows
                          if r.get("likelihood_convention")})
    return "\n".join(lines + ["", note, "", *[f"- likelihood, {c}" for c in conventions], ""])
