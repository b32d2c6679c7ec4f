"""Loading a finished run and drawing samples from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genlab.config import RunConfig, load_config
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.train import rundir
from genlab.train.checkpoint import load_into, load_state


def load_run(run_dir: str | Path, device: str = "cpu", weights: str = rundir.WEIGHTS) -> tuple[RunConfig, object, dict]:
    """(config, model with the run's weights, run.json) of a run folder; `weights` picks the file
    (model.safetensors, the final state, or best.safetensors, kept by --eval-every)."""
    run = Path(run_dir)
    if not run.is_dir() or not rundir.is_run(run):
        raise GenlabError(f"{run} is not a genlab run folder (no config.yaml); pass the folder "
                          "that `genlab train --out` created")
    if not (run / weights).is_file():
        hint = "train with --eval-every to keep one" if weights == rundir.BEST else "it has not finished"
        raise GenlabError(f"run {run} has no {weights}: {hint}")
    config = load_config(run / rundir.CONFIG)
    meta = rundir.read_json(run / rundir.META)
    from genlab.train.runtime import Runtime

    model = build_model(config.model, tuple(meta["image_shape"]), meta["num_classes"],
                        Runtime(device=torch.device(device)))
    state, _ = load_state(run / weights)
    load_into(model, state, str(run / weights), "the run's config.yaml")
    return config, model, meta


def sample_run(run_dir: str | Path, n: int, seed: int = 0, labels=None,
               batch_size: int = 1000) -> torch.Tensor:
    """`n` uint8 images [n, C, H, W]; the same seed gives the same images. `labels` (class numbers,
    repeated to fill n) is for conditional models."""
    if n <= 0:
        raise GenlabError(f"--n must be a positive number of images, got {n}")
    _, model, _ = load_run(run_dir)
    return sample_from(model, n, seed=seed, batch_size=batch_size, labels=labels_for(model, n, labels))


def labels_for(model, n: int, wanted=None) -> torch.Tensor | None:
    """The labels of `n` samples: `wanted` repeated to fill n, or balanced classes 0..K-1 for a
    conditional model; None for an unconditional one (which refuses labels)."""
    k = getattr(model, "conditional_classes", None)
    if not k:
        if wanted:
            raise GenlabError("this model is not class-conditional; leave out --labels "
                              "(train with --conditional for class control)")
        return None
    if not wanted:
        return torch.arange(n) % k
    wanted = torch.as_tensor(list(wanted), dtype=torch.int64)
    if wanted.min() < 0 or wanted.max() >= k:
        raise GenlabError(f"labels must be class numbers 0..{k - 1}, got {wanted.tolist()}")
    return wanted.repeat(-(-n // len(wanted)))[:n]


def sampling_options(model, given: dict[str, str | float | int] | None) -> dict:
    """`given` options (values as text from the command line, or typed) checked against the family's
    SAMPLING_OPTIONS and converted to their types; an unknown name is refused with the list."""
    known = getattr(model, "SAMPLING_OPTIONS", {})
    out = {}
    for name, value in (given or {}).items():
        if name not in known:
            listed = ", ".join(known) or "none"
            raise GenlabError(f"unknown sampling option {name!r} for this model; its options: {listed}")
        kind = known[name][0]
        try:
            out[name] = kind(value)
        except (TypeError, ValueError):
            raise GenlabError(f"sampling option {name} takes a {kind.__name__}, got {value!r}") from None
    return out


def sample_from(model, n: int, seed: int = 0, batch_size: int = 1000, labels: torch.Tensor | None = None,
                options: dict | None = None) -> torch.Tensor:
    """`n` uint8 images from a family in batches; the same seed gives the same images. `options` are
    the family's sampling options (checked by `sampling_options`)."""
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = labels_for(model, n)
    options = sampling_options(model, options)
    parts = [model.sample(min(batch_size, n - start), generator=generator, **options,
                          **({"labels": labels[start:start + batch_size]} if labels is not None else {}))
             for start in range(0, n, batch_size)]
    return torch.cat(parts)


def save_samples(images: torch.Tensor, out: str | Path, labels: torch.Tensor | None = None) -> Path:
    """`out.npz` (arrays `images` [N, H, W] for one channel or [N, C, H, W], and `labels` when
    given) or, for any other name, a folder with one PNG per image."""
    from genlab.report.grids import save_png

    out = Path(out)
    try:
        if out.suffix == ".npz":
            out.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"images": (images[:, 0] if images.shape[1] == 1 else images).numpy()}
            if labels is not None:
                arrays["labels"] = labels.numpy().astype(np.int64)
            np.savez_compressed(out, **arrays)
            return out
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            tag = f"_label{int(labels[i])}" if labels is not None else ""
            save_png(img.permute(1, 2, 0).numpy(), out / f"{i:06d}{tag}.png")
    except OSError as err:
        raise GenlabError(f"cannot write samples to {out} ({err.strerror or err}); choose a "
                          "writable --out") from None
    return out
