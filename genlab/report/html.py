"""A run as one self-contained HTML page, and a set of runs as one comparison page.

Everything the page shows is inside it (PNG images as data: URIs, inline CSS, no scripts, no
links out), so it opens from disk, offline, and can be mailed as one file. Each plot is also written
as a PNG in a folder next to the page (`NAME_files/`), for slides and papers.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from genlab import plots
from genlab.config import REQUIRED, config_text, option
from genlab.core.images import make_grid, png_bytes
from genlab.core.run import Run
from genlab.errors import GenlabError
from genlab.generate import load
from genlab.metrics.human import describe, human_scores

STRIP_FRAMES = 8  # sample grids shown from first to last epoch


@dataclass
class ReportOptions:
    """`genlab report RUN`: one self-contained HTML page of a run."""

    run: str = option(REQUIRED, "run folder made by `genlab train` (run `genlab eval RUN` first for metrics)",
                      positional=True)
    out: str | None = option(None, "the HTML file to write (default RUN/report.html); plots go to OUT_files/")

    def validate(self) -> None: ...


@dataclass
class CompareOptions:
    """`genlab compare RUN...`: runs side by side in one HTML page."""

    runs: list[str] = option([], "run folders (each evaluated with `genlab eval RUN` for metrics)", positional=True)
    out: str = option("compare.html", "the HTML file to write; plots go to OUT_files/")
    markdown: bool = option(False, "also print the table as markdown")
    samples: int = option(16, "samples shown per run")

    def validate(self) -> None:
        if not self.runs:
            raise GenlabError("compare needs at least one run folder")
        if not 1 <= self.samples <= 256:
            raise GenlabError(f"--samples must lie in 1..256, got {self.samples}")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1100px;padding:1rem 2rem;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.3rem;text-align:center;vertical-align:top} figcaption{font-size:.8rem;color:#555}
img{image-rendering:pixelated;max-width:100%} pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem}
.muted{color:#777} .diag{border-left:4px solid #d9822b;padding:.2rem .8rem;margin:.4rem 0;background:#fdf6ee}
"""


# ---------------------------------------------------------------- small pieces

def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(data: bytes, caption: str, alt: str | None = None) -> str:
    return (f'<figure><img src="{png_uri(data)}" alt="{html.escape(alt or caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def missing(text: str) -> str:
    return f'<p class="muted">{html.escape(text)}</p>'


def table_html(rows: list[list], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def page(title: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def plot_file(files: Path, name: str) -> Path:
    files.mkdir(parents=True, exist_ok=True)
    return files / f"{name}.png"


# ---------------------------------------------------------------- one run

def conditional(run: Run) -> bool:
    """Whether the run's model was told the class (run.json says so; older runs, their config)."""
    meta = run.meta
    if "conditional_classes" in meta:
        return bool(meta["conditional_classes"])
    return bool(run.config.to_dict()["model"].get("conditional"))


def _overview(run: Run, meta: dict) -> str:
    rows = [["model", meta.get("model")], ["dataset", f"{meta.get('dataset')} ({meta.get('dataset_split')}, "
                                           f"{meta.get('num_images')} images)"],
            ["status", f"{meta.get('status')}: {meta.get('stop_reason') or ''}"],
            ["steps", meta.get("steps")], ["training time", f"{meta.get('seconds', 0) / 60:.1f} min"],
            ["images per second", meta.get("img_per_s")], ["conditional", conditional(run)]]
    return section("overview", f"Run {run.name}", table_html(rows, ["", ""]))


def _config(run: Run, meta: dict) -> str:
    env_keys = ("genlab_version", "torch_version", "python_version", "platform", "device", "precision",
                "world_size", "threads", "seed", "dataset_checksum", "started", "finished")
    env = table_html([[k, fmt(meta.get(k))] for k in env_keys if k in meta], ["environment", ""])
    text = config_text(run.config)
    return section("config", "Config and environment",
                   f"<pre>{html.escape(text)}</pre>\n{env}\n<p>Repeat it with "
                   f"<code>genlab train --config {html.escape(str(run / Run.CONFIG))} --out NEW</code>.</p>")


def _grid_files(run: Run) -> list[Path]:
    epochs = sorted((run / Run.SAMPLES).glob("epoch_*.png"))
    final = run / Run.SAMPLES / "final.png"
    return epochs + ([final] if final.is_file() else [])


def _samples(run: Run) -> str:
    grids = _grid_files(run)
    if not grids:
        return section("samples", "Samples over training", missing("No sample grids were written."))
    if len(grids) > STRIP_FRAMES:  # first, last and evenly spaced between
        idx = sorted({round(i * (len(grids) - 1) / (STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)})
        grids = [grids[i] for i in idx]
    figs = "".join(figure(p.read_bytes(), p.stem.replace("_", " ")) for p in grids)
    return section("samples", "Samples over training", "<p>The same noise each time, so a grid can be "
                   "compared image by image with the one before.</p>" + figs)


def _classes(run: Run, meta: dict) -> str:
    if not conditional(run):
        return section("classes", "Per-class samples", missing("An unconditional model: no per-class grid "
                                                               "(train with --conditional for one)."))
    grids = _grid_files(run)
    names = meta.get("class_names") or []
    caption = "one column per class" + (f": {', '.join(map(str, names))}" if names else "")
    body = figure(grids[-1].read_bytes(), caption) if grids else missing("No grid was written.")
    return section("classes", "Per-class samples", body)


def _curves(run: Run, files: Path, history: list[dict]) -> str:
    if not history:
        return section("curves", "Training curves", missing("The log is empty."))
    path = plot_file(files, "curves")
    plots.plot_curves(history, path, title=f"{run.name}")
    note = "<p>D(x) and D(G(z)) are the discriminator's mean outputs on real and generated images.</p>" \
        if "d_real" in history[0] else ""
    return section("curves", "Training curves", note + figure(path.read_bytes(), "losses and logged values"))


def _metrics(run: Run, files: Path) -> str:
    body = []
    history = run.read_lines(Run.METRICS)
    if history:
        path = plot_file(files, "metric_history")
        plots.plot_metric_history(history, path)
        body.append(figure(path.read_bytes(), "metrics during training (--eval-every)"))
    result = run.eval
    if result:
        rows = [[name, fmt(m["value"]) + (f" ± {m['std']:.2g}" if m.get("std") else ""), fmt(m.get("floor")),
                 m["better"]] for name, m in result["metrics"].items()]
        body.append(f"<p>{result['n']} samples in the features {html.escape(result['features'])}"
                    f"{html.escape(result.get('features_note', ''))}; real floor: {result['floor_n']} held-out real "
                    "images scored the same way. The *_heldout rows measure the samples against real images the "
                    "model never saw (their floor: real training images), and data_copying compares how close "
                    "samples and unseen real images sit to the training images (Meehan et al. 2020).</p>")
        body.append(table_html(rows, ["metric", "value", "real floor", "better"]))
        body += [f'<div class="diag">{html.escape(w)}</div>' for w in result.get("warnings", [])]
        if result.get("likelihood_convention"):
            body.append(f"<p>Likelihood: {html.escape(result['likelihood_convention'])}.</p>")
    else:
        body.append(missing(f"Not evaluated yet: `genlab eval {run.path}` writes eval.json, which this page shows."))
    human = human_scores(run.read_lines(Run.RATINGS), run.name)
    if human:
        body.append("<p>People's votes in <code>genlab serve</code> (Rate), with bootstrap 95 % intervals:</p>")
        body.append(table_html([[name, text] for name, text in describe(human)], ["people", "value"]))
    return section("metrics", "Metrics", "\n".join(body))


def _diagnostics(run: Run) -> str:
    found = run.read_lines(Run.DIAGNOSES)
    if not found:
        return section("diagnostics", "Diagnostics", "<p>No training failure was diagnosed.</p>")
    items = "".join(f'<div class="diag"><b>step {d["step"]}</b> ({html.escape(d["kind"].replace("_", " "))}): '
                    f"{html.escape(d['sentence'])}</div>" for d in found)
    return section("diagnostics", "Diagnostics", items)


VIEW_CAPTIONS = {
    "interpolation": "slerp between random latents, one pair per row",
    "reconstructions": "inputs (upper row of each pair) and their reconstructions (lower row)",
    "real-interpolation": "paths between the latents of two real images",
    "traversal": "one latent dimension per row, swept from -3 to 3",
    "denoising": "sampling from noise to image, one chain per row",
}


def _views(run: Run) -> str:
    paths = sorted((run / Run.SAMPLES).glob("view-*.png"))
    if not paths:
        return section("views", "Inside the model", missing("This family has no latent space to show; "
                                                            "its samples are above."))
    figs = "".join(figure(p.read_bytes(), VIEW_CAPTIONS.get(p.stem[5:], p.stem[5:])) for p in paths)
    return section("views", "Inside the model", figs)


def run_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN's report (default RUN/report.html) and its plots (REPORT_files/); returns the page."""
    run = Run.open(run)
    meta = run.meta
    out = Path(out) if out else run / "report.html"
    files = out.parent / f"{out.stem}_files"
    history = run.read_lines(Run.LOG)
    sections = [f"<h1>genlab report: {html.escape(run.name)}</h1>"
                f"<p class=\"muted\">{html.escape(meta.get('model', ''))} on {html.escape(meta.get('dataset', ''))}</p>",
                _overview(run, meta), _config(run, meta), _samples(run), _classes(run, meta),
                _curves(run, files, history), _metrics(run, files), _diagnostics(run), _views(run)]
    _write(out, page(f"genlab report: {run.name}", sections))
    return out


def _write(out: Path, text: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as err:
        raise GenlabError(f"cannot write {out} ({err.strerror or err}); choose a writable --out") from None


# ---------------------------------------------------------------- several runs

COLUMNS = ("fid", "fid_heldout", "kid", "is", "precision", "recall", "recall_heldout", "coverage", "data_copying",
           "nll_nats")


def run_row(run: Run) -> dict:
    meta = run.meta
    result = run.eval or {"metrics": {}}
    row = {"run": run.name, "path": str(run.path), "model": meta.get("model"), "dataset": meta.get("dataset"),
           "steps": meta.get("steps"), "minutes": (meta.get("seconds") or 0) / 60, "img_per_s": meta.get("img_per_s")}
    row.update({k: result["metrics"].get(k, {}).get("value") for k in COLUMNS})
    row["floors"] = {k: result["metrics"].get(k, {}).get("floor") for k in COLUMNS}  # real data's own scores
    row["features"], row["n"] = result.get("features"), result.get("n")  # what the scores mean: see comparability
    row["sampling"] = sampling_cell(result.get("sampling"), result.get("n"))
    error = human_scores(run.read_lines(Run.RATINGS), run.name).get("error_rate")
    row["human"] = (f"{error['value']:.0%} [{error['low']:.0%}, {error['high']:.0%}], {error['votes']} votes"
                    if error else "-")
    return row


def sampling_cell(sampling: dict | None, n: int | None) -> str:
    """How the scored samples were drawn: "dpm++2m, 10 steps, 10 NFE, 9.8 s / 10,000" (a diffusion or
    flow run), "temperature 1.0, 4.1 s / 10,000" (another family), "-" before genlab recorded it."""
    if not sampling:
        return "-"
    options = dict(sampling.get("options") or {})
    parts = []
    if "sampler" in options:
        parts.append(str(options.pop("sampler")))
        if "steps" in options:
            parts.append(f"{options.pop('steps')} steps")
        if sampling.get("nfe") is not None:
            parts.append(f"{sampling['nfe']} NFE")
    parts += [f"{k} {v}" for k, v in options.items() if k in ("guidance", "eta", "temperature", "tolerance")]
    if sampling.get("seconds") is not None and n:
        parts.append(f"{sampling['seconds']:.1f} s / {n:,}")
    return ", ".join(parts) or "-"


def compare_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The table's head and cells; a score with a real-data floor is written "value (floor)"."""
    head = ["run", "model", "dataset", "budget", "img/s", "FID (floor)", "FID held-out (floor)", "KID (floor)",
            "IS (floor)", "precision (floor)", "recall (floor)", "recall held-out (floor)", "coverage (floor)",
            "copying C_T", "NLL (nats)", "human error rate", "sampled with", "scored in (samples)"]

    def cell(r: dict, k: str) -> str:
        floor = r.get("floors", {}).get(k)
        return fmt(r[k]) if r[k] is None or floor is None else f"{fmt(r[k])} ({fmt(floor)})"

    body = [[r["run"], r["model"], r["dataset"], f"{r['minutes']:.1f} min, {r['steps']} steps", fmt(r["img_per_s"]),
             *[cell(r, k) for k in COLUMNS], r["human"], r["sampling"],
             f"{r['features']} ({r['n']:,})" if r["features"] and r["n"] else "-"] for r in rows]
    return head, body


def comparability(scored: list[dict]) -> list[str]:
    """Why some of the evaluated runs' scores (`scored`: rows with an FID) cannot be ranked against each
    other: FID, KID, precision and recall are distances in one feature space (another extractor, or the
    same name's features of another dataset, measures something else), and FID falls as more samples
    are scored."""
    notes = []
    spaces = sorted({space(r) for r in scored})
    if len(spaces) > 1:
        groups = "; ".join(f"{name}: " + ", ".join(r["run"] for r in scored if space(r) == name) for name in spaces)
        notes.append(f"These runs were scored in {len(spaces)} different feature spaces ({groups}): their FID, "
                     "KID, precision and recall are distances to different data or in different features and rank "
                     "only within one. The table ranks each one's runs by FID. To rank them all, evaluate them "
                     "on one dataset with the same --features.")
    counts = sorted({r["n"] for r in scored if r["n"]})
    if len(counts) > 1:
        listed = ", ".join(f"{n:,}" for n in counts)
        notes.append(f"These runs were scored with different numbers of samples ({listed}): FID falls as more "
                     "samples are scored, so a run scored with more looks better than it is beside one scored "
                     "with fewer. Evaluate them with the same --n.")
    return notes


def space(row: dict) -> str:
    """Where a run's scores were measured: its features and the dataset compared with (an extractor
    of one's own, named by its file's hash, can score runs of several datasets)."""
    return f"{row['features'] or '?'} on {row['dataset']}"


def ranked(rows: list[dict]) -> list[dict]:
    """Evaluated runs by FID, grouped by feature space (the group with the best FID first),
    unevaluated runs last."""
    best: dict = {}
    for r in rows:
        if r["fid"] is not None:
            best[space(r)] = min(best.get(space(r), r["fid"]), r["fid"])
    return sorted(rows, key=lambda r: (r["fid"] is None, best.get(space(r), 0), space(r), r["fid"] or 0))


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def side_by_side(runs: list[Run], n: int = 16, seed: int = 0) -> list[tuple[str, bytes]]:
    """(run name, PNG) of `n` samples from each run with the same seed (the same noise where two
    runs' families and latent sizes agree)."""
    out = []
    for run in runs:
        images = load(run.path).sample(n, seed=seed)
        out.append((run.name, png_bytes(make_grid(images, nrow=4), scale=2)))
    return out


def compare_runs(runs: list[str | Path], out: str | Path = CompareOptions.out,
                 samples: int = CompareOptions.samples) -> tuple[Path, str, list[str]]:
    """Write the comparison page of `runs` (sorted by FID, unevaluated runs last); returns the page,
    the table as markdown and the sentences that say which of its scores do not compare."""
    CompareOptions([str(r) for r in runs], str(out), samples=samples).validate()
    opened = [Run.open(r) for r in runs]
    for run in opened:
        run.weights()  # refuses a run that has not finished
    rows = ranked([run_row(r) for r in opened])
    head, body = compare_table(rows)
    scored = [r for r in rows if r["fid"] is not None]
    notes = comparability(scored)
    out = Path(out)
    files = out.parent / f"{out.stem}_files"
    sections = [f"<h1>genlab comparison of {len(rows)} runs</h1>",
                section("table", "Runs, best FID first", table_html(body, head)
                        + "<p>Each run's metrics come from its eval.json (`genlab eval RUN`); a dash: not evaluated "
                          "or not defined for the family.</p>"
                        + "".join(f'<div class="diag">{html.escape(note)}</div>' for note in notes))]
    if scored:
        path = plot_file(files, "quality_vs_time")
        plots.plot_quality_vs_time([{**r, "space": space(r)} for r in scored], path)
        sections.append(section("quality", "Quality versus training time", figure(path.read_bytes(), "FID against minutes of training")))
    else:
        sections.append(section("quality", "Quality versus training time", missing("No run has been evaluated.")))
    figs = "".join(figure(png, name) for name, png in side_by_side([Run(r["path"]) for r in rows], samples))
    sections.append(section("samples", "Samples side by side", f"<p>{samples} samples from each run, seed 0.</p>" + figs))
    _write(out, page("genlab comparison", sections))
    return out, markdown_table(head, body), notes
