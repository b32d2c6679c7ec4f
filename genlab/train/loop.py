"""The one training loop, for every model family.

It knows nothing about GANs or VAEs: it draws batches, calls `model.train_step`, and keeps the
record (progress bar, log.jsonl, a sample grid per epoch, the loss curve, the final weights).
`train` is split into setup, loop and save so each part reads alone.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.config import RunConfig, TrainConfig, save_config
from genlab.data import ImageSet, load_dataset
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.report.grids import save_grid
from genlab.report.plots import plot_curves
from genlab.train import rundir
from genlab.train.checkpoint import save_state


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; asking for a missing GPU is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenlabError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GenlabError("--device mps: Apple's MPS is not available here; use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class LoopState:
    """What the loop has done so far."""

    step: int = 0
    epoch: int = 0  # completed epochs
    images_seen: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    best_fid: float = float("inf")


def budget_reached(state: LoopState, cfg: TrainConfig, started: float) -> str:
    """The budget that has run out ('' while training should go on)."""
    if cfg.steps is not None and state.step >= cfg.steps:
        return f"{cfg.steps} steps"
    if cfg.minutes is not None and time.monotonic() - started >= cfg.minutes * 60:
        return f"{cfg.minutes:g} minutes"
    if cfg.epochs is not None and state.epoch >= cfg.epochs:
        return f"{cfg.epochs} epochs"
    return ""


class Recorder:
    """log.jsonl lines (averages over the last `every` steps), the progress bar and epoch grids."""

    def __init__(self, run: Path, cfg: TrainConfig, total_steps: int | None, model):
        from tqdm import tqdm

        self.run, self.cfg, self.model = run, cfg, model
        self.log = open(run / rundir.LOG, "a")
        self.sums: dict[str, float] = {}
        self.count = 0
        self.window_start = time.monotonic()
        self.window_images = 0
        # a bar only on a terminal; logs (CI, nohup) get the one line per epoch from `say`
        self.bar = tqdm(total=total_steps, disable=not (cfg.progress and sys.stderr.isatty()), unit="step",
                        dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def step(self, state: LoopState, logs: dict[str, float], batch: int, started: float) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.window_images += batch
        self.bar.update(1)
        if state.step % self.cfg.log_every == 0:
            self.flush(state, started)

    def flush(self, state: LoopState, started: float) -> None:
        if not self.count:
            return
        now = time.monotonic()
        rate = self.window_images / max(now - self.window_start, 1e-9)
        line = {"step": state.step, "epoch": state.epoch + 1, "images": state.images_seen,
                "time": round(now - started, 3), "img_per_s": round(rate, 1),
                **{k: v / self.count for k, v in self.sums.items()}}
        state.history.append(line)
        self.log.write(json.dumps(line) + "\n")
        self.log.flush()
        shown = {k: f"{v:.0f}" if k == "img_per_s" else f"{v:.3g}"
                 for k, v in line.items() if k not in ("step", "images", "time")}
        self.bar.set_postfix(shown, refresh=False)
        self.sums, self.count, self.window_images, self.window_start = {}, 0, 0, now

    def scores(self, state: LoopState, values: dict) -> None:
        line = {"step": state.step, "epoch": state.epoch + 1, **values}
        with open(self.run / rundir.METRICS, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.say(f"step {state.step}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))

    def grid(self, name: str) -> None:
        """A grid from the same noise every time, so epochs can be compared image by image."""
        fixed = torch.Generator().manual_seed(self.cfg.seed)
        save_grid(self.model.sample(self.cfg.grid_size, generator=fixed),
                  self.run / rundir.SAMPLES / f"{name}.png")

    def say(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self.log.close()


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch; the last partial batch is dropped so every step has the same size."""
    if batch_size > n:
        raise GenlabError(f"batch size {batch_size} is larger than the dataset ({n} images); "
                          f"pass --batch-size {n} or less")
    return n // batch_size


def evaluate_now(model, state: LoopState, rec: Recorder, run: Path, scorer) -> None:
    """Score the model and keep its state as best.safetensors when its FID is the lowest yet."""
    values = scorer(model)
    rec.scores(state, values)
    if values["fid"] < state.best_fid:
        state.best_fid = values["fid"]
        save_state(run / rundir.BEST, model.state_dict(), {"step": str(state.step), "fid": repr(values["fid"])})


def run_loop(model, data: ImageSet, cfg: TrainConfig, run: Path, device: torch.device,
             scorer=None) -> LoopState:
    """Train until the first budget runs out; Ctrl-C stops cleanly after the current step.
    With `scorer` (model -> metrics), evaluate every `cfg.eval_every` steps."""
    per_epoch = steps_per_epoch(len(data), cfg.batch_size)
    totals = [t for t in (cfg.steps, cfg.epochs and cfg.epochs * per_epoch) if t]
    rec = Recorder(run, cfg, min(totals) if totals and cfg.minutes is None else None, model)
    order = torch.Generator().manual_seed(cfg.seed)  # the data order, separate from the model's noise
    state, started = LoopState(), time.monotonic()
    try:
        while not state.stop_reason:
            perm = torch.randperm(len(data), generator=order)
            for i in range(per_epoch):
                idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                logs = model.train_step(data.images[idx].to(device), data.labels[idx].to(device))
                state.step += 1
                state.images_seen += len(idx)
                rec.step(state, logs, len(idx), started)
                if scorer is not None and state.step % cfg.eval_every == 0:
                    paused = time.monotonic()
                    evaluate_now(model, state, rec, run, scorer)
                    rec.window_start += time.monotonic() - paused  # img/s counts training only
                state.stop_reason = budget_reached(state, cfg, started)
                if state.stop_reason and i < per_epoch - 1:
                    break
            else:
                state.epoch += 1
                rec.grid(f"epoch_{state.epoch:03d}")
                rec.say(f"epoch {state.epoch}: step {state.step}, " + ", ".join(
                    f"{k} {v:.0f}" if k == "img_per_s" else f"{k} {v:.3f}"
                    for k, v in (state.history[-1] if state.history else {}).items()
                    if k not in ("step", "epoch", "images", "time")))
                state.stop_reason = budget_reached(state, cfg, started)
    except KeyboardInterrupt:
        state.stop_reason = "interrupted"
    finally:
        rec.flush(state, started)
        state.seconds = time.monotonic() - started
        if state.step % per_epoch:
            rec.grid("final")  # stopped mid-epoch: still show where it got to
        rec.close()
    return state


def run_metadata(config: RunConfig, data: ImageSet, device: torch.device) -> dict:
    return {
        "genlab_version": genlab.__version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "platform": platform.platform(),
        "device": str(device), "threads": torch.get_num_threads(), "seed": config.train.seed,
        "model": config.model.name, "dataset": data.name, "dataset_split": config.data.split,
        "dataset_checksum": data.checksum, "num_images": len(data), "image_shape": list(data.shape),
        "num_classes": data.num_classes, "class_names": data.class_names,
        "command": sys.argv, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
    }


def save_results(model, state: LoopState, run: Path, meta: dict, config: RunConfig) -> None:
    save_state(run / rundir.WEIGHTS, model.state_dict(),
               {"model": config.model.name, "step": str(state.step)})
    if state.history:
        plot_curves(state.history, run / rundir.CURVE,
                    title=f"{config.model.name} on {meta['dataset']}")
    meta.update(status="interrupted" if state.stop_reason == "interrupted" else "finished",
                stop_reason=state.stop_reason, steps=state.step, epochs_completed=state.epoch,
                images_seen=state.images_seen, seconds=round(state.seconds, 2),
                img_per_s=round(state.images_seen / max(state.seconds, 1e-9), 1),
                finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    rundir.write_json(run / rundir.META, meta)


def train(config: RunConfig) -> Path:
    """Train `config` into a new run folder and return its path."""
    config.validate()
    rundir.check_out_dir(config.train.out, config.train.overwrite)  # fail before any slow work
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    data = load_dataset(config.data)
    steps_per_epoch(len(data), config.train.batch_size)
    seed_everything(config.train.seed)
    model = build_model(config.model, data.shape, data.num_classes, device)
    scorer = None
    if config.train.eval_every:
        from genlab.metrics.evaluate import training_scorer

        scorer = training_scorer(config.data, config.train.eval_n, config.train.seed,
                                 features=config.train.eval_features,
                                 log=lambda text: print(text, file=sys.stderr))

    run = rundir.create_run_dir(config.train.out, config.train.overwrite)
    save_config(config, run / rundir.CONFIG)
    meta = run_metadata(config, data, device)
    rundir.write_json(run / rundir.META, meta)

    state = run_loop(model, data, config.train, run, device, scorer)
    save_results(model, state, run, meta, config)
    if state.stop_reason == "interrupted":
        raise KeyboardInterrupt
    return run
