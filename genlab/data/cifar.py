"""CIFAR-10 (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html) from its binary version.

The binary version is six files of records of 3,073 bytes: one label byte (0-9), then 1,024 red,
1,024 green and 1,024 blue bytes of a 32x32 image in row-major order; data_batch_1..5.bin hold the
50,000 training images, test_batch.bin the 10,000 test images. genlab reads them from the
publisher's archive cifar-10-binary.tar.gz (its MD5 checked, members read in memory, never
extracted) or from the extracted files. The python version is a pickle, which can run code when
loaded: genlab refuses it and says to use the binary version.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import torch

from genlab.config import DataConfig
from genlab.data.imageset import ImageSet
from genlab.errors import GenlabError
from genlab.paths import cache_dir

ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # the publisher's, on the page above
PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"  # the python (pickle) version's archive
FOLDER = "cifar-10-batches-bin"
RECORD = 3073  # 1 label byte + 3 x 32 x 32 pixel bytes
FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
USE_BINARY = (f"genlab reads only the binary version of CIFAR-10 ({ARCHIVE} from "
              "https://www.cs.toronto.edu/~kriz/cifar.html); the python version is a pickle, and loading a "
              "pickle can run code")


def parse_records(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) from the bytes of one CIFAR-10 binary file."""
    if data[:1] == b"\x80" and len(data) % RECORD:  # a pickle starts with its protocol byte 0x80
        raise GenlabError(f"{name} is a pickle (the python version of CIFAR-10), not the binary version; {USE_BINARY}")
    if not data or len(data) % RECORD:
        raise GenlabError(f"CIFAR-10 file {name} has {len(data):,} bytes, not a multiple of {RECORD:,} (one label byte "
                          "and 3,072 pixel bytes an image): it is truncated or not CIFAR-10's binary version")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise GenlabError(f"CIFAR-10 file {name} has a label {int(labels.max())} (labels are 0-9): it is damaged "
                          "or not CIFAR-10")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_archive(path: Path, split: str) -> list[tuple[bytes, str]]:
    """The bytes of `split`'s files from the publisher's archive, checked: its MD5, then each member
    (a regular file named as the publisher names it; nothing is written to disk)."""
    digest = _md5(path)
    if digest == PYTHON_MD5:
        raise GenlabError(f"{path} is the python version of CIFAR-10; {USE_BINARY}")
    if digest != ARCHIVE_MD5:
        raise GenlabError(f"{path} has MD5 {digest}, not the publisher's {ARCHIVE_MD5} for {ARCHIVE}: it is damaged "
                          "or another file. Download it again, or pass the folder of its extracted .bin files")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            out = []
            for file in FILES[split]:
                member = members.get(f"{FOLDER}/{file}")
                if member is None or not member.isreg():
                    raise GenlabError(f"{path} has no regular file {FOLDER}/{file}; it is not CIFAR-10's binary archive")
                out.append((tar.extractfile(member).read(), f"{path}:{member.name}"))
            return out
    except (tarfile.TarError, OSError, EOFError) as err:
        raise GenlabError(f"{path} is not a readable tar.gz archive ({err}); download it again") from None


def _locate(cfg: DataConfig) -> Path:
    """The archive, or the folder of .bin files, that --data-dir (or the cache) holds."""
    where = [Path(cfg.data_dir)] if cfg.data_dir else [cache_dir() / "datasets" / "cifar10"]
    for base in where:
        if base.is_file():
            return base
        for candidate in (base / ARCHIVE, base / FOLDER, base):
            if candidate.is_file() or (candidate.is_dir() and (candidate / FILES["test"][0]).is_file()):
                return candidate
        if base.is_dir() and ((base / "data_batch_1").is_file() or (base / "cifar-10-batches-py").is_dir()
                              or (base / "cifar-10-python.tar.gz").is_file()):
            raise GenlabError(f"{base} holds the python version of CIFAR-10; {USE_BINARY}")
    raise GenlabError(f"no CIFAR-10 in {where[0]}: put {ARCHIVE} (https://www.cs.toronto.edu/~kriz/cifar.html), or "
                      f"its extracted {FOLDER}/*.bin files, in a folder and pass --data-dir FOLDER")


def load_cifar10(cfg: DataConfig) -> ImageSet:
    source = _locate(cfg)
    if source.is_file():
        if source.name.endswith(".bin"):
            raise GenlabError(f"--data-dir {source} is one file; pass the folder of the six .bin files or {ARCHIVE}")
        parts = read_archive(source, cfg.split)
    else:
        missing = [f for f in FILES[cfg.split] if not (source / f).is_file()]
        if missing:
            raise GenlabError(f"{source} lacks {', '.join(missing)} of CIFAR-10's binary version")
        parts = [((source / f).read_bytes(), str(source / f)) for f in FILES[cfg.split]]
    arrays = [parse_records(data, name) for data, name in parts]
    images = torch.from_numpy(np.concatenate([a for a, _ in arrays]))
    labels = torch.from_numpy(np.concatenate([b for _, b in arrays]))
    return ImageSet(images, labels, "cifar10", list(CLASSES))
