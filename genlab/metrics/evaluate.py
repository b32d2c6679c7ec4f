"""Evaluation: samples in, a table of scores out, each beside the real-data floor.

The reference is the dataset's training split (what the model learned from); the floor is the same
metrics for real images the model never saw (the test split, or for a dataset without one a fixed
held-out fifth of the images) against that reference, with as many images as the samples (up to
the size of the held-out set). A model cannot be expected to beat its floor; a score near the
floor is as good as real data looks in these features. Reference statistics, nearest-neighbour
radii and floors are cached beside the extractor, so a second evaluation computes only the samples'.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.config import DataConfig
from genlab.data import ImageSet, load_dataset, load_heldout
from genlab.errors import GenlabError
from genlab.metrics import scores
from genlab.metrics.features import Extractor, get_extractor, load_extractor
from genlab.train.checkpoint import load_state, save_state

# metric -> which way is better (shown in the table)
BETTER = {"fid": "lower", "kid": "lower", "is": "higher", "precision": "higher", "recall": "higher",
          "density": "near 1", "coverage": "higher", "classes_found": "higher", "class_tv": "lower",
          "ppl": "lower", "nll_nats": "lower", "bits_per_dim": "lower",
          "neg_elbo_nats": "lower"}
MAX_KNN_REFERENCE = 10_000  # the real side of the k-NN metrics: at most as many as the samples


@dataclass
class Reference:
    """Features of the real data the samples are compared with, and of the held-out real images."""

    features: torch.Tensor   # [N_ref, D] training-split features
    mu: torch.Tensor
    sigma: torch.Tensor
    label_histogram: torch.Tensor  # [classes] counts of the reference's labels
    heldout_features: torch.Tensor
    heldout_logits: torch.Tensor
    folder: Path  # cache folder (the extractor's)


def split_reference(data_cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(reference, held-out): train and test splits, or 4/5 and 1/5 of a dataset with no test split."""
    train_cfg = DataConfig(dataset=data_cfg.dataset, data_dir=data_cfg.data_dir, split="train",
                           image_size=data_cfg.image_size)
    train = load_dataset(train_cfg)
    test = load_heldout(train_cfg)
    if test is not None:
        return train, test
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    cut = len(train) // 5
    held, ref = perm[:cut].sort().values, perm[cut:].sort().values
    return (ImageSet(train.images[ref], train.labels[ref], train.name, train.class_names),
            ImageSet(train.images[held], train.labels[held], train.name, train.class_names))


def get_reference(data_cfg: DataConfig, extractor: Extractor) -> Reference:
    """Reference features for `extractor`'s dataset, from its cache folder or computed once."""
    path = extractor.path / "reference.safetensors"
    if path.is_file():
        try:
            t, _ = load_state(path)
            return Reference(t["features"], t["mu"], t["sigma"], t["label_histogram"],
                             t["heldout_features"], t["heldout_logits"], extractor.path)
        except (GenlabError, KeyError):
            pass  # a damaged cache entry is recomputed
    ref, held = split_reference(data_cfg)
    feats, _ = extractor(ref.images)
    held_feats, held_logits = extractor(held.images)
    mu, sigma = scores.gaussian_stats(feats)
    hist = torch.bincount(ref.labels, minlength=extractor.spec["num_classes"])
    tensors = {"features": feats, "mu": mu, "sigma": sigma, "label_histogram": hist,
               "heldout_features": held_feats, "heldout_logits": held_logits}
    save_state(path, tensors)
    return Reference(feats, mu, sigma, hist, held_feats, held_logits, extractor.path)


def _knn_reference(ref: Reference, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random subset of `n` reference features and their 3- and 5-NN radii (cached)."""
    n = min(n, len(ref.features), MAX_KNN_REFERENCE)
    idx = torch.randperm(len(ref.features), generator=torch.Generator().manual_seed(0))[:n]
    subset = ref.features[idx]
    path = ref.folder / f"radii-{n}.safetensors"
    if path.is_file():
        try:
            t, _ = load_state(path)
            return subset, t["k3"], t["k5"]
        except (GenlabError, KeyError):
            pass
    k3, k5 = scores.knn_radii(subset, 3), scores.knn_radii(subset, 5)
    save_state(path, {"k3": k3, "k5": k5})
    return subset, k3, k5


def score_features(feats: torch.Tensor, logits: torch.Tensor, ref: Reference, seed: int = 0) -> dict:
    """Every sample metric of features [N, D] and logits [N, classes] against the reference."""
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k = scores.kid(ref.features, feats, generator=gen)
    knn_real, k3, k5 = _knn_reference(ref, len(feats))
    out = {"fid": scores.frechet_distance(ref.mu, ref.sigma, *scores.gaussian_stats(feats)),
           "kid": k["mean"], "kid_std": k["std"]}
    is_ = scores.inception_score(logits, splits=10, generator=gen)
    out.update({"is": is_["mean"], "is_std": is_["std"]})
    # The k-NN metrics compare equally many real and generated points, as Kynkäänniemi et al. and
    # Naeem et al. do: with more fakes than reals the fakes' k-NN balls shrink and recall is
    # understated (and precision overstated). The samples are i.i.d., so the first m stand for all.
    knn_fake = feats[:len(knn_real)]
    out["knn_n"] = len(knn_real)
    out.update(scores.precision_recall(knn_real, knn_fake, 3, real_radii=k3))
    out.update(scores.density_coverage(knn_real, knn_fake, 5, real_radii=k5))
    cc = scores.class_coverage(logits.argmax(1), ref.label_histogram)
    out.update({"classes_found": cc["classes_found"], "class_tv": cc["class_tv"],
                "class_histogram": cc["histogram"]})
    out["warnings"] = [str(w.message) for w in caught]
    return out


def real_floor(ref: Reference, n: int) -> dict:
    """The metrics of `n` held-out real images (cached per n)."""
    n = min(n, len(ref.heldout_features))
    path = ref.folder / "floors.json"
    floors = json.loads(path.read_text()) if path.is_file() else {}
    if str(n) not in floors:
        idx = torch.randperm(len(ref.heldout_features), generator=torch.Generator().manual_seed(1))[:n]
        floors[str(n)] = score_features(ref.heldout_features[idx], ref.heldout_logits[idx], ref)
        path.write_text(json.dumps(floors))
    return floors[str(n)]


# ---------------------------------------------------------------- samples in

def prepare_samples(images, shape: tuple[int, int, int], resize: bool = False, source: str = "samples") -> torch.Tensor:
    """Check and convert samples to uint8 [N, C, H, W] of the extractor's `shape`.

    Accepts uint8 (or other integers in 0..255) and floats in [0, 1], as [N, H, W] or [N, C, H, W].
    A different size or channel count is an error unless `resize` asks for a conversion."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise GenlabError(f"{source}: expected images [N, H, W] or [N, C, H, W], got shape {tuple(x.shape)}")
    if len(x) < 2:
        raise GenlabError(f"{source}: {len(x)} image(s); the metrics need at least 2 (10,000 is usual)")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise GenlabError(f"{source}: {bad} image(s) contain NaN or infinite values; fix the generator's output")
        if x.min() < 0 or x.max() > 1:
            raise GenlabError(f"{source}: float images must lie in [0, 1], found [{float(x.min()):.3g}, "
                              f"{float(x.max()):.3g}]; rescale them or save uint8")
        x = (x * 255).round().to(torch.uint8)
    elif x.dtype != torch.uint8:
        if x.min() < 0 or x.max() > 255:
            raise GenlabError(f"{source}: integer images must lie in 0..255")
        x = x.to(torch.uint8)
    if tuple(x.shape[1:]) != tuple(shape):
        if not resize:
            raise GenlabError(f"{source}: images are {'x'.join(map(str, x.shape[1:]))} (CxHxW) but the "
                              f"dataset's are {'x'.join(map(str, shape))}; pass --resize to convert them")
        x = resize_images(x, shape)
    return x


def resize_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    f = x.float()
    if f.shape[1] == 3 and c == 1:  # ITU-R 601-2 luma, as PIL's convert("L")
        f = (f * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif f.shape[1] == 1 and c == 3:
        f = f.expand(-1, 3, -1, -1)
    elif f.shape[1] != c:
        raise GenlabError(f"cannot convert {f.shape[1]} channels to {c}")
    if f.shape[-2:] != (h, w):
        f = torch.nn.functional.interpolate(f, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return f.round().clamp(0, 255).to(torch.uint8)


def load_samples_file(path: str | Path, channels: int) -> torch.Tensor:
    """Images from an .npz (array `images`) or a folder of PNG/JPEG files."""
    import numpy as np

    path = Path(path)
    if path.is_dir():
        return _load_png_folder(path, channels)
    if not path.is_file():
        raise GenlabError(f"samples file {path} does not exist")
    if path.stat().st_size == 0:
        raise GenlabError(f"samples file {path} is empty; generate the samples again")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise GenlabError(f"{path} has no array named `images` (it has: {', '.join(archive.files) or 'none'}); "
                                  "save the samples as np.savez(path, images=array)")
            return torch.from_numpy(archive["images"].copy())
    except (OSError, ValueError, EOFError) as err:
        raise GenlabError(f"{path} is not a readable .npz file ({err}); save samples with numpy.savez") from None


def _load_png_folder(folder: Path, channels: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not files:
        raise GenlabError(f"samples folder {folder} holds no PNG/JPEG images")
    arrays = []
    for p in files:
        try:
            with Image.open(p) as img:
                arrays.append(np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as err:
            raise GenlabError(f"{p} is not a readable image ({err})") from None
    if len({a.shape for a in arrays}) > 1:
        raise GenlabError(f"images in {folder} have different sizes; make them one size")
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.unsqueeze(1) if channels == 1 else stacked.permute(0, 3, 1, 2)


# ---------------------------------------------------------------- model-only metrics

def ppl(model, extractor: Extractor, n: int = 2000, epsilon: float = 1e-4, seed: int = 0,
        batch_size: int = 500) -> float | None:
    """Perceptual path length in Z (StyleGAN): slerp between latents, distance in the extractor's
    features (float64, so that a step of 1e-4 is not lost in rounding). None for a family without a
    latent space (`latent_dim` and `decode`)."""
    if not (hasattr(model, "decode") and hasattr(model, "latent_dim")):
        return None
    gen = torch.Generator().manual_seed(seed)
    net64 = copy.deepcopy(extractor.net).double().eval()
    lengths = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z0, z1 = torch.randn(m, model.latent_dim, generator=gen), torch.randn(m, model.latent_dim, generator=gen)
        t = torch.rand(m, generator=gen) * (1 - epsilon)
        with torch.no_grad():
            a = model.decode(scores.slerp(z0, z1, t)).double().cpu()
            b = model.decode(scores.slerp(z0, z1, t + epsilon)).double().cpu()
            fa, fb = net64(a)[0], net64(b)[0]
        lengths.append(scores.path_lengths((fa - fb).square().sum(1), epsilon))
    return scores.perceptual_path_length(torch.cat(lengths))


def likelihood(model, test: ImageSet, limit: int = 10_000) -> dict | None:
    """Test-split negative log-likelihood in nats per image and bits per dimension, for families
    that define `log_likelihood(images) -> [N]` (nats)."""
    if not hasattr(model, "log_likelihood"):
        return None
    images, labels = test.images[:limit], test.labels[:limit]
    conditional = bool(getattr(model, "conditional_classes", None))

    def per_batch(fn) -> list:
        return [fn(images[i:i + 500], **({"labels": labels[i:i + 500]} if conditional else {}))
                for i in range(0, len(images), 500)]

    dims = images[0].numel()
    if hasattr(model, "likelihood_bounds"):  # a VAE: the ELBO beside the importance-weighted estimate
        both = per_batch(model.likelihood_bounds)
        elbo, ll = (torch.cat([b[j].double().cpu() for b in both]) for j in (0, 1))
    else:
        elbo, ll = None, torch.cat([b.double().cpu() for b in per_batch(model.log_likelihood)])
    nll = float(-ll.mean())
    out = {"nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2))}
    if elbo is not None:
        out["neg_elbo_nats"] = float(-elbo.mean())
    return out


# ---------------------------------------------------------------- the entry points

def open_extractor(data_cfg: DataConfig, features=None, log=print) -> Extractor:
    """The user's extractor (`features`, checked to be of the same dataset) or the cached one."""
    if not features:
        return get_extractor(data_cfg, log=log)
    extractor = load_extractor(features)
    if extractor.spec["dataset"] != data_cfg.dataset:
        raise GenlabError(f"feature extractor {extractor.name} was trained on {extractor.spec['dataset']}, "
                          f"not {data_cfg.dataset}; pass an extractor of {data_cfg.dataset} or leave out --features")
    return extractor


def evaluate(images, dataset: str = "mnist-sample", data_dir: str | None = None, image_size: int = 28,
             features: str | Path | None = None, resize: bool = False, seed: int = 0, model=None,
             ppl_samples: int = 2000, floor: bool = True, log=print) -> dict:
    """Score samples (uint8 [N, C, H, W] or [N, H, W], or floats in [0, 1]) against `dataset`.

    Returns {"features", "dataset", "n", "metrics": {name: {"value", "floor", "better"}}, ...}.
    With `model`, also its perceptual path length and, where it has one, its test likelihood."""
    data_cfg = DataConfig(dataset=dataset, data_dir=data_dir, image_size=image_size)
    extractor = open_extractor(data_cfg, features, log)
    x = prepare_samples(images, extractor.image_shape, resize)
    ref = get_reference(data_cfg, extractor)
    feats, logits = extractor(x)
    values = score_features(feats, logits, ref, seed)
    floors = real_floor(ref, len(x)) if floor else {}
    if model is not None:
        values["ppl"] = ppl(model, extractor, n=ppl_samples, seed=seed)
        if hasattr(model, "log_likelihood"):
            values.update(likelihood(model, split_reference(data_cfg)[1]))
    metrics = {name: {"value": values.get(name), "floor": floors.get(name), "better": better}
               for name, better in BETTER.items() if values.get(name) is not None}
    for name in ("kid", "is"):
        metrics[name]["std"] = values[f"{name}_std"]
    return {"features": extractor.name, "features_test_accuracy": extractor.spec.get("test_accuracy"),
            "dataset": dataset, "n": len(x), "floor_n": min(len(x), len(ref.heldout_features)),
            "knn_n": values["knn_n"],
            "class_histogram": values["class_histogram"], "class_names": extractor.spec["class_names"],
            "warnings": values["warnings"], "metrics": metrics,
            **({"likelihood_convention": model.likelihood_convention}
               if hasattr(model, "likelihood_convention") and "nll_nats" in values else {})}


TRAINING_METRICS = ("fid", "kid", "is", "precision", "recall", "density", "coverage", "classes_found", "class_tv")


def training_scorer(data_cfg: DataConfig, n: int, seed: int, features=None, log=print):
    """A function model -> {metric: value} for evaluation during training: `n` samples from the
    same noise each time, no PPL or floors (cheap enough to run every few hundred steps)."""
    from genlab.generate import sample_from

    extractor = open_extractor(data_cfg, features, log)
    ref = get_reference(data_cfg, extractor)

    def score(model) -> dict:
        feats, logits = extractor(sample_from(model, n, seed=seed))
        values = score_features(feats, logits, ref, seed)
        return {"features": extractor.name, **{k: values[k] for k in TRAINING_METRICS},
                "num_classes": int((ref.label_histogram > 0).sum())}

    return score


def evaluate_run(run_dir: str | Path, n: int = 10_000, seed: int = 0, features=None,
                 ppl_samples: int = 2000, log=print) -> dict:
    """Sample `n` images from a run and evaluate them (with PPL and likelihood where they apply)."""
    from genlab.generate import load_run, sample_from

    config, model, meta = load_run(run_dir)
    images = sample_from(model, n, seed=seed)
    result = evaluate(images, dataset=config.data.dataset, data_dir=config.data.data_dir,
                      image_size=config.data.image_size, features=features, seed=seed, model=model,
                      ppl_samples=ppl_samples, log=log)
    result["run"] = str(run_dir)
    result["model"] = config.model.name
    return result


def format_table(result: dict) -> str:
    """The printed table: metric, value, real floor, which way is better."""
    def fmt(v, std=None):
        if v is None:
            return "-"
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return f"{text} ± {std:.2g}" if std else text

    rows = [("metric", "value", "real floor", "better"), ("", "", "", "")]
    for name, m in result["metrics"].items():
        rows.append((name, fmt(m["value"], m.get("std")), fmt(m["floor"]), m["better"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines[1] = "  ".join("-" * w for w in widths)
    acc = result.get("features_test_accuracy")
    head = (f"{result['n']} samples, dataset {result['dataset']}, features {result['features']}"
            + (f" (test accuracy {acc:.2%})" if acc is not None else "")
            + f"; real floor: {result['floor_n']} held-out real images; precision/recall/density/coverage "
            f"with {result['knn_n']} real and {result['knn_n']} generated")
    convention = [f"likelihood: {result['likelihood_convention']}"] if result.get("likelihood_convention") else []
    return "\n".join([head, *lines, *convention, *[f"warning: {w}" for w in result["warnings"]]])
