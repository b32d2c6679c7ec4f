"""Quality against compute (issue: flow matching and few-step sampling): for trained diffusion and
flow runs, FID on the training split and held out at a number of network evaluations (NFE) per
sampler, and the seconds 10,000 samples take.

NFE counts the solver's evaluations of the (guided) model a sample takes: steps for DDIM, DDPM,
DPM-Solver++(2M), UniPC and Euler, twice the steps for Heun and midpoint; dopri5 chooses its own
(one row per --tolerances value, its measured NFE). A guided evaluation counts once, though it runs
the network twice where guidance applies; the seconds include that. Sampling is timed in this process
(the model loaded, no process start), one benchmark alone on the machine.

    .venv/bin/python benchmarks/sampling_nfe.py [--runs RUN ...] [--nfe 5 10 20 50 100] [--n 10000]
        [--samplers ...] [--tolerances 1e-2 1e-3]

Default runs: the 5-minute latent rows of benchmarks/latent_budget.py (runs/latent_budget/). Rows
not rerun keep their values (benchmarks/results/sampling_nfe.rows.json); the table goes to
benchmarks/results/sampling_nfe.md and the plot (FID held-out against NFE, one line per sampler, a
panel per run) to benchmarks/results/sampling_nfe.png.

Target (latent diffusion, the 5-minute recipes): 10,000 samples in <= 30 s at a held-out FID no worse
than 1.1x DDIM-50's.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

from budget_protocol import ROOT  # beside this script
from write_table import RESULTS, read_rows, write_rows, write_table

DEFAULT_RUNS = ["runs/latent_budget/fashion-mnist-latent-diffusion-5min",
                "runs/latent_budget/fashion-mnist-latent-flow-5min",
                "runs/latent_budget/mnist-sample-latent-diffusion-5min",
                "runs/latent_budget/mnist-sample-latent-flow-5min"]
TWO_A_STEP = {"heun", "midpoint"}  # network evaluations a step: 2


def steps_for(sampler: str, nfe: int) -> int:
    return nfe // 2 if sampler in TWO_A_STEP else nfe


def measure(trained, run: str, sampler: str, options: dict, n: int, data) -> dict:
    from genlab.generate import labels_for, sample_from
    from genlab.metrics.evaluate import evaluate

    labels = labels_for(trained.family, n, proportions=trained.meta.get("class_counts"))
    started = time.monotonic()
    images = sample_from(trained.family, n, seed=0, labels=labels, options={"sampler": sampler, **options})
    seconds = time.monotonic() - started
    result = evaluate(images, data=data, seed=0, log=lambda *_: None)
    m = result["metrics"]
    return {"run": run, "model": trained.config.model.name, "sampler": sampler, **options,
            "nfe": trained.family.last_nfe, "n": n, "seconds_10k": seconds * 10_000 / n,
            "fid": m["fid"]["value"], "fid_heldout": m.get("fid_heldout", {}).get("value"),
            "fid_floor": m["fid"]["floor"], "fid_heldout_floor": m.get("fid_heldout", {}).get("floor"),
            "features": result["features"]}


def table(rows: list[dict]) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = "| run | sampler | steps (tolerance) | NFE | FID | FID held-out (floor) | 10k samples (s) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        setting = f"({r['tolerance']:g})" if "tolerance" in r else str(r.get("steps"))
        lines.append(f"| {Path(r['run']).name} | {r['sampler']} | {setting} | {r['nfe']} | {r['fid']:.1f} | "
                     f"{f(r['fid_heldout'], '.1f')} ({f(r['fid_heldout_floor'], '.1f')}) | {r['seconds_10k']:.1f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for run in sorted({r["run"] for r in rows if r["model"] == "latent-diffusion"}):
        mine = [r for r in rows if r["run"] == run and r.get("fid_heldout") is not None]
        ref = [r for r in mine if r["sampler"] == "ddim" and r.get("steps") == 50]
        if not ref:
            continue
        bound = 1.1 * ref[0]["fid_heldout"]
        ok = [r for r in mine if r["seconds_10k"] <= 30 and r["fid_heldout"] <= bound]
        best = min(ok or mine, key=lambda r: (r["fid_heldout"] if ok else r["seconds_10k"]))
        verdict = "met" if ok else "NOT met"
        out.append(f"{Path(run).name}: DDIM-50 held-out FID {ref[0]['fid_heldout']:.1f} in {ref[0]['seconds_10k']:.0f} s; "
                   f"<= 30 s at held-out FID <= {bound:.1f} {verdict}: {best['sampler']} {best.get('steps')} steps, "
                   f"FID held-out {best['fid_heldout']:.1f} in {best['seconds_10k']:.1f} s")
    return out


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted({r["run"] for r in rows})
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        mine = [r for r in rows if r["run"] == run and r.get("fid_heldout") is not None]
        for sampler in sorted({r["sampler"] for r in mine}):
            points = sorted((r["nfe"], r["fid_heldout"]) for r in mine if r["sampler"] == sampler)
            ax.plot(*zip(*points), marker="o", label=sampler)
        floor = next((r["fid_heldout_floor"] for r in mine if r.get("fid_heldout_floor") is not None), None)
        if floor is not None:
            ax.axhline(floor, color="grey", linestyle=":", label="real floor")
        ax.set(xscale="log", yscale="log", xlabel="network evaluations a sample (NFE)", ylabel="FID (held-out)",
               title=Path(run).name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--n", type=int, default=10_000, help="samples a point (FID and the seconds, scaled to 10k)")
    parser.add_argument("--samplers", nargs="+", help="only these samplers (default: every sampler of each family)")
    parser.add_argument("--tolerances", type=float, nargs="*", default=[1e-2, 1e-3], help="dopri5's, a row each")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a sampling option for every point (e.g. eta=1)")
    args = parser.parse_args()

    from genlab.generate import load, parse_option_items
    from genlab.models.solvers import MIN_STEPS

    fixed = parse_option_items(args.option)
    rows = read_rows(__file__)
    for run in args.runs:
        if not (ROOT / run / "run.json").is_file():
            print(f"skipped {run}: no finished run there (benchmarks/latent_budget.py trains it)")
            continue
        trained = load(ROOT / run)
        family = trained.family
        has = next(f.metadata["choices"] for f in dataclasses.fields(family.sampling_defaults()) if f.name == "sampler")
        samplers = [s for s in has if not args.samplers or s in args.samplers]
        points = []
        for sampler in samplers:
            if sampler == "dopri5":
                points += [(sampler, {"tolerance": tol}) for tol in args.tolerances]
                continue
            least = MIN_STEPS.get(sampler, 1)
            points += [(sampler, {"steps": steps_for(sampler, nfe)}) for nfe in args.nfe
                       if steps_for(sampler, nfe) >= least]
        for sampler, options in points:
            row = measure(trained, run, sampler, {**fixed, **options}, args.n, trained.config.data)
            print(row, flush=True)
            key = (run, sampler, options.get("steps"), options.get("tolerance"))
            rows = [r for r in rows if (r["run"], r["sampler"], r.get("steps"), r.get("tolerance")) != key] + [row]
            write_rows(__file__, rows)
    rows.sort(key=lambda r: (r["run"], r["sampler"], r["nfe"]))
    features = ", ".join(sorted({r["features"] for r in rows}))
    text = "\n".join([table(rows), "", f"{args.n:,} samples a point (seconds scaled to 10,000); features: {features}",
                      "", *verdicts(rows), "", "![FID held-out against NFE](sampling_nfe.png)", ""])
    plot(rows, RESULTS / "sampling_nfe.png")
    shutil.copy(RESULTS / "sampling_nfe.png", ROOT / "docs" / "img" / "sampling_nfe.png")  # the docs' figure
    print(text)
    write_table(__file__, text)


if __name__ == "__main__":
    main()
