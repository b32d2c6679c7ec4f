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


def test_held_out_combinations_have_their_parts_in_training_but_never_together():
    from genlab.data import ImageSet

    catalogue = [{"unified": f"1F9{i:02X}", "name": f"PERSON {i}", "image": f"p{i}.png", "category": "People & Body",
                  "skin_variations": {t: {"image": f"p{i}-{t}.png"} for t in emoji.TONES}} for i in range(60)]
    rows = emoji.entries(catalogue)
    held = [emoji.in_test_split(base) or emoji.held_out_combination(base, tones) for _, _, base, _, tones in rows]

    def split(keep):
        chosen = [r for r, h in zip(rows, held) if h == keep]
        n = len(chosen)
        return ImageSet(torch.zeros(n, 3, 8, 8, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), "emoji",
                        list(emoji.CATEGORIES), captions=[r[3] for r in chosen])
    train, test = split(False), split(True)
    combined = emoji.combinations(train, test).caption_texts()
    expected = [r[3] for r in rows if emoji.held_out_combination(r[2], r[4])]
    assert combined == expected and 10 < len(combined) < 60  # about half the training faces, one tone each
    seen = set(train.caption_texts())
    for text in combined:
        person, tone = text.rsplit(", ", 1)
        assert text not in seen and person in seen  # the face is trained on, in its other tones too
        assert sum(c.startswith(person + ", ") for c in seen) == 4
        assert any(c.endswith(", " + tone) for c in seen)  # and the tone, on other faces
    faces = {r[2] for r, h in zip(rows, held) if h and not emoji.in_test_split(r[2])}
    assert len(faces) == len(combined)  # one combination a face
