"""The emoji dataset: the 3,781 Twemoji of nine categories from the npm package, where `.ci/run` and
`make emoji` install it; and the small package a test writes in the same layout."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from genlab.config import DataConfig
from genlab.data import emoji, load_dataset
from genlab.errors import GenlabError

INSTALLED = any((d / emoji.TARBALL).is_file() for d in emoji.SYSTEM_DIRS)


@pytest.mark.skipif(not INSTALLED, reason="emoji-datasource-twitter is not installed (.ci/run installs it)")
def test_the_real_package_has_nine_categories_and_a_held_out_fifth():
    train = load_dataset(DataConfig(dataset="emoji"))
    test = load_dataset(DataConfig(dataset="emoji", split="test"))
    assert len(train) + len(test) == 3781 and train.images.shape[1:] == (3, 64, 64)
    assert train.class_names == emoji.CATEGORIES and torch.bincount(test.labels, minlength=9).min() > 0
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.25


def write_package(path, faces=10):
    """A package in the npm layout: emoji.json and 64 px RGBA images, one with skin variants."""
    from PIL import Image

    catalogue, files = [], {}
    for i in range(faces):
        unified = f"1F6{i:02X}"
        entry = {"unified": unified, "image": f"{unified.lower()}.png", "category": emoji.CATEGORIES[i % 9],
                 "has_img_twitter": True}
        if i == 0:
            entry["skin_variations"] = {"1F3FB": {"image": f"{unified.lower()}-1f3fb.png", "has_img_twitter": True}}
        catalogue.append(entry)
    catalogue.append({"unified": "1F3FB", "image": "1f3fb.png", "category": "Component", "has_img_twitter": True})
    for entry in catalogue:
        for variant in [entry, *entry.get("skin_variations", {}).values()]:
            rgba = np.zeros((64, 64, 4), np.uint8)
            rgba[16:48, 16:48] = [200, 30, 30, 255]
            buf = io.BytesIO()
            Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
            files[f"package/img/twitter/64/{variant['image']}"] = buf.getvalue()
    files["package/emoji.json"] = json.dumps(catalogue).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_package_in_the_npm_layout(tmp_path):
    tgz = write_package(tmp_path / "emoji-datasource-twitter-0.0.1.tgz")
    train = load_dataset(DataConfig(dataset="emoji", data_dir=str(tmp_path)))
    test = load_dataset(DataConfig(dataset="emoji", data_dir=str(tgz), split="test"))
    assert len(train) + len(test) == 11  # ten faces, one skin variant; the Component swatch left out
    assert train.images.shape[1:] == (3, 64, 64)
    corner = train.images[0, :, 0, 0].tolist()
    assert corner == [255, 255, 255]  # transparent pixels painted white
    black = load_dataset(DataConfig(dataset="emoji", data_dir=str(tgz), background="black"))
    assert black.images[0, :, 0, 0].tolist() == [0, 0, 0]
    variant_split = {emoji.in_test_split("1F600")}
    assert len(variant_split) == 1  # a face and its skin variant share their split


def test_a_damaged_or_missing_package_is_named(tmp_path):
    (tmp_path / emoji.TARBALL).write_bytes(b"not a tarball")
    with pytest.raises(GenlabError, match="sha256 .* damaged or another build"):
        load_dataset(DataConfig(dataset="emoji", data_dir=str(tmp_path)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenlabError, match="npm pack emoji-datasource-twitter@16.0.0"):
        load_dataset(DataConfig(dataset="emoji", data_dir=str(tmp_path / "empty")))
