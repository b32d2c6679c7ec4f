"""What exact resumption needs beyond the weights: every random generator, the checkpoint files of a
run, and the rule for which config changes a resume may make.

A resumed run on the CPU ends with the same bits as an uninterrupted one because the checkpoint
holds everything that decides what happens next: the family's state (nets, optimisers, EMA,
schedules), the step counter, Python's, NumPy's and torch's generators (CUDA's too), the data-order
generator and the current epoch's permutation, and the logger's unfinished averages.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from genlab.config import RunConfig
from genlab.errors import GenlabError
from genlab.train.checkpoint import load_state, save_state

CHECKPOINTS = "checkpoints"
NAME = re.compile(r"^step-(\d{8,})\.safetensors$")

# Fields a resume may change: budgets and how the run reports or runs, never what it computes.
RESUMABLE_CHANGES = {
    "train.epochs", "train.steps", "train.minutes", "train.out", "train.overwrite", "train.log_every",
    "train.grid_size", "train.grid_every", "train.device", "train.threads", "train.progress", "train.eval_every",
    "train.eval_n", "train.eval_features", "train.checkpoint_every", "train.keep_checkpoints",
    "train.on_nan", "train.compile", "train.diagnose_every",
}


def capture_rng() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def checkpoint_path(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"step-{step:08d}.safetensors"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints of a run, oldest first (temporary files of an interrupted write are
    not matched by the name pattern and so are never taken for checkpoints)."""
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run: Path, step: int, tree: dict, keep: int) -> Path:
    """Write the step's checkpoint durably, then prune all but the newest `keep`."""
    path = checkpoint_path(run, step)
    path.parent.mkdir(exist_ok=True)
    save_state(path, tree, {"step": str(step)})
    for _, old in list_checkpoints(run)[:-keep]:
        old.unlink(missing_ok=True)
    for leftover in path.parent.glob(".*.tmp-*"):  # a write that a kill interrupted earlier
        leftover.unlink(missing_ok=True)
    return path


def load_latest(run: Path) -> tuple[dict, Path]:
    """The newest checkpoint that loads; a damaged one (which atomic writes should never leave) is
    reported and the next older one is tried."""
    found = list_checkpoints(run)
    if not found:
        raise GenlabError(f"run {run} has no checkpoint to resume from (RUN/{CHECKPOINTS} is empty); "
                          "train it again, with --checkpoint-every N to save progress")
    errors = []
    for _, path in reversed(found):
        try:
            return load_state(path)[0], path
        except GenlabError as err:
            errors.append(str(err))
    raise GenlabError("no checkpoint of the run can be loaded: " + "; ".join(errors))


def config_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """'section.field: old -> new' for each change that would change what the checkpoint means."""
    old_d, new_d = saved.to_dict(), new.to_dict()
    diffs = []
    for section in old_d:
        for key in sorted(set(old_d[section]) | set(new_d[section])):
            a, b = old_d[section].get(key), new_d[section].get(key)
            name = f"{section}.{key}"
            if a != b and name not in RESUMABLE_CHANGES:
                diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs
