"""The Trainer: one training loop for every family, in plain view.

    while no callback says stop (a budget spent, Ctrl-C or SIGTERM):   # asked BEFORE every step
        draw this rank's share of the next batch (a fixed permutation per epoch)
        logs = model.train_step(images, labels)                        # the family owns its optimisers
        count the step; tell the callbacks (log, grids, evaluation, diagnostics, checkpoint)

It knows nothing about GANs or VAEs: the family is a `genlab.models.protocols.Family`, and what is
done around the step is the callbacks' (genlab.training.callbacks). `train` is split into setup,
the loop and saving the results, each readable alone; `resume` continues a run.

Promises (each tested): the same seed and config give the same weights on the CPU; a run killed at
any moment, even after its final checkpoint or during it, resumes to the same final bits; a NaN or
inf never reaches an optimiser; Ctrl-C or SIGTERM saves a checkpoint and says how to resume.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from genlab.config import RunConfig, TrainConfig, apply_overrides, config_differences
from genlab.core import distributed
from genlab.core.checkpoint import load_into, save_state
from genlab.core.run import Run
from genlab.core.runtime import NonFiniteError, Runtime, capture_rng, resolve_device, restore_rng, seed_everything
from genlab.data import DATASETS, ImageSet, Splits, load_dataset, splits_for_training
from genlab.errors import GenlabError
from genlab.metrics.card import write_card
from genlab.models import build_model
from genlab.models.diagnosis import Diagnostics, GradientWatch
from genlab.models.protocols import Diagnosed, Prepared
from genlab.models.text import tokenize
from genlab.plots import plot_curves
from genlab.training.callbacks import (Budget, Callback, Checkpoints, Diagnosing, Evaluation, Grids, LearningRate,
                                       Logger, Signals, TensorBoard, all_ranks_stop)
from genlab.version import __version__
from genlab.views import save_views


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the loop saved a checkpoint; the message says how to resume."""


@dataclass
class TrainState:
    """What the loop has done so far (all of it is in every checkpoint)."""

    step: int = 0  # batches consumed, skipped ones included
    epoch: int = 0  # completed epochs
    images_seen: int = 0
    seconds: float = 0.0  # training time, over all sessions of a resumed run
    skipped: int = 0  # batches refused for a NaN/inf with --on-nan skip
    stop_reason: str = ""

    def counters(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "images_seen": self.images_seen,
                "seconds": self.seconds, "skipped": self.skipped}


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch; the last partial batch is dropped so every step has the same size."""
    if batch_size > n:
        raise GenlabError(f"batch size {batch_size} is larger than the dataset ({n} images); "
                          f"pass --batch-size {n} or less")
    return n // batch_size


class Trainer:
    """Trains `model` on `data` until a callback says stop."""

    def __init__(self, model, data: ImageSet, cfg: TrainConfig, rt: Runtime, ranks: distributed.Ranks,
                 callbacks: list[Callback]):
        self.model, self.data, self.cfg, self.rt, self.ranks = model, data, cfg, rt, ranks
        self.callbacks = callbacks
        self.state = TrainState()
        self.per_epoch = steps_per_epoch(len(data), cfg.batch_size)
        self.order = torch.Generator().manual_seed(cfg.seed)  # the data order, apart from the model's noise
        self.perm: torch.Tensor | None = None  # this epoch's order
        self.excluded_seconds = 0.0  # spent evaluating: not counted in img/s
        self.resumed_from: int | None = None
        self.error: NonFiniteError | None = None
        # what a batch is conditioned on: the labels, or for a model trained on captions (--text) their tokens
        self.conditions = tokenize(data.caption_texts()) if getattr(model, "takes_text", False) else data.labels

    def epoch_of(self, step: int) -> int:
        """The epoch (1-based) that step `step` belongs to."""
        return (step - 1) // self.per_epoch + 1

    # ---------------------------------------------------------------- the loop

    def fit(self) -> str:
        """Train until a budget is spent or a stop is asked for; returns how it ended: finished,
        interrupted or diverged (a NaN/inf with --on-nan stop; `self.error` says where)."""
        started = time.monotonic() - self.state.seconds  # a resumed run continues its clock
        status = "diverged"
        self._emit("on_start")
        try:
            while not (reason := self.stop_reason(started)):
                images, labels = self.next_batch()
                logs = self.train_step(images, labels)
                self.state.step += 1
                self.state.images_seen += self.cfg.batch_size
                if self.state.step % self.per_epoch == 0:
                    self.state.epoch += 1
                self.state.seconds = time.monotonic() - started
                self._emit("on_step", logs)
            self.state.stop_reason = reason
            status = "interrupted" if reason == "interrupted" else "finished"
        except NonFiniteError as err:
            self.error = err
            self.state.stop_reason = f"non-finite {err.quantity} at step {self.state.step + 1}"
        finally:
            self.state.seconds = time.monotonic() - started
            self._emit("on_end", status)
        return status

    def stop_reason(self, started: float) -> str:
        """Asked before every step, on every rank alike."""
        self.state.seconds = time.monotonic() - started
        reasons = [cb.stop_reason(self) for cb in self.callbacks]
        return all_ranks_stop(reasons, self.ranks, self.rt.device)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the next batch, uint8 images and labels on the device."""
        i = self.state.step % self.per_epoch
        if i == 0 or self.perm is None:
            self.perm = torch.randperm(len(self.data), generator=self.order)
        idx = self.rt.shard(self.perm[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size])
        device = self.rt.device
        return self.data.images[idx].to(device), self.conditions[idx].to(device)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """The family's step; with --on-nan skip a batch that made a NaN/inf is counted and dropped."""
        try:
            return self.model.train_step(images, labels)
        except NonFiniteError as err:
            if self.cfg.on_nan == "stop":
                raise
            self.state.skipped += 1
            self.say(f"step {self.state.step + 1}: skipped the batch: {err} (--on-nan skip; "
                     f"{self.state.skipped} so far)")
            return {}

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def say(self, text: str) -> None:
        if self.ranks.is_main:
            tqdm.write(text, file=sys.stderr)  # above the progress bar, when there is one

    # ---------------------------------------------------------------- checkpoints

    def checkpoint(self) -> dict:
        """Everything that decides what happens next: the family's state, the counters, every random
        generator, the data order and this epoch's permutation, and the callbacks' states."""
        return {"model": self.model.state_dict(), "runtime": self.rt.state_dict(), "loop": self.state.counters(),
                "rng": capture_rng(), "order": self.order.get_state(), "perm": self.perm,
                "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks}}

    def restore(self, tree: dict, source: str) -> None:
        load_into(self.model, tree["model"], source, "the run's config.yaml")
        self.rt.load_state_dict(tree["runtime"])
        for k, v in tree["loop"].items():
            setattr(self.state, k, v)
        restore_rng(tree["rng"])
        self.order.set_state(tree["order"])
        self.perm = tree["perm"]
        for cb in self.callbacks:
            if cb.name in tree["callbacks"]:
                cb.load_state_dict(tree["callbacks"][cb.name])
        self.resumed_from = self.state.step


# ---------------------------------------------------------------- setup

def setup_runtime(cfg: TrainConfig) -> tuple[Runtime, distributed.Ranks]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    ranks = distributed.init_from_env(device)
    if cfg.batch_size % ranks.world_size:
        raise GenlabError(f"batch size {cfg.batch_size} does not split evenly over {ranks.world_size} "
                          f"processes; pass a multiple of {ranks.world_size}")
    rt = Runtime.create(distributed.rank_device(device, ranks), cfg.precision, ranks.rank, ranks.world_size)
    return rt, ranks


def run_metadata(config: RunConfig, data: ImageSet, rt: Runtime, model) -> dict:
    return {
        "genlab_version": __version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "platform": platform.platform(),
        "device": str(rt.device), "precision": rt.precision, "world_size": rt.world_size,
        "threads": torch.get_num_threads(), "seed": config.train.seed,
        "model": config.model.name, "dataset": data.name, "dataset_split": config.data.split,
        "dataset_checksum": data.checksum, "num_images": len(data), "image_shape": list(data.shape),
        "num_classes": data.num_classes, "class_names": data.class_names,
        "conditional_classes": model.conditional_classes,
        "parameters": {name: sum(p.numel() for p in net.parameters()) for name, net in model.nets().items()},
        "dataset_licence": DATASETS[config.data.dataset].licence if config.data.dataset in DATASETS else "not stated",
        "class_counts": torch.bincount(data.labels, minlength=data.num_classes).tolist(), "command": sys.argv, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
    }


def make_callbacks(config: RunConfig, run: Run | None, model, data: ImageSet, ranks: distributed.Ranks,
                   scorer=None, resumed_from: int | None = None, splits: Splits | None = None) -> list[Callback]:
    """The callbacks of a run: every rank stops alike; the first rank keeps the record."""
    cfg = config.train
    splits = splits or splits_for_training(config.data, data)
    callbacks: list[Callback] = [Budget(), Signals()]
    if cfg.lr_decay != "none":
        callbacks.append(LearningRate(cfg))
    if ranks.is_main:
        total = [t for t in (cfg.steps, cfg.epochs and cfg.epochs * steps_per_epoch(len(data), cfg.batch_size)) if t]
        logger = Logger(run, cfg, min(total) if total and cfg.minutes is None else None)
        callbacks += [logger, Grids(run, cfg)]
        evaluation = Evaluation(run, cfg.eval_every, scorer, logger.say) if scorer is not None else None
        callbacks += [evaluation] if evaluation else []
        if cfg.diagnose_every:
            callbacks.append(Diagnosing(run, diagnostics_for(model, data, config, splits), cfg.diagnose_every,
                                        logger.say, evaluation))
    if cfg.tensorboard and ranks.is_main:
        board = TensorBoard(run, resumed_from)
        board.attach(callbacks)
        callbacks.append(board)
    callbacks.append(Checkpoints(run, cfg, ranks.is_main))
    return callbacks


def diagnostics_for(model, data: ImageSet, config: RunConfig, splits: Splits) -> Diagnostics:
    """Gradient norms for every family, and the family's own watches (a GAN's) where it has them."""
    watches = []
    if isinstance(model, Diagnosed):
        heldout = splits.heldout if config.data.split == "train" else None
        watches = model.watches((data.images, data.labels), heldout and (heldout.images, heldout.labels),
                                config.train.seed)
    return Diagnostics([*watches, GradientWatch()])


def main_rank_log(ranks: distributed.Ranks):
    """A `log` for a family's set-up: stderr on the first rank, silence on the others."""
    return (lambda text: print(text, file=sys.stderr)) if ranks.is_main else (lambda text: None)


def prepare(model, data: ImageSet, config: RunConfig, ranks: distributed.Ranks,
            splits: Splits) -> tuple[dict | None, float]:
    """What a `Prepared` family needs before its first step (a latent family's first stage, from
    the cache or trained now), and the seconds it took. Under torchrun the first rank fills the cache
    before the others read it; then the first rank of each other node (its cache may be its own:
    filled now, once a node), then the rest. Rank 0's result is broadcast to all after."""
    if not isinstance(model, Prepared):
        return None, 0.0
    started = time.monotonic()
    heldout = splits.heldout if config.data.split == "train" else None
    say = main_rank_log(ranks)
    turns = (ranks.rank == 0, ranks.rank != 0 and ranks.local_rank == 0, ranks.local_rank != 0)
    for mine in turns if ranks.world_size > 1 else (True,):
        if mine:
            info = model.prepare(data, heldout, say)
        distributed.barrier()
    return info, time.monotonic() - started


def attach(model, data: ImageSet, ranks: distributed.Ranks) -> float:
    """Let a `Prepared` family compute what its steps reuse from the data (every session, after the
    weights are loaded); the seconds it took, which count in the budget like the first stage's."""
    if not isinstance(model, Prepared):
        return 0.0
    started = time.monotonic()
    model.attach(data, main_rank_log(ranks))
    return time.monotonic() - started


def make_scorer(config: RunConfig, data: ImageSet, ranks: distributed.Ranks, splits: Splits):
    """The scorer of --eval-every (its feature extractor trained now if it is not cached)."""
    if not (config.train.eval_every and ranks.is_main):
        return None
    from genlab.metrics.evaluate import training_scorer

    return training_scorer(splits, config.train.eval_n, config.train.seed,
                           features=config.train.eval_features, log=lambda text: print(text, file=sys.stderr),
                           class_counts=torch.bincount(data.labels, minlength=data.num_classes).tolist())


# ---------------------------------------------------------------- train, resume

def train(config: RunConfig, resume_run: str | Path | None = None) -> Path:
    """Train `config` into a new run folder (or continue `resume_run`) and return its path."""
    config.validate()
    tree = source = meta = None
    if resume_run:
        run = Run.open(resume_run)
        diffs = config_differences(run.config, config)
        if diffs:
            raise GenlabError(f"cannot resume {run.path} with a config that changes what its checkpoint means: "
                              + "; ".join(diffs) + ". Start a new run (another --out) for that")
        tree, source = run.latest_checkpoint()
        meta = run.meta
    else:
        run = Run(Run.check_out(config.train.out, config.train.overwrite))  # fail before any slow work
    rt, ranks = setup_runtime(config.train)
    data = load_dataset(config.data)
    splits = splits_for_training(config.data, data)  # every later use of the data reads it from here
    steps_per_epoch(len(data), config.train.batch_size)
    seed_everything(config.train.seed)
    model = build_model(config.model, data.shape, data.num_classes, rt)
    prepared, prepare_seconds = prepare(model, data, config, ranks, splits) if tree is None else (None, 0.0)
    distributed.broadcast_state(model.nets().values())
    if config.train.compile:
        for net in model.nets().values():
            net.compile()
    scorer = make_scorer(config, data, ranks, splits)
    if ranks.is_main and tree is None:
        meta = run_metadata(config, data, rt, model)
        if prepared is not None:
            meta["prepared"] = prepared
        run = Run.create(run.path, config, meta)
    distributed.barrier()

    resumed_from = tree["loop"]["step"] if tree is not None else None
    trainer = Trainer(model, data, config.train, rt, ranks,
                      make_callbacks(config, run, model, data, ranks, scorer, resumed_from, splits))
    trainer.state.seconds = prepare_seconds  # a first stage trained now is part of the budget
    if tree is not None:
        if ranks.is_main:
            run.truncate_logs(tree["loop"]["step"])  # what a killed session wrote after its checkpoint
        trainer.restore(tree, str(source))
        if ranks.is_main:
            meta.setdefault("resumed", []).append({"from_step": trainer.state.step, "command": sys.argv})
            run.save_config(config)  # new budgets, if any
        trainer.say(f"resuming {run.path} from step {trainer.state.step}")
    trainer.state.seconds += attach(model, data, ranks)
    if prepared is not None and (note := spent_before_training(config.train, trainer.state.seconds)):
        trainer.say(note)
    return finish(trainer, run, meta)


def spent_before_training(cfg: TrainConfig, seconds: float) -> str:
    """A warning when a family's set-up (a first stage trained now) has spent the whole minutes budget:
    the run would end with no training step, looking finished."""
    if cfg.minutes is None or seconds < cfg.minutes * 60:
        return ""
    return (f"warning: setting up the model (its first stage, the images' encodings) took {seconds:.0f} s, all of the "
            f"{cfg.minutes:g}-minute budget, so the model gets no training step in this run. The first stage is cached "
            "now: the same command again (with another --out, or --overwrite) gives the budget to the model; or "
            f"pass --minutes over {seconds / 60:.1f}")


def resume(run: str | Path, **overrides) -> Path:
    """Continue `run` from its newest checkpoint. `overrides` ({"train.epochs": 30}, or
    epochs=30) may change the budget and how the run reports, not what its checkpoint means."""
    opened = Run.open(run)
    given = {(k if "." in k else f"train.{k}"): v for k, v in overrides.items()}
    if given.get("train.out", str(opened.path)) != str(opened.path):
        raise GenlabError("--resume continues the run in its own folder; leave out --out")
    given["train.out"] = str(opened.path)
    return train(apply_overrides(opened.config, given), resume_run=opened.path)


def finish(trainer: Trainer, run: Run, meta: dict) -> Path:
    """Run the loop and save what it leaves, whatever way it ends. Under torchrun every rank waits
    for rank 0's files before leaving the process group (leaving early aborts gloo's peers)."""
    try:
        status = trainer.fit()
        if trainer.ranks.is_main:
            save_results(trainer, run, meta, status)
        if status == "diverged":
            err, step = trainer.error, trainer.state.step
            kept = run.checkpoints()
            raise GenlabError(
                f"training stopped: {err.quantity} became {err.value} at step {step + 1}; the optimiser was not "
                f"given it. The weights after step {step} are in {run / Run.WEIGHTS}"
                + (f", the last checkpoint (step {kept[-1][0]}) is kept" if kept else "")
                + ". Lower the learning rate, or pass --on-nan skip to skip such batches")
        distributed.barrier()
    finally:
        distributed.shutdown()
    if status == "interrupted":
        raise TrainingInterrupted(f"stopped at step {trainer.state.step}; checkpoint saved. Resume with: "
                                  f"genlab train --resume {run.path}")
    return run.path


def save_results(trainer: Trainer, run: Run, meta: dict, status: str) -> None:
    """The final weights, the loss curve, the family's views and run.json."""
    state, model, cfg = trainer.state, trainer.model, trainer.cfg
    save_state(run / Run.WEIGHTS, model.state_dict(), {"model": meta["model"], "step": str(state.step)})
    logger = next((cb for cb in trainer.callbacks if isinstance(cb, Logger)), None)
    if logger and logger.history:
        plot_curves(logger.history, run / Run.CURVE, title=f"{meta['model']} on {meta['dataset']}")
    if status != "diverged":
        pick = torch.randperm(len(trainer.data), generator=torch.Generator().manual_seed(cfg.seed))[:32]
        save_views(model, trainer.data.images[pick], trainer.data.labels[pick], run / Run.SAMPLES)
    meta.update(status=status, stop_reason=state.stop_reason, steps=state.step, epochs_completed=state.epoch,
                images_seen=state.images_seen, seconds=round(state.seconds, 2), skipped_batches=state.skipped,
                img_per_s=round(state.images_seen / max(state.seconds, 1e-9), 1),
                finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    run.write_meta(meta)
    write_card(run)
