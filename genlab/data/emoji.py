"""`emoji`: the Twemoji images of the npm package emoji-datasource-twitter, a real colour dataset
that installs offline from the npm registry.

    npm pack emoji-datasource-twitter@16.0.0     # emoji-datasource-twitter-16.0.0.tgz, 62 MB

The package ships 3,786 64x64 RGBA PNGs (img/twitter/64/) and emoji.json, which gives each its
category and name (each image's caption, a skin-tone variant's naming its tone). genlab keeps the 3,781 of the nine picture categories (the five skin-tone swatches of
"Component" are left out), paints transparent pixels on --background (white), and holds out a fixed
fifth of the base emoji as the test split, each with all its skin-tone variants, so that no face
appears in both splits in another colour. The test split also holds a fixed set of **combinations**
whose parts are seen in training but not together: one skin tone of half the training emoji that
come in tones (128 images), so that "waving hand sign, dark skin tone" is never trained on while
the waving hand (in its other tones) and the dark tone (on other emoji) are; `combinations()` picks
them out of the test split, where `genlab eval` scores a text model's composition.
Graphics: Twemoji, (c) Twitter/X, CC-BY 4.0; the
package's data: MIT.

Where genlab looks: --data-dir (the .tgz, a folder holding it, or the unpacked package), then
<cache>/datasets/emoji, then /usr/share/datasets/emoji (where `.ci/run` and `make emoji` put it).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch

from genlab.config import DataConfig
from genlab.data.convert import read_rgb
from genlab.data.imageset import ImageSet
from genlab.errors import GenlabError
from genlab.paths import cache_dir

PACKAGE, VERSION = "emoji-datasource-twitter", "16.0.0"
TARBALL = f"{PACKAGE}-{VERSION}.tgz"
TARBALL_SHA256 = "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"  # npm pack, 2026-11-29
CATEGORIES = ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
              "Activities", "Objects", "Symbols", "Flags"]
IMAGES = "img/twitter/64/"
SYSTEM_DIRS = [Path("/usr/share/datasets/emoji")]
INSTALL = (f"install it with `npm pack {PACKAGE}@{VERSION}` (npm from the registry) and pass --data-dir to the "
           f"folder holding {TARBALL}, or run `make emoji`")


TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}


def caption(name: str, tones: str = "") -> str:
    """An image's caption: its emoji.json name in lower case; a skin-tone variant's names the tone
    ("thumbs up sign, dark skin tone"; two people: "light and dark skin tone")."""
    text = " ".join(name.lower().split())
    if not tones:
        return text
    named = [TONES.get(t, t.lower()) for t in tones.split("-")]
    named = list(dict.fromkeys(named))  # "1F3FB-1F3FB": both light
    return f"{text}, {' and '.join(named)} skin tone"


def entries(catalogue: list[dict]) -> list[tuple[str, str, str, str, str]]:
    """(image file, category, base emoji, caption, skin tones) of every image of the nine
    categories, skin variants included."""
    out = []
    for e in catalogue:
        if e.get("category") not in CATEGORIES:
            continue
        variants = [("", e), *e.get("skin_variations", {}).items()]
        for tones, variant in variants:
            if variant.get("has_img_twitter", True) and variant.get("image"):
                out.append((variant["image"], e["category"], e["unified"], caption(e.get("name") or "", tones),
                            tones))
    return out


def in_test_split(base: str) -> bool:
    """A fixed fifth of the base emoji (and all their variants): the held-out split."""
    return int(hashlib.sha1(base.encode()).hexdigest(), 16) % 5 == 0


def held_out_combination(base: str, tones: str) -> bool:
    """The combinations held out of training: for half the training emoji that come in skin tones,
    one of the five tones (both fixed by hash). Each such emoji is trained on in its other tones and
    each tone on other emoji, never the two together."""
    if tones not in TONES or in_test_split(base):
        return False
    h = int(hashlib.sha1(f"{base} combination".encode()).hexdigest(), 16)
    return h % 2 == 0 and list(TONES)[h // 2 % len(TONES)] == tones


def combinations(train: ImageSet, heldout: ImageSet) -> ImageSet | None:
    """The held-out images that combine parts seen in training (held_out_combination): a skin-tone
    variant of an emoji whose own name is a training caption. None without captions or such images."""
    if train.captions is None or heldout.captions is None:
        return None
    seen = set(train.caption_texts())
    keep = [i for i, c in enumerate(heldout.caption_texts())
            if c.endswith(" skin tone") and ", " in c and c.rsplit(", ", 1)[0] in seen]
    if not keep:
        return None
    index = torch.tensor(keep)
    return ImageSet(heldout.images[index], heldout.labels[index], heldout.name, heldout.class_names,
                    captions=heldout.pick_captions(keep))


class PackageReader:
    """Files of the package, from its .tgz or from the unpacked folder. A .tgz is read once, in
    order (a gzip stream cannot seek back cheaply), keeping emoji.json and the 64 px images."""

    def __init__(self, path: Path):
        self.path = path
        self.files: dict[str, bytes] | None = None
        if path.is_file():
            try:
                with tarfile.open(path, "r|gz") as tar:  # a stream: one pass
                    self.files = {}
                    for member in tar:
                        name = member.name.split("/", 1)[-1]
                        if member.isreg() and (name == "emoji.json" or name.startswith(IMAGES)):
                            self.files[name] = tar.extractfile(member).read()
            except (tarfile.TarError, OSError, EOFError) as err:
                raise GenlabError(f"{path} is not a readable .tgz ({err}); {INSTALL}") from None
        else:
            self.root = path / "package" if (path / "package" / "emoji.json").is_file() else path

    def read(self, name: str) -> bytes:
        if self.files is not None:
            if name not in self.files:
                raise GenlabError(f"{self.path} has no {name}; it is not {PACKAGE}")
            return self.files[name]
        try:
            return (self.root / name).read_bytes()
        except OSError:
            raise GenlabError(f"{self.root} has no {name}; it is not the unpacked {PACKAGE}") from None


def locate(cfg: DataConfig) -> Path:
    bases = [Path(cfg.data_dir)] if cfg.data_dir else [cache_dir() / "datasets" / "emoji", *SYSTEM_DIRS]
    for base in bases:
        if base.is_file():
            return base
        tarballs = [base / TARBALL, *sorted(base.glob(f"{PACKAGE}-*.tgz"))] if base.is_dir() else []
        for candidate in tarballs:
            if candidate.is_file():
                return candidate
        if (base / "emoji.json").is_file() or (base / "package" / "emoji.json").is_file():
            return base
    raise GenlabError(f"emoji: {PACKAGE} is not in {' or '.join(map(str, bases))}; {INSTALL}")


def check_tarball(path: Path) -> None:
    """The pinned tarball is checked against the digest recorded when genlab was written."""
    if path.name != TARBALL:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise GenlabError(f"{path} has sha256 {digest}, not {TARBALL_SHA256}: it is damaged or another build; "
                          f"delete it and {INSTALL}")


def load_emoji(cfg: DataConfig) -> ImageSet:
    path = locate(cfg)
    if path.is_file():
        check_tarball(path)
    reader = PackageReader(path)
    try:
        catalogue = json.loads(reader.read("emoji.json"))
    except json.JSONDecodeError as err:
        raise GenlabError(f"emoji.json in {path} is damaged ({err}); {INSTALL}") from None
    chosen = [e for e in entries(catalogue)
              if (in_test_split(e[2]) or held_out_combination(e[2], e[4])) == (cfg.split == "test")]
    images, labels, captions = [], [], []
    for file, category, _, text, _ in chosen:
        name = IMAGES + file
        image = read_rgb(io.BytesIO(reader.read(name)), cfg.background, name=f"{name} in {path}")
        images.append(np.asarray(image, dtype=np.uint8))
        labels.append(CATEGORIES.index(category))
        captions.append(text)
    if not images:
        raise GenlabError(f"{path} holds no emoji images of the nine categories; {INSTALL}")
    data = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(data, torch.tensor(labels), "emoji", list(CATEGORIES), captions=captions)
