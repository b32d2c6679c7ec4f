"""The run folder: what a finished (or stopped) run leaves behind, and the rules for creating one.

    config.yaml        the resolved config: `genlab train --config RUN/config.yaml` repeats the run
    run.json           seed, versions, dataset checksum, command, status, timing
    log.jsonl          one line per logged step (losses averaged since the previous line)
    samples/           epoch_001.png ...: a grid from the same fixed noise after every epoch
    loss_curve.png     the curves of log.jsonl
    model.safetensors  the final state (nets and optimisers), see genlab.train.checkpoint
    metrics.jsonl      with --eval-every: the scores of every evaluation
    best.safetensors   with --eval-every: the state with the lowest FID so far
    eval.json          written by `genlab eval RUN`
    diagnostics.jsonl  each training failure diagnosed (genlab.train.diagnostics), as it started
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from genlab.errors import GenlabError

RUN_MARKERS = ("config.yaml", "run.json")
CONFIG, META, LOG, SAMPLES, CURVE, WEIGHTS = (
    "config.yaml", "run.json", "log.jsonl", "samples", "loss_curve.png", "model.safetensors")
METRICS, BEST, EVAL, DIAGNOSES = "metrics.jsonl", "best.safetensors", "eval.json", "diagnostics.jsonl"


def is_run(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def check_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an --out that would mix with or silently replace something; returns the path."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise GenlabError(f"output {path} exists and is not a folder; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        if not is_run(path):
            raise GenlabError(f"output folder {path} holds files that are not a genlab run; "
                              "choose a new or empty --out (genlab never deletes them)")
        if not overwrite:
            raise GenlabError(f"output folder {path} already holds a genlab run; pass --overwrite "
                              "to replace it or choose another --out")
    return path


def create_run_dir(out: str | Path, overwrite: bool) -> Path:
    """Create the run folder (replacing an earlier genlab run only with `overwrite`)."""
    path = check_out_dir(out, overwrite)
    try:
        if path.is_dir() and any(path.iterdir()):
            shutil.rmtree(path)
            print(f"genlab: removed the earlier run in {path} (--overwrite)")
        (path / SAMPLES).mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise GenlabError(f"cannot write to output folder {path} ({err.strerror or err}); "
                          "choose a writable --out") from None
    return path


def write_json(path: Path, obj: dict) -> None:
    from genlab.train.checkpoint import write_atomic

    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GenlabError(f"cannot read {path}: {err}") from None
