"""The trainings genlab runs once and caches (a latent family's first stage, a feature extractor):
minutes long on a CPU, so they say where they are at least every 30 s, and an interrupted one keeps
its progress. Ctrl-C or SIGTERM stop it after the current step; it is also saved every minute, against
a kill. The next call for the same cache entry goes on from there, to the same bits as one
uninterrupted training (the state of its nets, optimisers, schedule and both random streams is kept).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from genlab.core.checkpoint import load_state, save_state
from genlab.core.signals import StopRequest
from genlab.errors import GenlabError

SAY_EVERY = 30.0  # seconds between two progress lines at most (and a line every 500 steps)
UNFINISHED = "unfinished"  # a cache's folder of the trainings that were interrupted


def progress_file(cache: Path, identity) -> Path:
    """Where an interrupted training of the cache entry that `identity` (JSON-able: data, settings,
    recipe) names keeps its progress, in the cache folder `cache`."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache / UNFINISHED / f"{key}.safetensors"


class KeptProgress:
    """Use as `with KeptProgress(...) as kept: for step in kept.steps(): ...; kept.after(step, losses)`.

    `parts` are the objects with a state (nets, optimisers, schedules), `gen` the training's own
    random generator; the global torch stream is kept too. Without `path` nothing is kept and
    signals keep their usual meaning."""

    def __init__(self, what: str, total: int, path: Path | None, parts: dict, gen: torch.Generator, log=print,
                 save_every: float = 60.0):
        self.what, self.total, self.path, self.parts, self.gen = what, total, path, parts, gen
        self.log, self.save_every = log, save_every
        self.done, self.last = 0, {}
        self.stop = StopRequest(f"stopping the {what} after this step and keeping its progress")
        self.started = self.saved = self.said = time.monotonic()

    def __enter__(self) -> "KeptProgress":
        spent = self.load()
        self.saved = self.said = time.monotonic()
        self.started = self.saved - spent  # the seconds of earlier, interrupted sessions count
        if self.path is not None:
            self.stop.install()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.restore()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def steps(self) -> range:
        return range(self.done + 1, self.total + 1)

    def after(self, step: int, losses: dict) -> None:
        """Say where the training is, keep its progress when due, and stop when asked to."""
        self.last = losses
        now = time.monotonic()
        if step % 500 == 0 or step == self.total or now - self.said >= SAY_EVERY:
            self.said = now
            numbers = ", ".join(f"{k} {float(v):.4g}" for k, v in losses.items())
            self.log(f"  {self.what}: step {step}/{self.total}, {numbers}, {self.seconds:.0f} s")
        kept = False
        if self.path is not None and (self.stop.requested or now - self.saved >= self.save_every):
            try:
                self.save(step)
                kept = True
            except GenlabError as err:  # a full disk must not end a training that can still finish
                self.log(f"  could not keep the {self.what}'s progress ({err}); training goes on")
            self.saved = time.monotonic()
        if self.stop.requested:
            raise KeyboardInterrupt(f"the {self.what} stopped at step {step}/{self.total}; " + (
                "its progress is kept in genlab's cache, and the same command continues it" if kept else
                "its progress could not be kept (see above)"))

    def save(self, step: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise GenlabError(f"could not make {self.path.parent}: {err.strerror or err}") from None
        save_state(self.path, {**{k: v.state_dict() for k, v in self.parts.items()}, "generator": self.gen.get_state(),
                               "torch_rng": torch.get_rng_state(), "step": step, "seconds": self.seconds,
                               "losses": {k: float(v) for k, v in self.last.items()}})

    def load(self) -> float:
        """Load a kept progress into the parts (a damaged file is set aside: training starts over);
        the seconds it had spent."""
        if self.path is None or not self.path.is_file():
            return 0.0
        try:
            tree, _ = load_state(self.path)
            missing = [k for k in (*self.parts, "generator", "torch_rng", "step", "seconds", "losses") if k not in tree]
            if missing:
                raise GenlabError(f"it has no {', '.join(missing)}")
        except GenlabError as err:
            self.log(f"  the kept progress of this {self.what} cannot be read ({err}); training it from the start")
            return 0.0
        try:
            for k, v in self.parts.items():
                v.load_state_dict(tree[k])
        except (RuntimeError, ValueError, KeyError) as err:  # half loaded: starting over would not be the recipe
            raise GenlabError(f"the kept progress {self.path} does not fit this {self.what} ({err}); delete it and "
                              "run again") from None
        self.gen.set_state(tree["generator"])
        torch.set_rng_state(tree["torch_rng"])
        self.done, spent, self.last = int(tree["step"]), float(tree["seconds"]), dict(tree["losses"])
        self.log(f"  continuing the {self.what} from step {self.done}/{self.total}, kept by an interrupted run "
                 f"({spent:.0f} s spent)")
        return spent


def kept_seconds(path: Path) -> float:
    """The seconds an interrupted training kept at `path` had spent (0 when there is none to go on from)."""
    try:
        return float(load_state(path)[0]["seconds"]) if path.is_file() else 0.0
    except (GenlabError, KeyError, TypeError, ValueError):
        return 0.0
