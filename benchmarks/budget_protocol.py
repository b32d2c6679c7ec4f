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
    out = out_root / f"{dataset}-{label}".replace(" ", "-")
    genlab("train", "--config", config, "--dataset", dataset, "--minutes", str(minutes), "--out", str(out),
           "--overwrite", "--no-progress", "--checkpoint-every", "1000000", *extra)
    genlab("eval", str(out), "--n", str(n), "--json", str(out / "eval.json"))
    result = json.loads((out / "eval.json").read_text())
    meta = json.loads((out / "run.json").read_text())
    return {"dataset": dataset, "recipe": label, "config": config, "model": meta["model"], "steps": meta["steps"],
            "img_per_s": meta["img_per_s"], "minutes": meta["seconds"] / 60, "features": result["features"],
            **{k: v["value"] for k, v in result["metrics"].items()},
            "fid_floor": result["metrics"]["fid"]["floor"], "recall_floor": result["metrics"]["recall"]["floor"],
            "fid_heldout_floor": result["metrics"].get("fid_heldout", {}).get("floor"),
            "recall_heldout_floor": result["metrics"].get("recall_heldout", {}).get("floor"),
            "extra": " ".join(extra),
            "likelihood_convention": result.get("likelihood_convention")}


def table(rows: list[dict], note: str) -> str:
    """Markdown table of rows: the training-split view (FID, KID, IS, precision, recall, coverage,
    classes) and the held-out view (FID and recall against held-out images, beside their floors,
    and the data-copying statistic C_T), NLL and img/s."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = ("| dataset | recipe | model | steps | img/s | FID | KID | IS | precision | recall | coverage | "
            "classes | class TV | FID floor | FID held-out (floor) | recall held-out (floor) | copying C_T | NLL nats | "
            "bits/dim |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        extra = f", {r['extra']}" if r.get("extra") else ""
        lines.append(f"| {r['dataset']} | {r['recipe']} ({r['config'].split('/')[-1]}{extra}) | {r['model']} | "
                     f"{r['steps']} | {r['img_per_s']:.0f} | {r['fid']:.1f} | {r['kid']:.3g} | {f(r.get('is'), '.2f')} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['coverage']:.3f} | {r.get('classes_found', '-')} | "
                     f"{f(r.get('class_tv'), '.3f')} | {r['fid_floor']:.2f} | {f(r.get('fid_heldout'), '.1f')} "
                     f"({f(r.get('fid_heldout_floor'), '.1f')}) | {f(r.get('recall_heldout'), '.3f')} "
                     f"({f(r.get('recall_heldout_floor'), '.3f')}) | {f(r.get('data_copying'), '.2f')} | "
                     f"{f(r.get('nll_nats'), '.1f')} | {f(r.get('bits_per_dim'), '.3f')} |")
    conventions = sorted({f"{r['model']} on {r['dataset']}: {r['likelihood_convention']}" for r in rows
                          if r.get("likelihood_convention")})
    return "\n".join(lines + ["", note, "", *[f"- likelihood, {c}" for c in conventions], ""])
