"""What happens around the training step, one concern per callback.

A callback may implement any of:

    on_start(trainer)            before the first step of this session
    stop_reason(trainer) -> str  asked before every step; non-empty ends the loop (budgets, signals)
    on_step(trainer, logs)       after every step (trainer.state is already counted)
    on_end(trainer, status)      once, however the loop ended: finished, interrupted or diverged
    state_dict() / load_state_dict(state)   what an exact resume needs (kept in the checkpoint)

They run in the order the Trainer was given them; the checkpoint comes last, so that it holds
what the others did in the same step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import torch

from genlab.config import TrainConfig
from genlab.core import distributed
from genlab.core.images import make_grid, save_png
from genlab.core.run import Run
from genlab.core.runtime import LazyOptimizer
from genlab.core.signals import StopRequest
from genlab.errors import GenlabError
from genlab.models.diagnosis import Diagnostics
from genlab.models.text import tokenize


class Callback:
    """The base: every hook does nothing."""

    name = "callback"

    def on_start(self, trainer) -> None: ...

    def stop_reason(self, trainer) -> str:
        return ""

    def on_step(self, trainer, logs: dict[str, float]) -> None: ...

    def on_end(self, trainer, status: str) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


# ---------------------------------------------------------------- when to stop

def budget_reached(state, cfg: TrainConfig) -> str:
    """The budget that has run out ('' while training should go on)."""
    if cfg.steps is not None and state.step >= cfg.steps:
        return f"{cfg.steps} steps"
    if cfg.minutes is not None and state.seconds >= cfg.minutes * 60:
        return f"{cfg.minutes:g} minutes"
    if cfg.epochs is not None and state.epoch >= cfg.epochs:
        return f"{cfg.epochs} epochs"
    return ""


class Budget(Callback):
    """Steps, epochs and minutes: the first one spent ends training. Asked before each step, so a
    run resumed from its final checkpoint takes no step more."""

    name = "budget"

    def stop_reason(self, trainer) -> str:
        return budget_reached(trainer.state, trainer.cfg)


def budget_progress(state, cfg: TrainConfig, per_epoch: int, start_seconds: float = 0.0) -> float:
    """How much of the budget is spent, 0 to 1: the largest fraction over the budgets given (the
    first to run out ends training). Minutes count from `start_seconds`, when the loop began (a
    latent family's first stage, trained before it, is not the loop's to decay over)."""
    spent = [0.0]
    if cfg.steps is not None:
        spent.append(state.step / cfg.steps)
    if cfg.epochs is not None:
        spent.append(state.step / (cfg.epochs * per_epoch))
    if cfg.minutes is not None:
        spent.append((state.seconds - start_seconds) / max(cfg.minutes * 60 - start_seconds, 1e-9))
    return min(max(spent), 1.0)


def lr_factor(kind: str, progress: float) -> float:
    """The multiplier of the base learning rate `progress` of the way through the budget."""
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return 1.0 - progress
    return 1.0


def optimisers(model) -> list:
    """The optimisers a family holds as attributes (each family owns its own: `opt`, `opt_G`, ...)."""
    return [v for v in vars(model).values() if isinstance(v, (LazyOptimizer, torch.optim.Optimizer))]


class LearningRate(Callback):
    """--lr-decay: before every step, each optimiser's rate is its base rate (kept in the group as
    `initial_lr`, as torch's schedulers keep it) times the decay at the budget spent so far. A step
    budget gives the same rates on every run and resume; a minutes budget follows the clock (rank 0's
    under torchrun), from where the loop began to the end of the budget."""

    name = "lr"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.start_seconds: float | None = None

    def clock(self, trainer) -> float:
        return distributed.rank0_value(trainer.state.seconds, trainer.ranks, trainer.rt.device)

    def apply(self, trainer) -> None:
        state = trainer.state
        if self.cfg.minutes is not None:  # only a minutes budget reads the clock (a collective under torchrun)
            state = dataclasses.replace(state, seconds=self.clock(trainer))
        factor = lr_factor(self.cfg.lr_decay, budget_progress(state, self.cfg, trainer.per_epoch, self.start_seconds))
        for opt in optimisers(trainer.model):
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def on_start(self, trainer) -> None:
        if self.start_seconds is None:
            self.start_seconds = self.clock(trainer)
        self.apply(trainer)

    def on_step(self, trainer, logs) -> None:
        self.apply(trainer)

    def state_dict(self) -> dict:
        return {"start_seconds": self.start_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.start_seconds = state["start_seconds"]


class Signals(Callback):
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step (so a checkpoint
    never holds half a step); a second one aborts at once."""

    name = "signals"

    def __init__(self):
        self.stop = StopRequest("stopping after this step and saving a checkpoint")

    def on_start(self, trainer) -> None:
        self.stop.install()

    def stop_reason(self, trainer) -> str:
        return "interrupted" if self.stop.requested else ""

    def on_end(self, trainer, status: str) -> None:
        self.stop.restore()


# ---------------------------------------------------------------- the record

class Logger(Callback):
    """log.jsonl lines (averages over the last `log_every` steps), the progress bar, and one line
    per epoch for logs that are not a terminal. Numbers are summed each step and divided only when a
    line is written."""

    name = "logger"

    def __init__(self, run: Run, cfg: TrainConfig, total_steps: int | None):
        from tqdm import tqdm

        self.run, self.cfg = run, cfg
        self.history: list[dict] = []  # every line written, for the loss curve
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.window_images = 0
        self.window_start = time.monotonic()
        self.window_excluded = 0.0
        self.listeners: list = []  # called with each line written (TensorBoard)
        # a bar only on a terminal; logs (CI, nohup) get the one line per epoch
        self.bar = tqdm(total=total_steps, disable=not (cfg.progress and sys.stderr.isatty()),
                        unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts, "window_images": self.window_images}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])
        self.window_images = state["window_images"]
        self.history = self.run.read_lines(Run.LOG)

    def on_start(self, trainer) -> None:
        self.window_start, self.window_excluded = time.monotonic(), trainer.excluded_seconds

    def say(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def on_step(self, trainer, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.window_images += trainer.cfg.batch_size
        self.bar.update(1)
        state = trainer.state
        if state.step % self.cfg.log_every == 0:
            self.flush(trainer)
        if state.step % trainer.per_epoch == 0:
            # the last logged line if this epoch logged one; otherwise (epochs shorter than --log-every)
            # the means since the last line, not an older epoch's numbers again
            logged = self.history and self.history[-1]["step"] > state.step - trainer.per_epoch
            last = self.history[-1] if logged else self.means()
            self.say(", ".join([f"epoch {state.epoch}: step {state.step}"] + [
                f"{k} {v:.0f}" if k == "img_per_s" else f"{k} {v:.3f}"
                for k, v in last.items() if k not in ("step", "epoch", "images", "time")]))

    def means(self) -> dict[str, float]:
        """Each logged quantity's mean over the steps since the last logged line."""
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def flush(self, trainer) -> None:
        if not self.counts:
            return
        state, now = trainer.state, time.monotonic()
        training = now - self.window_start - (trainer.excluded_seconds - self.window_excluded)  # not evaluation
        line = {"step": state.step, "epoch": trainer.epoch_of(state.step), "images": state.images_seen,
                "time": round(state.seconds, 3), "img_per_s": round(self.window_images / max(training, 1e-9), 1),
                **self.means()}
        if state.skipped:
            line["skipped"] = state.skipped
        self.history.append(line)
        self.run.append(Run.LOG, line)
        for listener in self.listeners:
            listener(line)
        shown = {k: f"{v:.0f}" if k == "img_per_s" else f"{v:.3g}"
                 for k, v in line.items() if k not in ("step", "images", "time")}
        self.bar.set_postfix(shown, refresh=False)
        self.sums, self.counts, self.window_images = {}, {}, 0
        self.window_start, self.window_excluded = now, trainer.excluded_seconds

    def on_end(self, trainer, status: str) -> None:
        self.flush(trainer)
        self.bar.close()


class Grids(Callback):
    """A grid from the same noise after every `grid_every` epochs (and where a run stopped mid-epoch),
    so epochs can be compared image by image; for a conditional model one column per class, for a
    model trained on captions one row per example prompt (a few training captions drawn with the
    seed, listed in samples/prompts.json, which the model card shows)."""

    name = "grids"
    PROMPTS = "prompts.json"

    def __init__(self, run: Run, cfg: TrainConfig):
        self.run, self.cfg = run, cfg
        self.listeners: list = []  # called with (name, grid [H, W, C] uint8, step) (TensorBoard)

    def draw(self, model, name: str, step: int, data=None) -> None:
        fixed = torch.Generator().manual_seed(self.cfg.seed)
        k = model.conditional_classes
        n, nrow = (k * -(-self.cfg.grid_size // k), k) if k else (self.cfg.grid_size, None)
        labels = None
        if getattr(model, "takes_text", False) and data is not None:
            prompts = example_prompts(data.caption_texts(), min(EXAMPLE_PROMPTS, self.cfg.grid_size), self.cfg.seed)
            nrow = max(1, self.cfg.grid_size // len(prompts))
            n, labels = nrow * len(prompts), tokenize([p for p in prompts for _ in range(nrow)], warn=False)
            (self.run / Run.SAMPLES / self.PROMPTS).write_text(json.dumps(prompts, indent=1) + "\n")
        grid = make_grid(model.sample(n, labels=labels, generator=fixed), nrow)
        save_png(grid, self.run / Run.SAMPLES / f"{name}.png", scale=2)
        for listener in self.listeners:
            listener(name, grid, step)

    def on_step(self, trainer, logs) -> None:
        state = trainer.state
        if state.step % trainer.per_epoch == 0 and state.epoch % self.cfg.grid_every == 0:
            self.draw(trainer.model, f"epoch_{state.epoch:03d}", state.step, trainer.data)

    def on_end(self, trainer, status: str) -> None:
        if trainer.state.step % trainer.per_epoch:  # stopped mid-epoch: still show where it got to
            self.draw(trainer.model, "final", trainer.state.step, trainer.data)


EXAMPLE_PROMPTS = 4  # rows of a text model's grids


def example_prompts(captions: list[str], k: int, seed: int) -> list[str]:
    """`k` distinct captions of the data, drawn with `seed`: the prompts a text model's grids show."""
    distinct = sorted(set(captions))
    pick = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed))[:k]
    return [distinct[i] for i in pick.tolist()]


class Evaluation(Callback):
    """Every `eval_every` steps: score the model, write metrics.jsonl, and keep its state as
    best.safetensors when its FID is the lowest yet. Its time is not counted in img/s."""

    name = "evaluation"

    def __init__(self, run: Run, every: int, scorer, say):
        self.run, self.every, self.scorer, self.say = run, every, scorer, say
        self.best_fid = float("inf")
        self.last_scores: dict | None = None
        self.listeners: list = []  # called with (step, scores) (TensorBoard)

    def state_dict(self) -> dict:
        return {"best_fid": self.best_fid}

    def load_state_dict(self, state: dict) -> None:
        self.best_fid = state["best_fid"]

    def on_step(self, trainer, logs) -> None:
        step = trainer.state.step
        if step % self.every:
            return
        from genlab.core.checkpoint import save_state

        started = time.monotonic()
        values = self.scorer(trainer.model)
        self.last_scores = values
        self.run.append(Run.METRICS, {"step": step, "epoch": trainer.epoch_of(step), **values})
        self.say(f"step {step}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in values.items()))
        for listener in self.listeners:
            listener(step, values)
        if values["fid"] < self.best_fid:
            self.best_fid = values["fid"]
            save_state(self.run / Run.BEST, trainer.model.state_dict(), {"step": str(step), "fid": repr(values["fid"])})
        trainer.excluded_seconds += time.monotonic() - started


class Diagnosing(Callback):
    """Watch every step's logs, probe every `every` steps, and say each failure once as it starts
    (diagnostics.jsonl and the terminal). Which failures are watched is the family's business."""

    name = "diagnostics"

    def __init__(self, run: Run, diagnostics: Diagnostics, every: int, say, evaluation: Evaluation | None):
        self.run, self.diagnostics, self.every, self.say = run, diagnostics, every, say
        self.evaluation = evaluation
        self.listeners: list = []  # called with each diagnosis (TensorBoard)

    def on_step(self, trainer, logs) -> None:
        step = trainer.state.step
        found = self.diagnostics.observe(step, logs)
        if step % self.every == 0:
            scores = self.evaluation.last_scores if self.evaluation else None
            found += self.diagnostics.probe(step, scores)
        for d in found:
            self.run.append(Run.DIAGNOSES, d.to_json())
            self.say(f"diagnosis at step {d.step}: {d.sentence}")
            for listener in self.listeners:
                listener(d)


class Checkpoints(Callback):
    """A resumable checkpoint every `checkpoint_every` steps and where the loop stopped (unless it
    diverged: the last good checkpoint is kept). Written by the first rank only."""

    name = "checkpoints"

    def __init__(self, run: Run | None, cfg: TrainConfig, is_main: bool):
        self.run, self.cfg, self.is_main = run, cfg, is_main
        self.saved_step: int | None = None

    def save(self, trainer) -> None:
        if self.is_main:
            self.run.save_checkpoint(trainer.state.step, trainer.checkpoint(), self.cfg.keep_checkpoints)
        self.saved_step = trainer.state.step

    def on_start(self, trainer) -> None:
        if trainer.resumed_from is not None:
            self.saved_step = trainer.resumed_from  # its checkpoint exists already

    def on_step(self, trainer, logs) -> None:
        every = self.cfg.checkpoint_every
        if every and trainer.state.step % every == 0:
            self.save(trainer)

    def on_end(self, trainer, status: str) -> None:
        if status != "diverged" and self.saved_step != trainer.state.step:
            self.save(trainer)


def all_ranks_stop(reasons: list[str], ranks, device) -> str:
    """The reason to stop, agreed by every rank (a rank that stops alone would leave the others
    waiting in the next all-reduce)."""
    reason = next((r for r in reasons if r), "")
    if distributed.any_rank(bool(reason), ranks, device) and not reason:
        reason = "stopped by another rank"
    return reason


class TensorBoard(Callback):
    """TensorBoard's event files in RUN/tensorboard/: every logged scalar (losses, D(x), D(G(z)),
    gradient norms, img/s), the --eval-every metrics, the epoch grids as images and each diagnosis as
    text. A resumed run purges the events its killed session wrote after the checkpoint (purge_step),
    so the curves stay continuous as the weights do."""

    name = "tensorboard"

    def __init__(self, run: Run, resumed_from: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GenlabError("--tensorboard needs TensorBoard: pip install 'genlab[tensorboard]' (or leave out "
                              "--tensorboard)") from None
        purge = resumed_from + 1 if resumed_from is not None else None
        self.writer = SummaryWriter(str(run / Run.TENSORBOARD), purge_step=purge)

    def attach(self, callbacks: list[Callback]) -> None:
        """Listen to what the other callbacks record."""
        for cb in callbacks:
            if isinstance(cb, Logger):
                cb.listeners.append(self.line)
            elif isinstance(cb, Evaluation):
                cb.listeners.append(self.scores)
            elif isinstance(cb, Diagnosing):
                cb.listeners.append(self.diagnosis)
            elif isinstance(cb, Grids):
                cb.listeners.append(self.grid)

    def line(self, line: dict) -> None:
        for key, value in line.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, line["step"])

    def scores(self, step: int, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"eval/{key}", value, step)

    def diagnosis(self, d) -> None:
        self.writer.add_text(f"diagnosis/{d.kind}", d.sentence, d.step)

    def grid(self, name: str, array, step: int) -> None:
        self.writer.add_image(f"samples/{name.split('_')[0]}", array, step, dataformats="HWC")

    def on_end(self, trainer, status: str) -> None:
        self.writer.flush()
        self.writer.close()
