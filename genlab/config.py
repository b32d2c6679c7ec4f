"""Typed configuration of a run: dataclasses with one help line per field, YAML in and out, and
command-line flags generated from the same fields.

A run's config has three sections: `data` (what to train on), `model` (the family's own dataclass,
picked by `model.name` from the model registry) and `train` (the loop: budget, batch, seed, output).
Precedence: dataclass defaults < YAML file < command-line flags. The resolved config is saved as
`config.yaml` in the run folder, so `genlab train --config RUN/config.yaml` repeats the run.

Flags are generated with argparse from the fields (STYLE.md: "argparse generated from the
dataclasses") instead of jsonargparse: the parser stays a few dozen lines we own, starts fast, and every
bad value gets our one-line message rather than a library's.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genlab.errors import GenlabError


def option(default: Any, help: str, flag: str | None = None, choices: tuple | None = None,
           aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its `--help` line, an optional flag name (and other names) and
    allowed values."""
    meta = {"help": help, "flag": flag, "choices": choices, "aliases": aliases}
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """What to train on."""

    dataset: str = option("mnist-sample", "dataset name (listed at the end of `genlab train --help`)")
    data_dir: str | None = option(None, "folder with the dataset's files (IDX files or images)")
    split: str = option("train", "which split to train on", choices=("train", "test"))
    image_size: int = option(28, "side in pixels that `folder` images are resized to")
    limit: int | None = option(None, "use a fixed random subset of N images of the split (quick trials)")

    def validate(self) -> None:
        if self.image_size <= 0:
            raise GenlabError(f"image_size must be positive, got {self.image_size}")
        if self.limit is not None and self.limit <= 0:
            raise GenlabError(f"limit must be a positive number of images, got {self.limit}")


@dataclass
class TrainConfig:
    """The training loop: budget, batching, seed, where the run goes, how it reports."""

    epochs: int | None = option(20, "passes over the data (stops at the first budget reached)")
    steps: int | None = option(None, "optimisation steps to run (stops at the first budget reached)")
    minutes: float | None = option(None, "wall-clock budget in minutes; alone it replaces --epochs")
    batch_size: int = option(64, "images per optimisation step")
    seed: int = option(0, "seed for weights, noise and data order: same seed, same weights on CPU")
    out: str = option("runs/run", "run folder to create (config, log, grids, curves, weights)")
    overwrite: bool = option(False, "replace an existing genlab run in --out (it is deleted)")
    log_every: int = option(20, "write losses to log.jsonl every N steps")
    grid_size: int = option(64, "images in each epoch's sample grid (fixed noise)")
    grid_every: int = option(1, "write the sample grid every N epochs (raise it for tiny datasets)")
    device: str = option("auto", "where to train (auto: a GPU when there is one)",
                         choices=("auto", "cpu", "cuda", "mps"))
    threads: int | None = option(None, "CPU threads for PyTorch (default: PyTorch's choice)")
    precision: str = option("fp32", "fp32, or mixed precision: bf16 (CPU or GPU), fp16 (GPU, with "
                            "gradient scaling)", choices=("fp32", "bf16", "fp16"))
    compile: bool = option(False, "compile the networks with torch.compile (slow start, faster steps)")
    checkpoint_every: int | None = option(1000, "save a resumable checkpoint every N steps (and at the end)")
    keep_checkpoints: int = option(1, "how many recent checkpoints to keep in RUN/checkpoints")
    on_nan: str = option("stop", "on a NaN/inf loss or gradient: stop (keeping the last good weights) "
                         "or skip the batch", choices=("stop", "skip"))
    progress: bool = option(True, "show a progress bar")
    diagnose_every: int | None = option(100, "probe for GAN failures (collapse, overfitting D) every N "
                                        "steps; per-step checks run always (none: off)")
    eval_every: int | None = option(None, "every N steps score eval_n samples (FID, ...) and keep "
                                    "best.safetensors by FID")
    eval_n: int = option(2000, "samples scored by --eval-every")
    eval_features: str | None = option(None, "feature extractor folder for --eval-every (default: the "
                                       "dataset's cached one)")

    def validate(self) -> None:
        for name in ("epochs", "steps", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GenlabError(f"{name} must be positive, got {value}; pass a number above 0")
        if self.epochs is None and self.steps is None and self.minutes is None:
            raise GenlabError("no training budget: give --epochs, --steps or --minutes")
        if self.diagnose_every is not None and self.diagnose_every <= 0:
            raise GenlabError(f"diagnose_every must be positive, got {self.diagnose_every}")
        if self.eval_every is not None and self.eval_every <= 0:
            raise GenlabError(f"eval_every must be positive, got {self.eval_every}")
        if self.eval_n < 2:
            raise GenlabError(f"eval_n must be at least 2 samples, got {self.eval_n}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise GenlabError(f"checkpoint_every must be positive, got {self.checkpoint_every}")
        for name in ("batch_size", "log_every", "grid_size", "grid_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise GenlabError(f"{name} must be positive, got {getattr(self, name)}")
        if self.threads is not None and self.threads <= 0:
            raise GenlabError(f"threads must be positive, got {self.threads}")


@dataclass
class RunConfig:
    """Everything a run needs to be repeated."""

    data: DataConfig
    model: Any  # the family's config dataclass, chosen by model.name
    train: TrainConfig

    def validate(self) -> None:
        self.data.validate()
        self.train.validate()
        self.model.validate()

    def to_dict(self) -> dict:
        return {"data": dataclasses.asdict(self.data), "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}


SECTIONS = ("data", "model", "train")


def model_config_class(name: str) -> type:
    """The config dataclass of model family `name` (a clear error lists the known names)."""
    from genlab.models import get_model_entry

    return get_model_entry(name).config_class


def default_config(model: str = "gan-mlp") -> RunConfig:
    return RunConfig(DataConfig(), model_config_class(model)(), TrainConfig())


# ---------------------------------------------------------------- values and types

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[type, bool]:
    """(int|float|str|bool, optional?) from an annotation such as `int | None`."""
    args = typing.get_args(tp)
    if args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], len(inner) < len(args)
    return tp, False


def _check_value(cls: type, f: dataclasses.Field, value: Any, where: str) -> Any:
    """Type-check one value from YAML; ints are accepted where floats are expected."""
    base, optional = _base_type(_field_types(cls)[f.name])
    if value is None:
        if optional:
            return None
        raise GenlabError(f"{where}: `{f.name}` cannot be empty; give a {base.__name__}")
    ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise GenlabError(f"{where}: `{f.name}` must be a {base.__name__}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise GenlabError(f"{where}: `{f.name}` must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def _unknown_key(key: str, known: list[str], where: str) -> GenlabError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return GenlabError(f"{where}: unknown key `{key}`{hint}; known keys: {', '.join(known)}")


def section_from_dict(cls: type, values: dict, where: str) -> Any:
    """Build dataclass `cls` from a mapping, naming any unknown key or wrong type."""
    if not isinstance(values, dict):
        raise GenlabError(f"{where} must be a mapping of key: value, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown_key(str(key), list(fields), where)
        kwargs[key] = _check_value(cls, fields[key], value, where)
    return cls(**kwargs)


# ---------------------------------------------------------------- YAML

def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"config file {path} does not exist; check the path given to --config")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise GenlabError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise GenlabError(f"config file {path} must be a mapping with sections {', '.join(SECTIONS)}")
    for key in raw:
        if key not in SECTIONS:
            raise _unknown_key(str(key), list(SECTIONS), f"config file {path}")
    return raw


def config_from_dict(raw: dict, model: str | None = None, where: str = "config") -> RunConfig:
    """A RunConfig from a {data, model, train} mapping; `model` (a CLI choice) overrides model.name."""
    model_raw = dict(raw.get("model") or {})
    if model is not None:
        model_raw["name"] = model
    name = model_raw.get("name", "gan-mlp")
    if not isinstance(name, str):
        raise GenlabError(f"{where}: model `name` must be a string, got {name!r}")
    model_raw["name"] = name
    return RunConfig(
        data=section_from_dict(DataConfig, raw.get("data") or {}, f"{where}, section data"),
        model=section_from_dict(model_config_class(name), model_raw, f"{where}, section model"),
        train=section_from_dict(TrainConfig, raw.get("train") or {}, f"{where}, section train"),
    )


def load_config(path: str | Path, model: str | None = None) -> RunConfig:
    return config_from_dict(read_yaml(path), model, where=f"config file {path}")


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config. `overwrite` is saved as false: it is an action of one command,
    and `genlab train --config RUN/config.yaml` must never delete the run it repeats."""
    values = config.to_dict()
    values["train"]["overwrite"] = False
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))


# ---------------------------------------------------------------- flags

def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _parse_scalar(base: type, optional: bool):
    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {base.__name__}, got {text!r}") from None
    parse.__name__ = base.__name__  # argparse names the type in its message
    return parse


def add_section_flags(parser: argparse.ArgumentParser, section: str, cls: type) -> None:
    """One flag per field of `cls`; values land in the namespace as `section.field`."""
    group = parser.add_argument_group(f"{section} options ({cls.__name__})")
    for f in dataclasses.fields(cls):
        base, optional = _base_type(_field_types(cls)[f.name])
        kwargs: dict[str, Any] = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS,
                                  "help": f.metadata.get("help", "")}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _parse_scalar(base, optional)
            kwargs["metavar"] = base.__name__.upper()
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
                kwargs["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        group.add_argument(_flag(f), *f.metadata.get("aliases", ()), **kwargs)


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply `{"section.field": value}` flags to a RunConfig, returning a new one."""
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
    for dest, value in overrides.items():
        section, name = dest.split(".", 1)
        sections[section][name] = value
    return config_from_dict(sections, where="command line")
