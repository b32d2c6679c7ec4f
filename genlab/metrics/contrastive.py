"""A feature extractor learnt without labels, for datasets that have none (a plain folder of images).

SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709): two augmented views of each image
(genlab's DiffAugment transformations: translation, cutout, brightness and contrast) go through
the same encoder and a small projection head, and the NT-Xent loss pulls each image's two views
together against the other 2B - 2 views of the batch. The encoder is the domain classifier's body
(128 features); its features measure samples as the classifier's do, without knowing any class.
Its quality is reported as a linear probe's test accuracy where the data has labels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import DataConfig
from genlab.data import ImageSet, Splits, splits_of
from genlab.core.progress import KeptProgress, kept_seconds
from genlab.metrics.features import (Extractor, FeatureEncoder, find_cached, load_extractor, save_extractor,
                                     unfinished_path)
from genlab.models.diffaug import augment


@dataclass(frozen=True)
class ContrastiveRecipe:
    """How the self-supervised extractor is trained; part of its identity (another recipe, another cache)."""

    steps: int = 1000  # ~0.65 s a step on 2 AVX2 cores (two views of 128 images): ~11 minutes, once per dataset
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    feature_dim: int = 128
    projection_dim: int = 64
    temperature: float = 0.2  # NT-Xent's tau
    policy: tuple[str, ...] = ("translation", "cutout", "color")
    seed: int = 0


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The normalised temperature-scaled cross-entropy of SimCLR: view i's positive is its twin,
    its negatives the other 2B - 2 views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2B, d]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = len(z1)
    twin = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, twin)


def views(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """One random view of images in [0, 1] (DiffAugment works in [-1, 1])."""
    return ((augment(x * 2 - 1, policy) + 1) / 2).clamp(0, 1)


def train_contrastive(train: ImageSet, recipe: ContrastiveRecipe, log=print,
                      progress: Path | None = None) -> FeatureEncoder:
    """The fixed recipe, from a fixed seed; the global random state is left as it was. With
    `progress`, a file that keeps an interrupted training for the next call (genlab.core.progress)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        gen = torch.Generator().manual_seed(recipe.seed)
        encoder = FeatureEncoder(train.shape[0], recipe.width, recipe.feature_dim)
        head = nn.Sequential(nn.Linear(recipe.feature_dim, recipe.feature_dim), nn.ReLU(),
                             nn.Linear(recipe.feature_dim, recipe.projection_dim))
        params = [*encoder.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=recipe.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
        parts = {"encoder": encoder, "head": head, "opt": opt, "schedule": schedule}
        with KeptProgress("self-supervised extractor", recipe.steps, progress, parts, gen, log) as kept:
            for step in kept.steps():
                idx = torch.randint(0, len(train), (recipe.batch_size,), generator=gen)
                x = train.images[idx].float() / 255
                loss = nt_xent(head(encoder(views(x, recipe.policy))), head(encoder(views(x, recipe.policy))),
                               recipe.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                kept.after(step, {"NT-Xent": loss.item()})
    return encoder.eval()


def linear_probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                          test_labels: torch.Tensor, steps: int = 500) -> float:
    """Test accuracy of a linear classifier (softmax regression, full-batch Adam) on frozen,
    standardised features: how much of the classes the features hold without having seen them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mean, std = train_features.mean(0), train_features.std(0) + 1e-6
        a, b = (train_features - mean) / std, (test_features - mean) / std
        k = int(max(train_labels.max(), test_labels.max())) + 1
        probe = nn.Linear(a.shape[1], k)
        opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
        for _ in range(steps):
            loss = F.cross_entropy(probe(a), train_labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float((probe(b).argmax(1) == test_labels).float().mean())


DEFAULT_RECIPE = ContrastiveRecipe()


def get_contrastive_extractor(data: DataConfig | Splits, recipe: ContrastiveRecipe | None = None,
                              log=print) -> Extractor:
    """The cached self-supervised extractor of `data`'s dataset, trained now if there is none
    yet (labels, where the data has them, are used only to report a linear probe's accuracy)."""
    recipe = recipe or DEFAULT_RECIPE
    splits = splits_of(data)
    train = splits.train
    cached = find_cached(splits.dataset, train.checksum, recipe, kind="contrastive")
    if cached is not None:
        return load_extractor(cached)
    log(f"training the self-supervised feature extractor for {splits.dataset} once (cached afterwards)...")
    progress = unfinished_path(splits.dataset, train.checksum, recipe, "contrastive")
    started = time.monotonic() - kept_seconds(progress)  # an interrupted training's seconds count
    encoder = train_contrastive(train, recipe, log, progress)
    probe = None
    test = splits.heldout
    if test is not None and train.num_classes >= 2:
        probe = linear_probe_accuracy(encode(encoder, train.images), train.labels,
                                      encode(encoder, test.images), test.labels)
    extractor = save_extractor(encoder, {
        "kind": "contrastive", "dataset": splits.dataset, "data_checksum": train.checksum,
        "image_shape": list(train.shape), "num_classes": 0, "class_names": [], "recipe": asdict(recipe),
        "probe_accuracy": probe, "train_seconds": round(time.monotonic() - started, 1)}, f"{splits.dataset}-ssl")
    progress.unlink(missing_ok=True)
    log(f"feature extractor {extractor.name}: self-supervised, linear probe accuracy "
        f"{'n/a (no labels)' if probe is None else f'{probe:.2%}'}, {extractor.spec['train_seconds']:.0f} s")
    return extractor


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    encoder.eval()
    return torch.cat([encoder(images[i:i + batch].float() / 255) for i in range(0, len(images), batch)])
