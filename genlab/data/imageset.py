"""`ImageSet`: the one in-memory form of every dataset genlab trains on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from genlab.errors import GenlabError


@dataclass
class ImageSet:
    """uint8 images [N, C, H, W], int64 labels [N], a name, class names, a content checksum and,
    where the data has them, a caption per image (`captions`; `caption_texts()` gives every
    dataset's: its own, or its class names through TEMPLATE).

    Datasets at this scale (tens of thousands of 28x28 images) fit in memory many times over, so
    batches are indexed straight from these tensors: no worker processes, no per-item Python.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    class_names: list[str] = field(default_factory=list)
    checksum: str = ""
    captions: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise GenlabError(f"dataset {self.name}: images must be uint8 [N, C, H, W], got "
                              f"{self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise GenlabError(f"dataset {self.name}: {len(self.images)} images but "
                              f"{len(self.labels)} labels; the files do not belong together")
        if len(self.images) == 0:
            raise GenlabError(f"dataset {self.name} holds no images")
        self.labels = self.labels.to(torch.int64)
        if not self.class_names:
            self.class_names = [str(c) for c in range(int(self.labels.max()) + 1)]
        if self.captions is not None and len(self.captions) != len(self.images):
            raise GenlabError(f"dataset {self.name}: {len(self.images)} images but {len(self.captions)} captions")
        if not self.checksum:
            self.checksum = content_checksum(self.images, self.labels)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, n: int) -> "ImageSet":
        """A fixed random subset of `n` images (all when there are fewer), in the original order.

        Random rather than the first `n` because files are often sorted by class; fixed (seed 0)
        so that the same `--limit` always means the same images.
        """
        if n >= len(self):
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:n].sort().values
        return ImageSet(self.images[keep], self.labels[keep], self.name, self.class_names,
                        captions=self.pick_captions(keep.tolist()))

    def pick_captions(self, index: list[int]) -> list[str] | None:
        """The captions of the images at `index` (None for data without captions of its own)."""
        return None if self.captions is None else [self.captions[i] for i in index]

    def caption_texts(self) -> list[str]:
        """A caption per image: the data's own, or its class's name through TEMPLATE ("a photo of a
        sneaker"), so that a text-conditioned model trains on every labelled dataset."""
        if self.captions is not None:
            return list(self.captions)
        return [TEMPLATE.format(self.class_names[int(c)]) for c in self.labels]


TEMPLATE = "a photo of a {}"  # captions of a labelled dataset without its own


def content_checksum(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of the pixels, shape and labels: the same data gives the same id from any file format."""
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(images.numpy()).tobytes())
    h.update(np.ascontiguousarray(labels.to(torch.int64).numpy()).tobytes())
    return "sha256:" + h.hexdigest()
