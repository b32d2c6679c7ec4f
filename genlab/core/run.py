"""The run folder, owned by one class: what a run leaves behind, how to tell what a folder is, and
every read and write of its files.

    config.yaml        the resolved config: `genlab train --config RUN/config.yaml` repeats the run
    run.json           seed, versions, dataset checksum, command, status, timing
    log.jsonl          one line per logged step (losses averaged since the previous line)
    samples/           epoch_001.png ...: a grid from the same fixed noise after every epoch; view-*.png
    loss_curve.png     the curves of log.jsonl
    model.safetensors  the final state (nets and optimisers), see genlab.core.checkpoint
    checkpoints/       step-00001000.safetensors ...: everything an exact resume needs
    metrics.jsonl      with --eval-every: the scores of every evaluation
    best.safetensors   with --eval-every: the state with the lowest FID so far
    eval.json          written by `genlab eval RUN` (genlab.metrics.evaluate.evaluate_run)
    diagnostics.jsonl  each training failure diagnosed, as it started
    ratings.jsonl      people's votes from `genlab serve` (real or fake, A or B)
    README.md          the model card: what the model is, its data, budget, scores, how to load it
    tensorboard/       with --tensorboard: TensorBoard's event files
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

from genlab.config import RunConfig, config_text, load_config
from genlab.core.checkpoint import load_state, save_state, write_atomic
from genlab.errors import GenlabError

CHECKPOINT_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")
_APPEND_LOCK = threading.Lock()  # one writer at a time within a process (the web demo's threads)


class Run:
    """A run folder. `Run.open(path)` checks that it is one (one message when it is not);
    `Run.create(path, overwrite)` makes a new one."""

    CONFIG, META, LOG, SAMPLES, CURVE, WEIGHTS = (
        "config.yaml", "run.json", "log.jsonl", "samples", "loss_curve.png", "model.safetensors")
    METRICS, BEST, EVAL, DIAGNOSES, CHECKPOINTS = (
        "metrics.jsonl", "best.safetensors", "eval.json", "diagnostics.jsonl", "checkpoints")
    RATINGS, CARD, TENSORBOARD = "ratings.jsonl", "README.md", "tensorboard"
    MARKERS = (CONFIG, META)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._config: RunConfig | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.resolve().name

    # ---------------------------------------------------------------- what a folder is

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return any((Path(path) / marker).is_file() for marker in Run.MARKERS)

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """The run at `path`, refusing (in one line) a folder that is not one."""
        path = Path(path)
        if not path.is_dir():
            what = "is a file" if path.exists() else "does not exist"
            raise GenlabError(f"{path} is not a genlab run folder: it {what}; pass the folder that `genlab train "
                              "--out` created")
        if not (path / cls.CONFIG).is_file():
            if not any(path.iterdir()):
                raise GenlabError(f"{path} is not a genlab run folder: it is empty (no config file, no checkpoint). A "
                                  "run stopped before it wrote anything leaves nothing to resume; start it again with "
                                  f"`genlab train ... --out {path}`")
            raise GenlabError(f"{path} is not a genlab run folder (no config file, config.yaml); pass the folder "
                              "that `genlab train --out` created")
        return cls(path)

    @staticmethod
    def check_out(path: str | Path, overwrite: bool) -> Path:
        """Refuse an --out that would mix with or silently replace something; returns the path."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise GenlabError(f"output {path} exists and is not a folder; choose another --out")
        if path.is_dir() and any(path.iterdir()):
            if not Run.is_run(path):
                raise GenlabError(f"output folder {path} holds files that are not a genlab run; "
                                  "choose a new or empty --out (genlab never deletes them)")
            if not overwrite:
                raise GenlabError(f"output folder {path} already holds a genlab run; pass --overwrite "
                                  "to replace it or choose another --out")
        return path

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, meta: dict) -> "Run":
        """A new run folder holding `config` and `meta` (replacing an earlier genlab run only when
        config.train.overwrite). config.yaml is written first: a folder that has anything has it."""
        path = cls.check_out(path, config.train.overwrite)
        try:
            if path.is_dir() and any(path.iterdir()):
                shutil.rmtree(path)
                print(f"genlab: removed the earlier run in {path} (--overwrite)")
            path.mkdir(parents=True, exist_ok=True)
            run = cls(path)
            run.save_config(config)
            run.write_meta(meta)
            (path / cls.SAMPLES).mkdir(exist_ok=True)
        except OSError as err:
            raise GenlabError(f"cannot write to output folder {path} ({err.strerror or err}); "
                              "choose a writable --out") from None
        return run

    def check_resumable(self) -> None:
        """Refuse a run that has no checkpoint, saying what happened and how to start it again."""
        if not self.checkpoints():
            every = self.config.train.checkpoint_every
            raise GenlabError(f"run {self.path} has no checkpoint to resume from: it was stopped before its first "
                              f"checkpoint (one every {every} steps, and at the end). Start it again with "
                              f"`genlab train --config {self.path / self.CONFIG} --out {self.path} --overwrite`")

    # ---------------------------------------------------------------- config, run.json, eval.json

    @property
    def config(self) -> RunConfig:
        """The run's typed config (read once)."""
        if self._config is None:
            self._config = load_config(self.path / self.CONFIG)
        return self._config

    def save_config(self, config: RunConfig) -> None:
        write_atomic(self.path / self.CONFIG, config_text(config).encode())
        self._config = config

    @property
    def meta(self) -> dict:
        """run.json: versions, dataset, command, status, timing."""
        if not (self.path / self.META).is_file():
            raise GenlabError(f"{self.path} has no {self.META}: the run did not get far enough to report on")
        return read_json(self.path / self.META)

    def write_meta(self, meta: dict) -> None:
        write_json(self.path / self.META, meta)

    @property
    def eval(self) -> dict | None:
        """eval.json (the result of `genlab eval RUN`), or None before the run is evaluated."""
        path = self.path / self.EVAL
        return read_json(path) if path.is_file() else None

    def write_eval(self, result: dict) -> Path:
        write_json(self.path / self.EVAL, result)
        return self.path / self.EVAL

    # ---------------------------------------------------------------- logs

    def read_lines(self, name: str) -> list[dict]:
        """The records of a .jsonl file of the run ([] when there is none)."""
        path = self.path / name
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def append(self, name: str, record: dict) -> None:
        try:
            with open(self.path / name, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise GenlabError(f"cannot write {self.path / name} ({err.strerror or err}); free some space "
                              "and resume with `genlab train --resume RUN`") from None

    def append_durably(self, name: str, record: dict) -> None:
        """One record as one line, written with a single O_APPEND write and fsynced before returning:
        concurrent writers (threads or processes) never interleave or lose a line."""
        line = (json.dumps(record) + "\n").encode()
        with _APPEND_LOCK:
            fd = os.open(self.path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)

    def truncate_logs(self, step: int) -> None:
        """Drop the lines a killed session wrote after the checkpoint it resumes from."""
        for name in (self.LOG, self.METRICS, self.DIAGNOSES):
            path = self.path / name
            if path.is_file():
                kept = [r for r in self.read_lines(name) if r["step"] <= step]
                path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    # ---------------------------------------------------------------- weights and checkpoints

    def weights(self, name: str = WEIGHTS) -> Path:
        """The path of a weights file of the run, refusing one that is not there."""
        path = self.path / name
        if not path.is_file():
            hint = "train with --eval-every to keep one" if name == self.BEST else "it has not finished"
            raise GenlabError(f"run {self.path} has no {name}: {hint}")
        return path

    def checkpoint_path(self, step: int) -> Path:
        return self.path / self.CHECKPOINTS / f"step-{step:08d}.safetensors"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Finished checkpoints, oldest first (temporary files of an interrupted write do not match
        the name pattern and are never taken for checkpoints)."""
        folder = self.path / self.CHECKPOINTS
        if not folder.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name)))

    def save_checkpoint(self, step: int, tree: dict, keep: int) -> Path:
        """Write the step's checkpoint durably, then prune all but the newest `keep`."""
        path = self.checkpoint_path(step)
        path.parent.mkdir(exist_ok=True)
        save_state(path, tree, {"step": str(step)})
        for _, old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        for leftover in path.parent.glob(".*.tmp-*"):  # a write that a kill interrupted earlier
            leftover.unlink(missing_ok=True)
        return path

    def latest_checkpoint(self) -> tuple[dict, Path]:
        """The newest checkpoint that loads; a damaged one (which atomic writes should never leave)
        is reported and the next older one is tried."""
        self.check_resumable()
        errors = []
        for _, path in reversed(self.checkpoints()):
            try:
                return load_state(path)[0], path
            except GenlabError as err:
                errors.append(str(err))
        raise GenlabError("no checkpoint of the run can be loaded: " + "; ".join(errors))


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GenlabError(f"cannot read {path}: {err}") from None
