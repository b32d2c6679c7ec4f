"""`genlab export RUN --out DIR`: a portable folder with what sampling needs and nothing else, laid
out as a Hugging Face model repository (config.json, model.safetensors, README.md with the model
card, samples.png), so it can be uploaded as it is and `genlab.load(DIR)` reads it back.

The folder is written under a temporary name and renamed into place, so an interrupted export
leaves nothing that looks finished; an existing --out is replaced only with --overwrite, and a
folder that is not a genlab export never.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from genlab.config import REQUIRED, option
from genlab.core.run import Run
from genlab.errors import GenlabError
from genlab.generate import EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_META
from genlab.metrics.card import card_text


@dataclass
class ExportOptions:
    """`genlab export RUN --out DIR`: a portable folder that `genlab.load` reads."""

    run: str = option(REQUIRED, "run folder made by `genlab train`", positional=True)
    out: str = option(REQUIRED, "the folder to write (config.json, model.safetensors, README.md)")
    weights: str = option(Run.WEIGHTS, "which weights: model.safetensors (final) or best.safetensors")
    overwrite: bool = option(False, "replace an earlier genlab export in --out")

    def validate(self) -> None: ...


def is_export(path: Path) -> bool:
    try:
        return json.loads((path / EXPORT_CONFIG).read_text()).get("format") == EXPORT_FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise GenlabError(f"--out {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not is_export(out):
            raise GenlabError(f"--out {out} holds files that are not a genlab export; choose a new or empty folder "
                              "(genlab never deletes them)")
        if not overwrite:
            raise GenlabError(f"--out {out} already holds a genlab export; pass --overwrite to replace it or "
                              "choose another --out")


def export_run(run_dir: str | Path, out: str | Path, overwrite: bool = ExportOptions.overwrite,
               weights: str = ExportOptions.weights) -> Path:
    """Write the portable folder of a run; returns it."""
    run = Run.open(run_dir)
    source = run.weights(weights)
    out = Path(out)
    _check_out(out, overwrite)
    meta = run.meta
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(source, tmp / Run.WEIGHTS)
        digest = hashlib.sha256((tmp / Run.WEIGHTS).read_bytes()).hexdigest()
        config = {"format": EXPORT_FORMAT, "genlab_version": meta.get("genlab_version"), "weights_sha256": digest,
                  "config": run.config.to_dict(), "meta": {k: meta.get(k) for k in EXPORT_META}}
        (tmp / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        grids = sorted((run / Run.SAMPLES).glob("*.png"))
        pick = [g for g in grids if g.name.startswith(("epoch_", "final"))]
        if pick:
            shutil.copyfile(pick[-1], tmp / "samples.png")
        (tmp / Run.CARD).write_text(card_text(run, load_path=str(out), grid="samples.png" if pick else None))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GenlabError(f"cannot write the export to {out} ({err.strerror or err}); choose a writable --out") from None
    return out
