"""The real side of every comparison, computed once per feature extractor and cached beside it.

The reference is the dataset's training split (what the model learned from); the floor is the same
metrics for real images the model never saw (the test split, or for a dataset without one a fixed
held-out fifth of the images) against that reference, with as many images as the samples (up to
the size of the held-out set). A model cannot be expected to beat its floor.

On a small dataset the training-split view flatters: a model that copies its training images scores
perfectly there. So every evaluation also gives the held-out view: FID and recall of the samples
against the held-out split, beside the same numbers for real training images against it (the
held-out floor, with as many images on each side), and Meehan et al.'s data-copying statistic.

Cache (one format, genlab's safetensors state files, in the extractor's folder): reference.safetensors
(features and Gaussian statistics of both splits), radii-N.safetensors (the k-NN radii of N reference
points), floors-N.safetensors (the floor's metrics for N held-out images).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.config import DataConfig
from genlab.core.checkpoint import load_state, save_state
from genlab.data import ImageSet, Splits, splits_of
from genlab.errors import GenlabError
from genlab.metrics import scores
from genlab.metrics.features import Extractor

MAX_KNN_REFERENCE = 10_000  # the real side of the k-NN metrics: at most as many as the samples


@dataclass
class Reference:
    """Features of the real data the samples are compared with, and of the held-out real images."""

    features: torch.Tensor   # [N_ref, D] training-split features
    mu: torch.Tensor
    sigma: torch.Tensor
    label_histogram: torch.Tensor | None  # [classes] counts of the reference's labels (classifier features)
    heldout_features: torch.Tensor
    heldout_logits: torch.Tensor | None
    heldout_mu: torch.Tensor
    heldout_sigma: torch.Tensor
    folder: Path  # cache folder (the extractor's)


def split_reference(data: DataConfig | Splits) -> tuple[ImageSet, ImageSet]:
    """(reference, held-out): train and test splits, or 4/5 and 1/5 of a dataset with no test split."""
    return splits_of(data).reference()


def get_reference(data: DataConfig | Splits, extractor: Extractor) -> Reference:
    """Reference features for `extractor`'s dataset, from its cache folder or computed once (the
    images are read only then)."""
    def compute() -> dict:
        ref, held = split_reference(data)
        feats, _ = extractor(ref.images)
        held_feats, held_logits = extractor(held.images)
        mu, sigma = scores.gaussian_stats(feats)
        held_mu, held_sigma = scores.gaussian_stats(held_feats)
        hist = torch.bincount(ref.labels, minlength=extractor.spec["num_classes"]) if extractor.has_classes else None
        return {"features": feats, "mu": mu, "sigma": sigma, "label_histogram": hist,
                "heldout_features": held_feats, "heldout_logits": held_logits,
                "heldout_mu": held_mu, "heldout_sigma": held_sigma}

    t = _cached(extractor.path / "reference.safetensors", compute)
    if "heldout_mu" not in t:  # a cache entry from before the held-out view: add to it
        t["heldout_mu"], t["heldout_sigma"] = scores.gaussian_stats(t["heldout_features"])
        save_state(extractor.path / "reference.safetensors", t)
    return Reference(t["features"], t["mu"], t["sigma"], t["label_histogram"], t["heldout_features"],
                     t["heldout_logits"], t["heldout_mu"], t["heldout_sigma"], extractor.path)


def _knn_reference(ref: Reference, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random subset of `n` reference features and their 3- and 5-NN radii (cached)."""
    n = min(n, len(ref.features), MAX_KNN_REFERENCE)
    idx = torch.randperm(len(ref.features), generator=torch.Generator().manual_seed(0))[:n]
    subset = ref.features[idx]
    t = _cached(ref.folder / f"radii-{n}.safetensors",
                lambda: {"k3": scores.knn_radii(subset, 3), "k5": scores.knn_radii(subset, 5)})
    return subset, t["k3"], t["k5"]


def _heldout_radii(ref: Reference, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` held-out features and their 3-NN radii (cached): the real side of the held-out recall."""
    n = min(n, len(ref.heldout_features))
    subset = ref.heldout_features[:n]
    t = _cached(ref.folder / f"radii-heldout-{n}.safetensors", lambda: {"k3": scores.knn_radii(subset, 3)})
    return subset, t["k3"]


def heldout_view(feats: torch.Tensor, ref: Reference) -> dict:
    """FID and precision/recall of features against the held-out split, with as many of them as the
    held-out view's floor uses (FID: up to the training split's size; k-NN: the held-out size)."""
    m = min(len(feats), len(ref.features))
    held, k3 = _heldout_radii(ref, len(feats))
    pr = scores.precision_recall(held, feats[:len(held)], 3, real_radii=k3)
    return {"fid_heldout": scores.frechet_distance(ref.heldout_mu, ref.heldout_sigma, *scores.gaussian_stats(feats[:m])),
            "precision_heldout": pr["precision"], "recall_heldout": pr["recall"]}


def score_features(feats: torch.Tensor, logits: torch.Tensor | None, ref: Reference, seed: int = 0,
                   heldout: bool = True) -> dict:
    """Every sample metric of features [N, D] (and class logits [N, classes], for classifier
    features) against the reference; with `heldout`, the held-out view too."""
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k = scores.kid(ref.features, feats, generator=gen)
    knn_real, k3, k5 = _knn_reference(ref, len(feats))
    out = {"fid": scores.frechet_distance(ref.mu, ref.sigma, *scores.gaussian_stats(feats)),
           "kid": k["mean"], "kid_std": k["std"]}
    if logits is not None:
        is_ = scores.inception_score(logits, splits=10, generator=gen)
        out.update({"is": is_["mean"], "is_std": is_["std"]})
    # The k-NN metrics compare equally many real and generated points, as Kynkäänniemi et al. and
    # Naeem et al. do: with more fakes than reals the fakes' k-NN balls shrink and recall is
    # understated (and precision overstated). The samples are i.i.d., so the first m stand for all.
    knn_fake = feats[:len(knn_real)]
    out["knn_n"] = len(knn_real)
    out.update(scores.precision_recall(knn_real, knn_fake, 3, real_radii=k3))
    out.update(scores.density_coverage(knn_real, knn_fake, 5, real_radii=k5))
    if logits is not None and ref.label_histogram is not None:
        cc = scores.class_coverage(logits.argmax(1), ref.label_histogram)
        out.update({"classes_found": cc["classes_found"], "class_tv": cc["class_tv"],
                    "class_histogram": cc["histogram"]})
    if heldout:
        out.update(heldout_view(feats, ref))
    out["warnings"] = [str(w.message) for w in caught]
    return out


def copying(feats: torch.Tensor, ref: Reference) -> dict:
    """Meehan et al.'s data-copying statistic of the samples (genlab.metrics.scores.data_copying)."""
    return scores.data_copying(ref.features, ref.heldout_features, feats)


def _cached(path: Path, compute) -> dict:
    """The state tree cached at `path`, or `compute()` saved there (a damaged entry is recomputed)."""
    if path.is_file():
        try:
            return load_state(path)[0]
        except GenlabError:
            pass
    tree = compute()
    save_state(path, tree)
    return tree


def floor_indices(ref: Reference, n: int) -> torch.Tensor:
    """Which held-out images the real floor of `n` samples scores (a fixed random subset)."""
    n_held = min(n, len(ref.heldout_features))
    return torch.randperm(len(ref.heldout_features), generator=torch.Generator().manual_seed(1))[:n_held]


def real_floor(ref: Reference, n: int) -> dict:
    """The metrics of `n` held-out real images against the training split, and of real training
    images against the held-out split (the held-out view's floor; cached per n)."""
    n_held = min(n, len(ref.heldout_features))

    def compute() -> dict:
        idx = floor_indices(ref, n)
        held_logits = ref.heldout_logits[idx] if ref.heldout_logits is not None else None
        floor = score_features(ref.heldout_features[idx], held_logits, ref, heldout=False)
        # the held-out view's floor: training images, as many as the samples' FID uses (up to all)
        train_idx = torch.randperm(len(ref.features), generator=torch.Generator().manual_seed(2))[:min(n, len(ref.features))]
        floor.update(heldout_view(ref.features[train_idx], ref))
        return {"floor": floor}

    return _cached(ref.folder / f"floors-{n_held}-{min(n, len(ref.features))}.safetensors", compute)["floor"]
