"""The model card: every run folder's README.md, saying what the model is (family, architecture,
parameters), its data (name, checksum, licence), its training budget and hardware, its scores beside
their real floors and people's votes, a sample grid, the command that repeats it, and three lines of
Python that load it. Laid out as a Hugging Face model repository's card (YAML front matter), so an
export (`genlab export`) can be uploaded as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from genlab.core.run import Run
from genlab.metrics.human import describe, human_scores
from genlab.models import MODELS


def _grid(folder: Path) -> str | None:
    samples = folder / Run.SAMPLES
    grids = sorted(samples.glob("epoch_*.png")) + ([samples / "final.png"] if (samples / "final.png").is_file() else [])
    return f"{Run.SAMPLES}/{grids[-1].name}" if grids else None


def _prompts(folder: Path) -> list[str]:
    """The example prompts of a text model's grids (samples/prompts.json, written by training)."""
    path = folder / Run.SAMPLES / "prompts.json"
    try:
        prompts = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, json.JSONDecodeError):
        return []
    return [str(p) for p in prompts] if isinstance(prompts, list) else []


def prompt_arg(folder: Path) -> str:
    prompts = _prompts(folder)
    return f", prompt={prompts[0]!r}" if prompts else ""


def card_text(run: Run, load_path: str | None = None, grid: str | None = None) -> str:
    """The card of `run`; `load_path` is what the Python lines load (default: the run folder)."""
    meta, config, result = run.meta, run.config, run.eval
    family = meta.get("model", config.model.name)
    description = MODELS[family].description if family in MODELS else family
    k = meta.get("conditional_classes")
    params = meta.get("parameters") or {}
    lines = ["---", "library_name: genlab", f"tags: [genlab, {family}, image-generation]",
             f"datasets: [{meta.get('dataset')}]", "---", "",
             f"# {run.name}: {family} on {meta.get('dataset')}", "", description + ".", "",
             "## Model", "",
             f"- family `{family}`" + (f", conditional on {k} classes" if k else ", unconditional"),
             f"- parameters: {sum(params.values()):,} ({', '.join(f'{n} {c:,}' for n, c in params.items())})"
             if params else "- parameters: not recorded",
             *([first_stage_line(meta["prepared"])] if meta.get("prepared") else []),
             "", "## Data", "",
             f"- {meta.get('dataset')}, split {meta.get('dataset_split')}, {meta.get('num_images')} images of "
             f"{'x'.join(map(str, meta.get('image_shape', [])))}, classes: {', '.join(map(str, meta.get('class_names', [])))}",
             f"- content checksum {meta.get('dataset_checksum')}",
             f"- licence: {meta.get('dataset_licence', 'not recorded')}",
             "", "## Training", "",
             f"- {meta.get('steps')} steps ({meta.get('epochs_completed')} epochs), {(meta.get('seconds') or 0) / 60:.1f} "
             f"minutes, {meta.get('img_per_s')} images/s; stopped: {meta.get('stop_reason')} ({meta.get('status')})",
             f"- {meta.get('device')}, {meta.get('threads')} threads, {meta.get('precision')}, "
             f"{meta.get('world_size', 1)} process(es); {meta.get('platform')}; PyTorch {meta.get('torch_version')}, "
             f"genlab {meta.get('genlab_version')}, seed {meta.get('seed')}",
             "", "## Scores", ""]
    if result:
        lines += [f"{result['n']} samples in the features `{result['features']}`{result.get('features_note', '')}; "
                  "the real floor is the same metric for real images the model never saw.", "",
                  "| metric | value | real floor |", "|---|---|---|"]
        for name, m in result["metrics"].items():
            value = f"{m['value']:.4g}" if isinstance(m["value"], float) else str(m["value"])
            floor = "-" if m.get("floor") is None else (f"{m['floor']:.4g}" if isinstance(m["floor"], float)
                                                         else str(m["floor"]))
            lines.append(f"| {name} | {value} | {floor} |")
    else:
        lines.append(f"Not evaluated yet: `genlab eval {run.path}` adds the scores here.")
    human = human_scores(run.read_lines(Run.RATINGS), run.name)
    lines += ["", "People's votes (`genlab serve`, Rate):" if human else "No votes from people yet (`genlab serve`, Rate).", ""]
    lines += [f"- {name}: {text}" for name, text in describe(human)]
    grid = grid or _grid(run.path)
    if grid:
        lines += ["", "## Samples", "", f"![samples]({grid})"]
        prompts = _prompts(run.path)
        if prompts:
            lines += ["", "Each row is drawn for one prompt (captions of training images), top to bottom:", "",
                      *[f"{i}. `{p}`" for i, p in enumerate(prompts, 1)], "",
                      f'Your own: `genlab sample {run.path} --prompt "..." --n 16 --out FOLDER`.']
    path = load_path or str(run.path)
    lines += ["", "## Reproduce", "", "```bash", f"genlab train --config {run.path / Run.CONFIG} --out NEW_RUN",
              "```", "", f"The original command: `{' '.join(meta.get('command', []))}`", "",
              "## Use", "", "```python", "import genlab", f'model = genlab.load("{path}")',
              f"images = model.sample(16, seed=0{prompt_arg(run.path)})  # uint8 [16, C, H, W]", "```", ""]
    return "\n".join(lines)


def write_card(run: Run) -> Path:
    """(Re)write the run folder's README.md."""
    path = run / Run.CARD
    path.write_text(card_text(run))
    return path


def first_stage_line(info: dict) -> str:
    """The card's line on a latent family's autoencoder: which one, and how well it reconstructs."""
    psnr, perplexity = info.get("heldout_psnr"), info.get("perplexity")
    return (f"- first stage: {info.get('name')} (sha256 {info.get('sha256', '')[:16]}...)"
            + (f", held-out reconstruction PSNR {psnr:.1f} dB" if psnr is not None else "")
            + (f", codebook perplexity {perplexity:.0f}" if perplexity is not None else ""))
