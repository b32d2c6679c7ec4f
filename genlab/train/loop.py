"""The one training loop, for every model family.

It knows nothing about GANs or VAEs: it draws batches, calls `model.train_step`, and keeps the
record (progress bar, log.jsonl, a sample grid per epoch, the loss curve, checkpoints, the final
weights). `train` is split into setup, loop and save so each part reads alone.

Promises (each tested): the same seed and config give the same weights on the CPU; a run killed at
any moment resumes from its last checkpoint to the same final bits; a NaN or inf never reaches an
optimiser; Ctrl-C or SIGTERM saves a checkpoint and says how to resume.
"""

from __future__ import annotations

import json
import platform
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.config import RunConfig, TrainConfig, load_config, save_config
from genlab.data import ImageSet, load_dataset
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.report.grids import save_grid
from genlab.report.plots import plot_curves
from genlab.report.views import save_views
from genlab.train import distributed, resume, rundir
from genlab.train.checkpoint import load_into, save_state
from genlab.train.runtime import NonFiniteError, Runtime


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the loop saved a checkpoint; the message says how to resume."""


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; asking for a missing GPU is an error."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps and mps.is_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenlabError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if name == "mps" and not (mps and mps.is_available()):
        raise GenlabError("--device mps: Apple's MPS is not available here; use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class LoopState:
    """What the loop has done so far (all of it is in every checkpoint)."""

    step: int = 0  # batches consumed, skipped ones included
    epoch: int = 0  # completed epochs
    images_seen: int = 0
    seconds: float = 0.0  # training time, over all sessions of a resumed run
    best_fid: float = float("inf")
    skipped: int = 0  # batches refused for a NaN/inf with --on-nan skip
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""

    def counters(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "images_seen": self.images_seen,
                "seconds": self.seconds, "best_fid": self.best_fid, "skipped": self.skipped}


def budget_reached(state: LoopState, cfg: TrainConfig) -> str:
    """The budget that has run out ('' while training should go on)."""
    if cfg.steps is not None and state.step >= cfg.steps:
        return f"{cfg.steps} steps"
    if cfg.minutes is not None and state.seconds >= cfg.minutes * 60:
        return f"{cfg.minutes:g} minutes"
    if cfg.epochs is not None and state.epoch >= cfg.epochs:
        return f"{cfg.epochs} epochs"
    return ""


class StopRequest:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step (so a checkpoint
    never holds half a step); a second one aborts at once."""

    def __init__(self):
        self.requested = False
        self.previous: dict = {}

    def __call__(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ngenlab: stopping after this step and saving a checkpoint (again to abort)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Recorder:
    """log.jsonl lines (averages over the last `log_every` steps), the progress bar, epoch grids
    and evaluation lines. Silent on every rank but the first."""

    def __init__(self, run: Path, cfg: TrainConfig, total_steps: int | None, model, enabled: bool = True):
        from tqdm import tqdm

        self.run, self.cfg, self.model, self.enabled = run, cfg, model, enabled
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.window_images = 0
        self.window_start = time.monotonic()
        # a bar only on a terminal; logs (CI, nohup) get the one line per epoch from `say`
        self.bar = tqdm(total=total_steps, disable=not (enabled and cfg.progress and sys.stderr.isatty()),
                        unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def state(self) -> dict:
        return {"sums": self.sums, "counts": self.counts, "window_images": self.window_images}

    def load(self, state: dict) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])
        self.window_images = state["window_images"]

    def step(self, state: LoopState, logs: dict[str, float], batch: int) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.window_images += batch
        self.bar.update(1)
        if state.step % self.cfg.log_every == 0:
            self.flush(state)

    def _append(self, name: str, line: dict) -> None:
        if not self.enabled:
            return
        try:
            with open(self.run / name, "a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as err:
            raise GenlabError(f"cannot write {self.run / name} ({err.strerror or err}); free some space "
                              "and resume with `genlab train --resume RUN`") from None

    def flush(self, state: LoopState) -> None:
        if not self.counts:
            return
        now = time.monotonic()
        line = {"step": state.step, "epoch": state.epoch + 1, "images": state.images_seen,
                "time": round(state.seconds, 3),
                "img_per_s": round(self.window_images / max(now - self.window_start, 1e-9), 1),
                **{k: self.sums[k] / self.counts[k] for k in self.sums}}
        if state.skipped:
            line["skipped"] = state.skipped
        state.history.append(line)
        self._append(rundir.LOG, line)
        shown = {k: f"{v:.0f}" if k == "img_per_s" else f"{v:.3g}"
                 for k, v in line.items() if k not in ("step", "images", "time")}
        self.bar.set_postfix(shown, refresh=False)
        self.sums, self.counts, self.window_images, self.window_start = {}, {}, 0, now

    def scores(self, state: LoopState, values: dict) -> None:
        self._append(rundir.METRICS, {"step": state.step, "epoch": state.epoch + 1, **values})
        self.say(f"step {state.step}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))

    def diagnosis(self, d) -> None:
        self._append(rundir.DIAGNOSES, d.to_json())
        self.say(f"diagnosis at step {d.step}: {d.sentence}")

    def grid(self, name: str) -> None:
        """A grid from the same noise every time, so epochs can be compared image by image; for a
        conditional model one column per class."""
        if self.enabled:
            fixed = torch.Generator().manual_seed(self.cfg.seed)
            k = getattr(self.model, "conditional_classes", None)
            n, nrow = (k * -(-self.cfg.grid_size // k), k) if k else (self.cfg.grid_size, None)
            save_grid(self.model.sample(n, generator=fixed), self.run / rundir.SAMPLES / f"{name}.png", nrow=nrow)

    def say(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch; the last partial batch is dropped so every step has the same size."""
    if batch_size > n:
        raise GenlabError(f"batch size {batch_size} is larger than the dataset ({n} images); "
                          f"pass --batch-size {n} or less")
    return n // batch_size


@dataclass
class Loop:
    """Everything `run_loop` works with, so that checkpointing sees one object."""

    model: object
    data: ImageSet
    cfg: TrainConfig
    run: Path
    rt: Runtime
    ranks: distributed.Ranks
    rec: Recorder
    state: LoopState
    order: torch.Generator  # the data order, separate from the model's noise
    perm: torch.Tensor | None = None
    scorer: object = None
    diagnostics: object = None  # genlab.train.diagnostics.Diagnostics, on rank 0
    last_scores: dict | None = None

    def checkpoint_tree(self) -> dict:
        return {"model": self.model.state_dict(), "runtime": self.rt.state_dict(),
                "loop": self.state.counters(), "rng": resume.capture_rng(), "order": self.order.get_state(),
                "perm": self.perm, "recorder": self.rec.state()}

    def restore(self, tree: dict, source: str) -> None:
        load_into(self.model, tree["model"], source, "the run's config.yaml")
        self.rt.load_state_dict(tree["runtime"])
        for k, v in tree["loop"].items():
            setattr(self.state, k, v)
        resume.restore_rng(tree["rng"])
        self.order.set_state(tree["order"])
        self.perm = tree["perm"]
        self.rec.load(tree["recorder"])

    def save_checkpoint(self) -> None:
        if self.ranks.is_main:
            resume.save_checkpoint(self.run, self.state.step, self.checkpoint_tree(), self.cfg.keep_checkpoints)


def one_step(loop: Loop, per_epoch: int) -> None:
    """Draw the next batch (this rank's share) and train on it."""
    cfg, state = loop.cfg, loop.state
    i = state.step % per_epoch
    if i == 0 or loop.perm is None:
        loop.perm = torch.randperm(len(loop.data), generator=loop.order)
    idx = loop.rt.shard(loop.perm[i * cfg.batch_size:(i + 1) * cfg.batch_size])
    device = loop.rt.device
    try:
        logs = loop.model.train_step(loop.data.images[idx].to(device), loop.data.labels[idx].to(device))
    except NonFiniteError as err:
        if cfg.on_nan == "stop":
            raise
        state.skipped += 1
        logs = {}
        loop.rec.say(f"step {state.step + 1}: skipped the batch: {err} (--on-nan skip; {state.skipped} so far)")
    state.step += 1
    state.images_seen += cfg.batch_size
    loop.rec.step(state, logs, cfg.batch_size)
    if loop.diagnostics is not None:
        for found in loop.diagnostics.observe(state.step, logs):
            loop.rec.diagnosis(found)


def after_step(loop: Loop, per_epoch: int, stop: StopRequest, started: float) -> None:
    """Epoch grids, evaluation, budgets, interrupts and checkpoints, in that order."""
    state, cfg = loop.state, loop.cfg
    if state.step % per_epoch == 0:
        state.epoch += 1
        if state.epoch % cfg.grid_every == 0:
            loop.rec.grid(f"epoch_{state.epoch:03d}")
        last = state.history[-1] if state.history else {}
        loop.rec.say(f"epoch {state.epoch}: step {state.step}, " + ", ".join(
            f"{k} {v:.0f}" if k == "img_per_s" else f"{k} {v:.3f}"
            for k, v in last.items() if k not in ("step", "epoch", "images", "time")))
    if loop.scorer is not None and state.step % cfg.eval_every == 0 and loop.ranks.is_main:
        paused = time.monotonic()
        evaluate_now(loop)
        loop.rec.window_start += time.monotonic() - paused  # img/s counts training only
    if loop.diagnostics is not None and state.step % cfg.diagnose_every == 0:
        for found in loop.diagnostics.probe(state.step, loop.last_scores):
            loop.rec.diagnosis(found)
    state.seconds = time.monotonic() - started
    state.stop_reason = budget_reached(state, cfg)
    if distributed.any_rank(stop.requested, loop.ranks, loop.rt.device) and not state.stop_reason:
        state.stop_reason = "interrupted"
    if state.stop_reason or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0):
        loop.save_checkpoint()


def evaluate_now(loop: Loop) -> None:
    """Score the model and keep its state as best.safetensors when its FID is the lowest yet."""
    values = loop.scorer(loop.model)
    loop.last_scores = values
    loop.rec.scores(loop.state, values)
    if values["fid"] < loop.state.best_fid:
        loop.state.best_fid = values["fid"]
        save_state(loop.run / rundir.BEST, loop.model.state_dict(),
                   {"step": str(loop.state.step), "fid": repr(values["fid"])})


def run_loop(loop: Loop, stop: StopRequest) -> LoopState:
    """Train until the first budget runs out or a stop is requested."""
    per_epoch = steps_per_epoch(len(loop.data), loop.cfg.batch_size)
    state = loop.state
    started = time.monotonic() - state.seconds  # a resumed run continues its clock
    loop.rec.window_start = time.monotonic()
    try:
        while not state.stop_reason:
            one_step(loop, per_epoch)
            after_step(loop, per_epoch, stop, started)
    finally:
        loop.rec.flush(state)
        state.seconds = time.monotonic() - started
        if state.step % per_epoch:
            loop.rec.grid("final")  # stopped mid-epoch: still show where it got to
        loop.rec.close()
    return state


# ---------------------------------------------------------------- setup and save

def run_metadata(config: RunConfig, data: ImageSet, rt: Runtime) -> dict:
    return {
        "genlab_version": genlab.__version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "platform": platform.platform(),
        "device": str(rt.device), "precision": rt.precision, "world_size": rt.world_size,
        "threads": torch.get_num_threads(), "seed": config.train.seed,
        "model": config.model.name, "dataset": data.name, "dataset_split": config.data.split,
        "dataset_checksum": data.checksum, "num_images": len(data), "image_shape": list(data.shape),
        "num_classes": data.num_classes, "class_names": data.class_names,
        "command": sys.argv, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
    }


def save_results(loop: Loop, meta: dict, status: str) -> None:
    """The final weights, the loss curve and run.json (rank 0)."""
    if not loop.ranks.is_main:
        return
    state, config_name = loop.state, meta["model"]
    save_state(loop.run / rundir.WEIGHTS, loop.model.state_dict(), {"model": config_name, "step": str(state.step)})
    if state.history:
        plot_curves(state.history, loop.run / rundir.CURVE, title=f"{config_name} on {meta['dataset']}")
    if status != "diverged":
        pick = torch.randperm(len(loop.data), generator=torch.Generator().manual_seed(loop.cfg.seed))[:32]
        save_views(loop.model, loop.data.images[pick], loop.data.labels[pick], loop.run / rundir.SAMPLES)
    meta.update(status=status, stop_reason=state.stop_reason, steps=state.step, epochs_completed=state.epoch,
                images_seen=state.images_seen, seconds=round(state.seconds, 2), skipped_batches=state.skipped,
                img_per_s=round(state.images_seen / max(state.seconds, 1e-9), 1),
                finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    rundir.write_json(loop.run / rundir.META, meta)


def _truncate_jsonl(path: Path, step: int) -> list[dict]:
    """Drop lines a killed session wrote after the checkpoint it resumes from; returns the rest."""
    if not path.is_file():
        return []
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in kept if line["step"] <= step]
    path.write_text("".join(json.dumps(line) + "\n" for line in kept))
    return kept


def prepare_resume(run: Path, config: RunConfig) -> tuple[dict, Path, dict]:
    """(checkpoint tree, its path, run.json) of a run to resume with `config`, refusing meaningful changes."""
    if not rundir.is_run(run):
        raise GenlabError(f"{run} is not a genlab run folder; --resume takes the folder of an earlier run")
    diffs = resume.config_differences(load_config(run / rundir.CONFIG), config)
    if diffs:
        raise GenlabError(f"cannot resume {run} with a config that changes what its checkpoint means: "
                          + "; ".join(diffs) + ". Start a new run (another --out) for that")
    tree, path = resume.load_latest(run)
    return tree, path, rundir.read_json(run / rundir.META)


def setup_runtime(config: RunConfig) -> tuple[Runtime, distributed.Ranks]:
    cfg = config.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    ranks = distributed.init_from_env(device)
    if cfg.batch_size % ranks.world_size:
        raise GenlabError(f"batch size {cfg.batch_size} does not split evenly over {ranks.world_size} "
                          f"processes; pass a multiple of {ranks.world_size}")
    rt = Runtime.create(distributed.rank_device(device, ranks), cfg.precision, ranks.rank, ranks.world_size)
    return rt, ranks


def train(config: RunConfig, resume_run: str | Path | None = None) -> Path:
    """Train `config` into a new run folder (or continue `resume_run`) and return its path."""
    config.validate()
    run = Path(resume_run) if resume_run else Path(config.train.out)
    tree, source, meta = prepare_resume(run, config) if resume_run else (None, None, None)
    if not resume_run:
        rundir.check_out_dir(run, config.train.overwrite)  # fail before any slow work
    rt, ranks = setup_runtime(config)
    data = load_dataset(config.data)
    per_epoch = steps_per_epoch(len(data), config.train.batch_size)
    seed_everything(config.train.seed)
    model = build_model(config.model, data.shape, data.num_classes, rt)
    if hasattr(model, "nets"):
        distributed.broadcast_params(model.nets().values())
        if config.train.compile:
            for net in model.nets().values():
                net.compile()
    scorer = None
    if config.train.eval_every and ranks.is_main:
        from genlab.metrics.evaluate import training_scorer

        scorer = training_scorer(config.data, config.train.eval_n, config.train.seed,
                                 features=config.train.eval_features, log=lambda text: print(text, file=sys.stderr))
    if ranks.is_main and not resume_run:
        rundir.create_run_dir(run, config.train.overwrite)
        save_config(config, run / rundir.CONFIG)
        meta = run_metadata(config, data, rt)
        rundir.write_json(run / rundir.META, meta)
    distributed.barrier()

    total = [t for t in (config.train.steps, config.train.epochs and config.train.epochs * per_epoch) if t]
    rec = Recorder(run, config.train, min(total) if total and config.train.minutes is None else None, model,
                   enabled=ranks.is_main)
    loop = Loop(model, data, config.train, run, rt, ranks, rec, LoopState(),
                torch.Generator().manual_seed(config.train.seed), scorer=scorer)
    if config.train.diagnose_every and ranks.is_main:
        loop.diagnostics = make_diagnostics(model, data, config)
    if tree is not None:
        loop.restore(tree, str(source))
        if ranks.is_main:
            loop.state.history = _truncate_jsonl(run / rundir.LOG, loop.state.step)
            _truncate_jsonl(run / rundir.METRICS, loop.state.step)
            meta.setdefault("resumed", []).append({"from_step": loop.state.step, "command": sys.argv})
            save_config(config, run / rundir.CONFIG)  # new budgets, if any
        rec.say(f"resuming {run} from step {loop.state.step}")
    return finish(loop, meta)


def make_diagnostics(model, data: ImageSet, config: RunConfig):
    from genlab.data import load_heldout
    from genlab.train.diagnostics import Diagnostics

    heldout = load_heldout(config.data) if config.data.split == "train" else None
    return Diagnostics(model, data.images, data.labels, heldout and (heldout.images, heldout.labels),
                       every=config.train.diagnose_every, seed=config.train.seed,
                       probabilities=getattr(model, "d_outputs_probabilities", True))


def finish(loop: Loop, meta: dict) -> Path:
    """Run the loop and save what it leaves, whatever way it ends. Under torchrun every rank waits
    for rank 0's files before leaving the process group (leaving early aborts gloo's peers)."""
    try:
        try:
            with StopRequest() as stop:
                run_loop(loop, stop)
        except NonFiniteError as err:
            loop.state.stop_reason = f"non-finite {err.quantity} at step {loop.state.step + 1}"
            save_results(loop, meta, "diverged")
            kept = resume.list_checkpoints(loop.run)
            raise GenlabError(
                f"training stopped: {err.quantity} became {err.value} at step {loop.state.step + 1}; the "
                f"optimiser was not given it. The weights after step {loop.state.step} are in "
                f"{loop.run / rundir.WEIGHTS}" + (f", the last checkpoint (step {kept[-1][0]}) is kept" if kept else "")
                + ". Lower the learning rate, or pass --on-nan skip to skip such batches") from None
        interrupted = loop.state.stop_reason == "interrupted"
        save_results(loop, meta, "interrupted" if interrupted else "finished")
        distributed.barrier()
    finally:
        distributed.shutdown()
    if interrupted:
        raise TrainingInterrupted(f"stopped at step {loop.state.step}; checkpoint saved. Resume with: "
                                  f"genlab train --resume {loop.run}")
    return loop.run
