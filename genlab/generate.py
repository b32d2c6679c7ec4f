"""A trained model, ready to sample: load a run's family with its weights, and draw images in
batches with the family's typed sampling options.

    model = genlab.load("runs/a")          # a run folder
    images = model.sample(16, seed=0)      # uint8 [16, C, H, W]
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from genlab.config import CHANNELS, REQUIRED, RunConfig, option
from genlab.core.checkpoint import load_into, load_state
from genlab.core.images import save_png
from genlab.core.run import Run
from genlab.core.runtime import Runtime
from genlab.errors import GenlabError
from genlab.models import build_model, common
from genlab.models.protocols import Solved
from genlab.models.text import detokenize, is_tokens, tokenize


@dataclasses.dataclass
class SampleOptions:
    """`genlab sample RUN --out FILE`: draw images from a trained run."""

    run: str = option(REQUIRED, "run folder made by `genlab train`", positional=True)
    out: str = option(REQUIRED, "FILE.npz (uint8 `images` [N, H, W] or [N, C, H, W]) or a folder for PNGs")
    n: int = option(64, "number of images")
    seed: int = option(0, "noise seed: same seed, same images")
    batch_size: int = option(1000, "images generated per batch")
    labels: str | None = option(None, "classes for a conditional model, e.g. 0,1,2 (repeated to fill --n), or "
                                "`data`: the training data's mix of classes, as `genlab eval RUN` draws them "
                                "(default: all classes in turn)")
    weights: str = option(Run.WEIGHTS, "which weights of the run: model.safetensors (final) or best.safetensors")
    channels: str = option("auto", "the channels you expect (a run trained on another count is refused)",
                           choices=CHANNELS)
    options: list[str] = option([], "a sampling option of the model's family, NAME=VALUE, e.g. temperature=0.8, "
                                "top_k=4, steps=25, guidance=3 (repeatable; an unknown name lists the family's)",
                                flag="--option")
    sampler: str | None = option(None, "the sampler of a diffusion or flow model, e.g. dpm++2m, unipc (diffusion), "
                                 "euler, heun, dopri5 (flow); default: the run's own")
    sample_steps: int | None = option(None, "the sampler's steps (network evaluations for diffusion's; default: "
                                      "the run's own)")
    prompt: str | None = option(None, "what to draw, for a model trained on captions (genlab train --text), e.g. "
                                "'red heart'")
    prompts: str | None = option(None, "a UTF-8 text file of prompts, one a line (repeated to fill --n)")
    negative_prompt: str | None = option(None, "what guidance steers away from (a model trained with --text)")

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise GenlabError(f"--batch-size must be positive, got {self.batch_size}")
        if self.n <= 0:
            raise GenlabError(f"--n must be a positive number of images, got {self.n}")
        if self.prompt is not None and self.prompts is not None:
            raise GenlabError("--prompt and --prompts both give prompts: pass one")
        if (self.prompt is not None or self.prompts is not None) and self.labels:
            raise GenlabError("--labels is for a class-conditional model, --prompt for one trained on captions: "
                              "pass one")

    def wanted_prompts(self) -> list[str] | None:
        """--prompt, or the lines of --prompts (refused when missing, not UTF-8 or empty)."""
        if self.prompt is not None:
            return [self.prompt]
        if self.prompts is None:
            return None
        return read_prompts(self.prompts)

    def wants_data_mix(self) -> bool:
        """`--labels data`: the training data's mix of classes."""
        return (self.labels or "").strip() == "data"

    def wanted_labels(self) -> list[int] | None:
        if not self.labels or self.wants_data_mix():
            return None
        try:
            return [int(x) for x in self.labels.split(",") if x.strip()]
        except ValueError:
            raise GenlabError(f"--labels takes class numbers separated by commas, got {self.labels!r}") from None

    def sampling_options(self) -> dict[str, str]:
        return {**parse_option_items(self.options), **solver_options(self.sampler, self.sample_steps),
                **({"negative_prompt": self.negative_prompt} if self.negative_prompt is not None else {})}


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a file, one a line (blank lines skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GenlabError(f"--prompts file {path} does not exist; write one prompt a line") from None
    except UnicodeDecodeError as err:
        raise GenlabError(f"--prompts file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise GenlabError(f"cannot read --prompts file {path} ({err.strerror or err})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise GenlabError(f"--prompts file {path} holds no prompts; write one prompt a line")
    return prompts


def prompt_tokens(family, n: int, prompts: list[str] | None) -> torch.Tensor:
    """The token ids of `n` samples' prompts (`prompts` repeated to fill n; none: the empty prompt,
    the unconditional model) for a model trained on captions; a prompt for another is refused."""
    if not getattr(family, "takes_text", False):
        hint = ("use --labels for its classes" if family.conditional_classes else
                "train a model on captions with `genlab train --text`")
        raise GenlabError(f"--prompt is for a model trained on captions (--text); this run was not: {hint}")
    prompts = list(prompts or [""])
    return tokenize([prompts[i % len(prompts)] for i in range(n)])


def parse_option_items(items: list[str]) -> dict[str, str]:
    """`--option NAME=VALUE` items as {name: text}."""
    options = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise GenlabError(f"--option takes NAME=VALUE, got {item!r}")
        options[name.strip().replace("-", "_")] = value.strip()
    return options


def solver_options(sampler: str | None, steps: int | None) -> dict:
    """`--sampler` and `--sample-steps` as the sampling options `sampler` and `steps` of a family."""
    return {**({"sampler": sampler} if sampler else {}), **({"steps": steps} if steps is not None else {})}


def sample_command(opts: SampleOptions, log=None) -> tuple[Path, int]:
    """Do what `genlab sample` is asked: (where the images went, how many)."""
    model = load(opts.run, weights=opts.weights)
    trained_on = model.family.image_shape[0]
    if opts.channels != "auto" and int(opts.channels) != trained_on:
        raise GenlabError(f"--channels {opts.channels}: run {opts.run} was trained on {trained_on}-channel images and "
                          "samples them; leave out --channels, or train a run on the channels you want")
    prompts = opts.wanted_prompts()
    if prompts is not None or getattr(model.family, "takes_text", False):
        if opts.labels:
            raise GenlabError("this run is conditioned on captions (--text): give --prompt or --prompts, not --labels")
        labels = prompt_tokens(model.family, opts.n, prompts)
    else:
        mix = data_mix(model, opts.run) if opts.wants_data_mix() else None
        labels = labels_for(model.family, opts.n, opts.wanted_labels(), mix)
    images = sample_from(model.family, opts.n, seed=opts.seed, batch_size=opts.batch_size, labels=labels,
                         options=opts.sampling_options(), log=log)
    if log is not None and isinstance(model.family, Solved) and model.family.last_nfe:
        log(f"{model.family.last_nfe} network evaluations a sample (the last batch)")
    return save_samples(images, opts.out, labels), len(images)


EXPORT_FORMAT, EXPORT_CONFIG = "genlab-export/1", "config.json"
EXPORT_META = ("model", "dataset", "dataset_split", "dataset_checksum", "dataset_licence", "image_shape", "num_classes",
               "class_names", "conditional_classes", "class_counts", "parameters", "prepared", "steps", "seconds",
               "genlab_version", "torch_version")


def load_export(folder: Path, device: str = "cpu") -> tuple[RunConfig, object, dict]:
    """(config, model, meta) of a folder written by `genlab export`; a damaged one is refused in one line."""
    import hashlib
    import json

    from genlab.config import config_from_dict

    def damaged(why: str) -> GenlabError:
        return GenlabError(f"{folder} is a damaged genlab export ({why}); export the run again")

    try:
        spec = json.loads((folder / EXPORT_CONFIG).read_text())
        config, meta, digest = spec["config"], spec["meta"], spec["weights_sha256"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise damaged(f"{EXPORT_CONFIG}: {err}") from None
    if spec.get("format") != EXPORT_FORMAT:
        raise damaged(f"{EXPORT_CONFIG} is not of format {EXPORT_FORMAT}")
    weights = folder / Run.WEIGHTS
    if not weights.is_file() or hashlib.sha256(weights.read_bytes()).hexdigest() != digest:
        raise damaged(f"{Run.WEIGHTS} is missing or not the file the export wrote (its sha256 differs)")
    run_config = config_from_dict(config, where=f"{folder / EXPORT_CONFIG}")
    model = build_model(run_config.model, tuple(meta["image_shape"]), meta["num_classes"],
                        Runtime(device=torch.device(device)))
    state, _ = load_state(weights)
    load_into(model, state, str(weights), f"its {EXPORT_CONFIG}")
    return run_config, model, meta


def load_run(run_dir: str | Path, device: str = "cpu", weights: str = Run.WEIGHTS) -> tuple[RunConfig, object, dict]:
    """(config, model with the run's weights, run.json) of a run folder (or of a `genlab export`
    folder); `weights` picks the file (model.safetensors, the final state, or best.safetensors,
    kept by --eval-every)."""
    path = Path(run_dir)
    if (path / EXPORT_CONFIG).is_file() and not (path / Run.CONFIG).is_file():
        return load_export(path, device)
    run = Run.open(run_dir)
    path = run.weights(weights)
    meta = run.meta
    model = build_model(run.config.model, tuple(meta["image_shape"]), meta["num_classes"],
                        Runtime(device=torch.device(device)))
    state, _ = load_state(path)
    load_into(model, state, str(path), "the run's config.yaml")
    return run.config, model, meta


@dataclasses.dataclass
class Trained:
    """A trained family with what it was trained on; `sample` is all a notebook needs."""

    family: object
    config: RunConfig
    meta: dict

    @property
    def conditional_classes(self) -> int | None:
        return self.family.conditional_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [])

    def sample(self, n: int, seed: int = 0, labels=None, batch_size: int = SampleOptions.batch_size,
               prompt: str | list[str] | None = None, **options) -> torch.Tensor:
        """`n` uint8 images [n, C, H, W]; the same seed gives the same images. `labels` (class
        numbers, repeated to fill n) for a conditional model, `prompt` (a text or a list, repeated)
        for one trained on captions; `options` are the family's sampling options (e.g.
        temperature=0.8, or negative_prompt="blurry")."""
        if n <= 0:
            raise GenlabError(f"n must be a positive number of images, got {n}")
        if prompt is not None or getattr(self.family, "takes_text", False):
            if labels is not None:
                raise GenlabError("labels are for a class-conditional model, prompt for one trained on captions")
            condition = prompt_tokens(self.family, n, [prompt] if isinstance(prompt, str) else prompt)
        else:
            condition = labels_for(self.family, n, labels)
        return sample_from(self.family, n, seed=seed, batch_size=batch_size, labels=condition, options=options)


def load(path: str | Path, device: str = "cpu", weights: str = Run.WEIGHTS) -> Trained:
    """The model of a run folder or of a `genlab export` folder, ready to sample."""
    config, family, meta = load_run(path, device, weights)
    return Trained(family, config, meta)


def sample_run(run_dir: str | Path, n: int, seed: int = 0, labels=None,
               batch_size: int = SampleOptions.batch_size) -> torch.Tensor:
    """`n` uint8 images [n, C, H, W] from a finished run; the same seed gives the same images."""
    if n <= 0:
        raise GenlabError(f"--n must be a positive number of images, got {n}")
    return load(run_dir).sample(n, seed=seed, labels=labels, batch_size=batch_size)


def data_mix(trained: Trained, run: str) -> list[int]:
    """The training data's class counts, for `--labels data`. A score of samples against the data
    (`genlab eval --samples`) compares with that mix: on unbalanced data (emoji) samples of all
    classes in turn score far worse than the model is."""
    if trained.conditional_classes is None:
        raise GenlabError("--labels data: this model is not class-conditional; leave out --labels")
    counts = trained.meta.get("class_counts")
    if not counts or len(counts) != trained.conditional_classes:
        raise GenlabError(f"--labels data: {run} does not record its training data's class counts; "
                          "give --labels as class numbers, e.g. 0,1,2")
    return list(counts)


def labels_for(model, n: int, wanted=None, proportions: list[int] | None = None) -> torch.Tensor | None:
    """The labels of `n` samples: `wanted` repeated to fill n, or for a conditional model classes in
    `proportions` (the training data's class counts: evaluation compares with data of that mix) or
    else balanced; None for an unconditional one (which refuses labels)."""
    k = model.conditional_classes
    if not k:
        if wanted is not None and len(wanted):
            raise GenlabError("this model is not class-conditional; leave out --labels "
                              "(train with --conditional for class control)")
        return None
    if wanted is None or not len(wanted):
        if proportions and len(proportions) == k:
            return common.proportional_labels(n, list(proportions))
        return common.balanced_labels(n, k)
    wanted = torch.as_tensor(list(wanted), dtype=torch.int64)
    if wanted.min() < 0 or wanted.max() >= k:
        raise GenlabError(f"labels must be class numbers 0..{k - 1}, got {wanted.tolist()}")
    return wanted.repeat(-(-n // len(wanted)))[:n]


def sampling_options(model, given: dict | None) -> dict:
    """`given` options (text from the command line or a query, or typed values) checked against the
    family's SamplingOptions and converted to their types, as keyword arguments of `sample`."""
    return dataclasses.asdict(common.sampling_options(model.sampling_defaults(), given or {}))


SAY_EVERY = 10.0  # seconds: a long sampling says how far it is after a batch, at most this often


def sample_from(model, n: int, seed: int = 0, batch_size: int = SampleOptions.batch_size, labels: torch.Tensor | None = None,
                options: dict | None = None, log=None) -> torch.Tensor:
    """`n` uint8 images from a family in batches; the same seed gives the same images. With `log`,
    a line after a batch when SAY_EVERY seconds have passed since the last (a diffusion model's 10,000
    samples take minutes on a CPU)."""
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = labels_for(model, n)
    kwargs = sampling_options(model, options)
    parts, started = [], time.monotonic()
    said = started
    for start in range(0, n, batch_size):
        parts.append(model.sample(min(batch_size, n - start), generator=generator, **kwargs,
                                  **({"labels": labels[start:start + batch_size]} if labels is not None else {})))
        done, now = start + len(parts[-1]), time.monotonic()
        if log is not None and done < n and now - said >= SAY_EVERY:
            said = now
            log(f"sampled {done}/{n} images in {now - started:.0f} s, about {(now - started) / done * (n - done):.0f} s "
                "to go")
    return torch.cat(parts)


def save_samples(images: torch.Tensor, out: str | Path, labels: torch.Tensor | None = None) -> Path:
    """`out.npz` (arrays `images` [N, H, W] for one channel or [N, C, H, W], and `labels` when
    given, or `prompts` for prompts' tokens) or, for any other name, a folder with one PNG per image
    (and the prompts in its metadata.jsonl, the convention a folder dataset reads back)."""
    import json

    out = Path(out)
    prompts = detokenize(labels) if is_tokens(labels) else None
    try:
        if out.suffix == ".npz":
            out.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"images": (images[:, 0] if images.shape[1] == 1 else images).numpy()}
            if prompts is not None:
                arrays["prompts"] = np.array(prompts)
            elif labels is not None:
                arrays["labels"] = labels.numpy().astype(np.int64)
            np.savez_compressed(out, **arrays)
            return out
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            tag = f"_label{int(labels[i])}" if labels is not None and prompts is None else ""
            save_png(img.permute(1, 2, 0).numpy(), out / f"{i:06d}{tag}.png")
        if prompts is not None:
            (out / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i:06d}.png", "text": p}) + "\n"
                                                        for i, p in enumerate(prompts)))
    except OSError as err:
        raise GenlabError(f"cannot write samples to {out} ({err.strerror or err}); choose a "
                          "writable --out") from None
    return out
