"""Typed configuration: dataclasses with one help line per field, YAML in and out, and command-line
flags generated from the same fields, for `genlab train` and every other command.

A run's config has three sections: `data` (what to train on), `model` (the family's own dataclass,
picked by `model.name` from the model-config registry below) and `train` (the loop: budget, batch,
seed, output). Precedence: dataclass defaults < YAML file < command-line flags. The resolved config
is saved as `config.yaml` in the run folder, so `genlab train --config RUN/config.yaml` repeats it.

The meaning of the fields lives here, not in the command line: a budget given alone replaces the
default 20 epochs (`TrainConfig(minutes=5)` trains for five minutes), and each field says whether a
resumed run may change it (`resumable`).

Flags are generated with argparse from the fields (STYLE.md: "argparse generated from the
dataclasses") rather than jsonargparse: the parser stays a few dozen lines we own, starts fast, and
every bad value gets our one-line message rather than a library's.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genlab.errors import GenlabError

# the fewest samples genlab's metrics take: density and coverage measure each point's 5 nearest
# neighbours among as many reference images as there are samples
MIN_EVAL_SAMPLES = 6


REQUIRED = dataclasses.MISSING  # option(REQUIRED, ...): a field without a default (a required argument)


def option(default: Any, help: str, flag: str | None = None, choices: tuple | None = None,
           aliases: tuple[str, ...] = (), resumable: bool = False, positional: bool = False) -> Any:
    """A dataclass field with its `--help` line, an optional flag name (and other names), allowed
    values, whether `genlab train --resume` may change it, and whether it is a positional argument."""
    meta = {"help": help, "flag": flag, "choices": choices, "aliases": aliases, "resumable": resumable,
            "positional": positional}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, list):  # a repeatable flag or several positionals
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- the model configs, by name

MODEL_CONFIGS: dict[str, type] = {}  # filled by genlab.models.register_model


def register_model_config(name: str, config_class: type) -> None:
    """Make `config_class` the config of model `name`; it must be a dataclass whose `name` field
    defaults to `name` (configs store the name, the registry finds the class)."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"model {name!r}: config {config_class!r} is not a dataclass")
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    if defaults.get("name") != name:
        raise ValueError(f"model {name!r}: {config_class.__name__}.name must default to {name!r}")
    MODEL_CONFIGS[name] = config_class


def model_config_class(name: str) -> type:
    """The config dataclass of model family `name` (a clear error lists the known names)."""
    if name not in MODEL_CONFIGS:
        raise GenlabError(f"unknown model {name!r}; known models: {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[name]


# ---------------------------------------------------------------- the sections

CHANNELS = ("auto", "1", "3")


@dataclass
class DataConfig:
    """What to train on."""

    dataset: str = option("mnist-sample", "dataset name (listed at the end of `genlab train --help`)")
    data_dir: str | None = option(None, "folder with the dataset's files (IDX files, CIFAR-10 binaries, images, "
                                  "the emoji tarball)")
    split: str = option("train", "which split to train on", choices=("train", "test"))
    image_size: int | None = option(None, "side in pixels images are resized to, e.g. 28, 32 or 64 (default: the "
                                    "dataset's own; 28 for a folder)")
    channels: str = option("auto", "1 (grey) or 3 (colour); auto: the dataset's own (a folder: 3 when any image "
                           "has colour)", choices=CHANNELS)
    background: str = option("white", "what transparent pixels are painted on", choices=("white", "black"))
    crop: bool = option(False, "crop a folder's images to their centred square before resizing (default: "
                        "squeeze them)")
    limit: int | None = option(None, "use a fixed random subset of N images of the split (quick trials)")

    def validate(self) -> None:
        if self.image_size is not None and self.image_size <= 0:
            raise GenlabError(f"image_size must be positive, got {self.image_size}")
        if self.limit is not None and self.limit <= 0:
            raise GenlabError(f"limit must be a positive number of images, got {self.limit}")


DEFAULT_EPOCHS = 20


class _DefaultEpochs(int):
    """The epochs field's default: 20 unless another budget (steps, minutes) is given, so that a
    budget given alone replaces it. Resolved to an int or None when the config is built."""


@dataclass
class TrainConfig:
    """The training loop: budget, batching, seed, where the run goes, how it reports."""

    epochs: int | None = option(_DefaultEpochs(DEFAULT_EPOCHS), "passes over the data (20 when no other budget is "
                                "given; stops at the first budget reached)", resumable=True)
    steps: int | None = option(None, "optimisation steps to run (stops at the first budget reached)", resumable=True)
    minutes: float | None = option(None, "wall-clock budget in minutes; alone it replaces the epochs", resumable=True)
    batch_size: int = option(64, "images per optimisation step")
    lr_decay: str = option("none", "decay every learning rate over the budget (the first budget to run out: "
                           "steps, epochs or minutes): none, cosine or linear, to 0 at the end",
                           choices=("none", "cosine", "linear"))
    seed: int = option(0, "seed for weights, noise and data order: same seed, same weights on CPU")
    out: str = option("runs/run", "run folder to create (config, log, grids, curves, weights)", resumable=True)
    overwrite: bool = option(False, "replace an existing genlab run in --out (it is deleted)", resumable=True)
    log_every: int = option(20, "write losses to log.jsonl every N steps", resumable=True)
    grid_size: int = option(64, "images in each epoch's sample grid (fixed noise)", resumable=True)
    grid_every: int = option(1, "write the sample grid every N epochs (raise it for tiny datasets)", resumable=True)
    device: str = option("auto", "where to train (auto: a GPU when there is one)",
                         choices=("auto", "cpu", "cuda", "mps"), resumable=True)
    threads: int | None = option(None, "CPU threads for PyTorch (default: PyTorch's choice)", resumable=True)
    precision: str = option("fp32", "fp32, or mixed precision: bf16 (CPU or GPU), fp16 (GPU, with gradient "
                            "scaling), auto (bf16 on a GPU that has it or a CPU with AMX, else fp32 on a CPU, fp16 on "
                            "a GPU)", choices=("fp32", "bf16", "fp16", "auto"))
    compile: bool = option(False, "compile the networks with torch.compile (slow start, faster steps)",
                           resumable=True)
    checkpoint_every: int | None = option(1000, "save a resumable checkpoint every N steps (and at the end)",
                                          resumable=True)
    keep_checkpoints: int = option(1, "how many recent checkpoints to keep in RUN/checkpoints", resumable=True)
    on_nan: str = option("stop", "on a NaN/inf loss or gradient: stop (keeping the last good weights) "
                         "or skip the batch", choices=("stop", "skip"), resumable=True)
    progress: bool = option(True, "show a progress bar", resumable=True)
    diagnose_every: int | None = option(100, "probe for training failures (GAN collapse, overfitting D) every N "
                                        "steps; per-step checks run always (none: off)", resumable=True)
    eval_every: int | None = option(None, "every N steps score eval_n samples (FID, ...) and keep "
                                    "best.safetensors by FID", resumable=True)
    eval_n: int = option(2000, "samples scored by --eval-every", resumable=True)
    eval_features: str | None = option(None, "feature extractor for --eval-every (default: the dataset's "
                                       "cached one)", resumable=True)
    tensorboard: bool = option(False, "also write TensorBoard event files to RUN/tensorboard (pip install "
                               "'genlab[tensorboard]'; then `tensorboard --logdir runs/`)", resumable=True)

    def __post_init__(self) -> None:
        if isinstance(self.epochs, _DefaultEpochs):  # the default yields to a budget given alone
            self.epochs = None if (self.steps is not None or self.minutes is not None) else int(self.epochs)

    def validate(self) -> None:
        for name in ("epochs", "steps", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GenlabError(f"{name} must be positive, got {value}; pass a number above 0")
        if self.epochs is None and self.steps is None and self.minutes is None:
            raise GenlabError("no training budget: give --epochs, --steps or --minutes")
        for name in ("diagnose_every", "eval_every", "checkpoint_every", "threads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GenlabError(f"{name} must be positive, got {value}")
        if self.eval_n < MIN_EVAL_SAMPLES:
            raise GenlabError(f"eval_n must be at least {MIN_EVAL_SAMPLES} samples, got {self.eval_n}")
        for name in ("batch_size", "log_every", "grid_size", "grid_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise GenlabError(f"{name} must be positive, got {getattr(self, name)}")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise GenlabError("--tensorboard needs TensorBoard: pip install 'genlab[tensorboard]' (or leave out "
                              "--tensorboard)")


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
        if self.train.lr_decay != "none" and getattr(self.model, "lr_half_life", None) is not None:
            raise GenlabError(f"--lr-decay {self.train.lr_decay} and --lr-half-life both set the learning rate; "
                              "pass one of them")

    def to_dict(self) -> dict:
        return {"data": dataclasses.asdict(self.data), "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}


SECTIONS = ("data", "model", "train")
BUDGETS = ("train.epochs", "train.steps", "train.minutes")


def default_config(model: str = "gan-mlp") -> RunConfig:
    return RunConfig(DataConfig(), model_config_class(model)(), TrainConfig())


# ---------------------------------------------------------------- values and types

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[type, bool]:
    """(int|float|str|bool, optional?) from an annotation such as `int | None` (for `list[str]`,
    the element type)."""
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], False
    args = typing.get_args(tp)
    if args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], len(inner) < len(args)
    return tp, False


def field_type(cls: type, name: str) -> tuple[type, bool]:
    """(base type, optional?) of field `name` of dataclass `cls`."""
    return _base_type(_field_types(cls)[name])


def _check_value(cls: type, f: dataclasses.Field, value: Any, where: str) -> Any:
    """Type-check one value from YAML; ints are accepted where floats are expected."""
    base, optional = field_type(cls, f.name)
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


def parse_text(cls: type, name: str, text: str) -> Any:
    """A field's value from text (a flag, a query parameter, `--option k=v`), converted to its type;
    bools accept true/false/1/0/yes/no, optional fields `none`."""
    base, optional = field_type(cls, name)
    text = str(text).strip()
    if optional and text.lower() in ("none", "null", ""):
        return None
    if base is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    try:
        return base(text)
    except ValueError:
        raise ValueError(f"expected a {base.__name__}, got {text!r}") from None


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


def config_text(config: RunConfig) -> str:
    """The YAML of a resolved config. `overwrite` is saved as false: it is an action of one command,
    and `genlab train --config RUN/config.yaml` must never delete the run it repeats."""
    values = config.to_dict()
    values["train"]["overwrite"] = False
    return yaml.safe_dump(values, sort_keys=False)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(config_text(config))


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply `{"section.field": value}` to a RunConfig, returning a new one. A budget given alone
    (`train.minutes` without `train.epochs` or `train.steps`) replaces the others: time decides."""
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
    given = set(overrides)
    if "train.minutes" in given and not {"train.epochs", "train.steps"} & given:
        overrides = {**overrides, "train.epochs": None, "train.steps": None}
    for dest, value in overrides.items():
        section, name = dest.split(".", 1)
        sections[section][name] = value
    return config_from_dict(sections, where="command line")


def config_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """'section.field: old -> new' for each change that would change what a checkpoint means (the
    fields not marked `resumable`)."""
    diffs = []
    for section in SECTIONS:
        old_obj, new_obj = getattr(saved, section), getattr(new, section)
        resumable = {f.name for f in dataclasses.fields(new_obj) if f.metadata.get("resumable")}
        old_d, new_d = dataclasses.asdict(old_obj), dataclasses.asdict(new_obj)
        for key in sorted(set(old_d) | set(new_d)):
            a, b = old_d.get(key), new_d.get(key)
            if a != b and key not in resumable:
                diffs.append(f"{section}.{key}: {a!r} -> {b!r}")
    return diffs


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


def _argument(section: str, cls: type, f: dataclasses.Field, keep_defaults: bool) -> tuple[list[str], dict]:
    """The names and keyword arguments of the argparse argument of field `f`."""
    base, optional = field_type(cls, f.name)
    many = typing.get_origin(_field_types(cls)[f.name]) is list
    positional = f.metadata.get("positional", False)
    kwargs: dict[str, Any] = {"help": f.metadata.get("help", "").replace("%", "%%")}  # argparse formats help
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _parse_scalar(base, optional)
        choices = f.metadata.get("choices")
        kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}" if choices else base.__name__.upper()
        if choices:
            kwargs["choices"] = choices
    if not keep_defaults:
        kwargs["default"] = argparse.SUPPRESS  # absent unless given, so that YAML values stand
    elif f.default is not dataclasses.MISSING:
        kwargs["default"] = f.default
        if f.default is not None and base is not bool:
            kwargs["help"] += f" (default {f.default})"
    elif not (positional or many):
        kwargs["required"] = True
    if positional:
        kwargs.update(metavar=f.name.upper(), nargs="+" if many else "?" if optional else None)
        return [f"{section}.{f.name}"], kwargs
    kwargs["dest"] = f"{section}.{f.name}"
    if many:
        kwargs["action"] = "append"  # a repeatable flag
    return [_flag(f), *f.metadata.get("aliases", ())], kwargs


def add_section_flags(parser: argparse.ArgumentParser, section: str, cls: type, title: str | None = None,
                      keep_defaults: bool = False) -> None:
    """One argument per field of `cls`; values land in the namespace as `section.field`. Without
    `keep_defaults` a flag that is not given is absent from the namespace (so YAML values stand)."""
    group = parser.add_argument_group(title or f"{section} options ({cls.__name__})")
    for f in dataclasses.fields(cls):
        names, kwargs = _argument(section, cls, f, keep_defaults)
        group.add_argument(*names, **kwargs)


def command_parser(prog: str, cls: type, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of a subcommand whose options are the fields of dataclass `cls` (the same typed
    definitions the Python function takes: no second copy of the defaults)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    add_section_flags(parser, "args", cls, title="options", keep_defaults=True)
    return parser


def parse_command(prog: str, cls: type, argv: list[str], description: str, epilog: str | None = None):
    """An instance of `cls` (a command's options, with a `validate()`) from the command line `argv`."""
    namespace = vars(command_parser(prog, cls, description, epilog).parse_args(argv))
    values = {}
    for f in dataclasses.fields(cls):
        value = namespace[f"args.{f.name}"]
        if value is None and f.default_factory is not dataclasses.MISSING:
            continue  # a repeatable flag not given: the field's empty list
        values[f.name] = value
    options = cls(**values)
    options.validate()
    return options


def option_rows(cls: type) -> list[tuple[str, str, str]]:
    """(flag, default, help) of every option of dataclass `cls`, as its command line declares them:
    the command-line reference of the documentation is generated from these, never written twice."""
    rows = []
    for f in dataclasses.fields(cls):
        names, kwargs = _argument("x", cls, f, keep_defaults=False)
        flag = names[0].split(".", 1)[1].upper() if names[0].startswith("x.") else ", ".join(names)
        if kwargs.get("action") is argparse.BooleanOptionalAction:
            flag = f"{names[0]} / --no-{names[0][2:]}"
        if f.default is not dataclasses.MISSING:
            default = repr(f.default) if isinstance(f.default, str) else str(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = "(none)"
        else:
            default = "(required)"
        rows.append((flag, default, kwargs["help"].replace("%%", "%")))
    return rows
