"""Text-to-image on emoji (issue: prompts): configs/text-to-image-emoji.yaml trained for `--minutes`
(its first stage included), beside the same recipe conditioned on the 9 categories instead of text,
each scored by `genlab eval` (10,000 samples; the text run's drawn with the captions of training
images): FID (training split and held out), and for the text run CLIP score beside the real held-out
images' own (floor) and R-precision (its own caption ranked first among 32) beside real held-out
images (ceiling) and unconditional samples (chance); and the seconds 10,000 samples take.

    .venv/bin/python benchmarks/text_to_image.py [--minutes 10 [5 30]] [--n 10000]

Targets (32 px, 10 minutes): R-precision on training prompts >= 0.5; on the held-out combinations
(emoji at skin tones trained on, but not together; genlab.data.emoji) >= 0.3; FID (held-out) <= 1.2x
the class-conditional recipe's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

from budget_protocol import ROOT, genlab  # beside this script
from write_table import read_rows, write_rows, write_table

CONFIG = "configs/text-to-image-emoji.yaml"
VARIANTS = {"text": ("--text",), "class": ("--no-text", "--conditional")}


def row(variant: str, minutes: float, n: int, rescore: bool = False) -> dict:
    from genlab.paths import cache_dir

    out = ROOT / "runs" / "text_to_image" / f"emoji32-{variant}-{minutes:g}min"
    if not rescore:  # --rescore: evaluate the run this benchmark trained before again, as it is
        shutil.rmtree(cache_dir() / "first_stage", ignore_errors=True)  # the budget includes the first stage
        genlab("train", "--config", CONFIG, "--minutes", str(minutes), "--out", str(out), "--overwrite",
               "--no-progress", "--checkpoint-every", "1000000", *VARIANTS[variant])
    genlab("eval", str(out), "--n", str(n), "--json", str(out / "eval.json"))
    result = json.loads((out / "eval.json").read_text())
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "genlab.cli", "sample", str(out), "--n", "10000", "--out",
                    str(out / "timing.npz")], check=True, cwd=ROOT, capture_output=True)
    seconds = time.monotonic() - started
    (out / "timing.npz").unlink(missing_ok=True)
    meta = json.loads((out / "run.json").read_text())
    m = result["metrics"]
    return {"variant": variant, "minutes": minutes, "steps": meta["steps"], "n": n, "features": result["features"],
            "sample_seconds": seconds, **{f"{k}": v["value"] for k, v in m.items()},
            **{f"{k}_floor": v.get("floor") for k, v in m.items()},
            **{f"{k}_chance": v["chance"] for k, v in m.items() if "chance" in v}}


def table(rows: list[dict]) -> str:
    def f(r, k, fmt=".2f"):
        v = r.get(k)
        return "-" if v is None else format(v, fmt)

    head = ("| conditioning | budget | steps | FID | FID held-out (floor) | CLIP score (real floor) | "
            "R-precision (real ceiling) | R-precision unconditional (chance) | R-precision held-out combinations "
            "(real ceiling) | same emoji, other tones: ranked first (real; chance) | sampling 10k (s) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['minutes']:g} min | {r['steps']} | {f(r, 'fid', '.1f')} | "
                     f"{f(r, 'fid_heldout', '.1f')} ({f(r, 'fid_heldout_floor', '.1f')}) | {f(r, 'clip_score', '.1f')} "
                     f"({f(r, 'clip_score_floor', '.1f')}) | {f(r, 'r_precision')} ({f(r, 'r_precision_floor')}) | "
                     f"{f(r, 'r_precision_unconditional')} ({f(r, 'r_precision_unconditional_floor')}) | "
                     f"{f(r, 'r_precision_combinations')} ({f(r, 'r_precision_combinations_floor')}) | "
                     f"{f(r, 'r_precision_combinations_part')} ({f(r, 'r_precision_combinations_part_floor')}; "
                     f"{f(r, 'r_precision_combinations_part_chance')}) | {r['sample_seconds']:.1f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for minutes in sorted({r["minutes"] for r in rows}):
        at = {r["variant"]: r for r in rows if r["minutes"] == minutes}
        if "text" not in at:
            continue
        t = at["text"]
        checks = [(f"R-precision on training prompts {t['r_precision']:.2f} >= 0.5", t["r_precision"] >= 0.5)]
        if t.get("r_precision_combinations") is not None:
            checks.append((f"R-precision on held-out combinations {t['r_precision_combinations']:.2f} >= 0.3",
                           t["r_precision_combinations"] >= 0.3))
        if "class" in at:
            bound = 1.2 * at["class"]["fid_heldout"]
            checks.append((f"FID held-out {t['fid_heldout']:.1f} <= {bound:.1f} (1.2x the class-conditional)",
                           t["fid_heldout"] <= bound))
        out.append(f"{minutes:g} min: " + "; ".join(f"{c} {'met' if ok else 'NOT met'}" for c, ok in checks))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rescore", action="store_true", help="evaluate the runs trained before again (no training)")
    args = parser.parse_args()
    rows = read_rows(__file__)
    for minutes in args.minutes:
        for variant in args.variants:
            new = row(variant, minutes, args.n, args.rescore)
            rows = [r for r in rows if (r["variant"], r["minutes"]) != (variant, minutes)] + [new]
            write_rows(__file__, rows)
    rows.sort(key=lambda r: (r["minutes"], r["variant"]))
    text = "\n".join([table(rows), "", f"emoji at 32 px; samples a row: {rows[0]['n']:,}; features: "
                      + ", ".join(sorted({r['features'] for r in rows})), "", *verdicts(rows), ""])
    print(text)
    write_table(__file__, text)


if __name__ == "__main__":
    main()
