import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.config import DataConfig
from genlab.data import DATASETS, load_dataset, register_dataset
from genlab.data.download import download
from genlab.data.idx import write_idx
from genlab.data.imageset import ImageSet
from genlab.errors import GenlabError
from tests.conftest import random_images

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_mnist_folder(folder: Path, n_train=12, n_test=5, gz=True, label_count=None):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{stem}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        labels = rng.integers(0, 10, label_count if label_count and stem == "train" else n)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{ext}", labels.astype(np.uint8))
    return folder


def test_mnist_sample_is_real_mnist_with_a_held_out_split(mnist_sample):
    test = load_dataset(DataConfig(dataset="mnist-sample", split="test"))
    assert mnist_sample.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert mnist_sample.images.dtype == torch.uint8 and mnist_sample.labels.dtype == torch.int64
    assert torch.bincount(mnist_sample.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    # real digits: dark background, a bright stroke, about 19% of pixels lit
    lit = (mnist_sample.images > 127).float().mean().item()
    assert 0.08 < lit < 0.3 and mnist_sample.images[:, :, 0, :].float().mean() < 1
    train_rows = {bytes(x) for x in mnist_sample.images.flatten(1).numpy()}
    assert not any(bytes(x) in train_rows for x in test.images.flatten(1).numpy())


def test_checksum_names_the_content(mnist_sample):
    again = load_dataset(DataConfig(dataset="mnist-sample"))
    assert again.checksum == mnist_sample.checksum and again.checksum.startswith("sha256:")
    changed = mnist_sample.images.clone()
    changed[0, 0, 0, 0] ^= 1
    assert ImageSet(changed, mnist_sample.labels, "x").checksum != mnist_sample.checksum


def test_limit_takes_a_fixed_random_subset(mnist_sample):
    a = load_dataset(DataConfig(limit=300))
    b = load_dataset(DataConfig(limit=300))
    assert len(a) == 300 and torch.equal(a.images, b.images)
    assert len(torch.unique(a.labels)) == 10  # not just the first class of a sorted file


def test_mnist_from_a_folder_gz_and_raw(tmp_path):
    for gz in (True, False):
        folder = write_mnist_folder(tmp_path / f"m{gz}", gz=gz)
        train = load_dataset(DataConfig(dataset="mnist", data_dir=str(folder)))
        test = load_dataset(DataConfig(dataset="mnist", data_dir=str(folder), split="test"))
        assert train.images.shape == (12, 1, 28, 28) and test.images.shape == (5, 1, 28, 28)
        assert train.name == "mnist" and train.num_classes == 10


def test_image_and_label_counts_must_agree(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", label_count=11)
    with pytest.raises(GenlabError, match="12 images but .* 11 labels"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(folder)))


def test_truncated_idx_file_in_a_dataset(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GenlabError, match="truncated or corrupt"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(folder)))


def test_missing_data_folder_and_missing_files(tmp_path):
    with pytest.raises(GenlabError, match="does not exist.*--data-dir"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenlabError, match="lacks the mnist train files"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path / "empty")))


def test_mnist_without_folder_or_network_says_what_to_do(monkeypatch):
    from genlab.data.sources import IDX_DATASETS

    monkeypatch.setitem(IDX_DATASETS["mnist"], "mirrors", ["file:///nonexistent/mirror/"])
    with pytest.raises(GenlabError, match="could not download.*--data-dir"):
        load_dataset(DataConfig(dataset="mnist"))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(GenlabError, match="unknown dataset 'mnsit'; known datasets: mnist-sample, mnist"):
        load_dataset(DataConfig(dataset="mnsit"))


def test_register_dataset_validates():
    with pytest.raises(ValueError):
        register_dataset("mnist", lambda cfg: None, "again")
    with pytest.raises(TypeError):
        register_dataset("new-one", "not callable", "x")
    assert "new-one" not in DATASETS


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_found_where_debian_puts_it():
    test = load_dataset(DataConfig(dataset="fashion-mnist", split="test"))
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.class_names[9] == "Ankle boot"


def save_image(path: Path, array: np.ndarray, mode: str):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_folder_dataset_labels_greyscale_and_resize(tmp_path):
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: greyscale 76 by ITU-R 601-2
    save_image(tmp_path / "cats" / "a.png", rgb, "RGB")
    save_image(tmp_path / "cats" / "b.jpg", np.full((30, 50, 3), 200, np.uint8), "RGB")
    save_image(tmp_path / "dogs" / "c.png", np.full((28, 28), 9, np.uint8), "L")
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # hidden files are not images and are skipped
    data = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16, channels="1"))
    assert data.images.shape == (3, 1, 16, 16) and data.class_names == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 1]
    assert int(data.images[0].float().mean().round()) == 76 and int(data.images[2, 0, 5, 5]) == 9


def test_folder_dataset_refuses_a_non_image_and_a_corrupt_image(tmp_path):
    save_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8), "L")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GenlabError, match="notes.txt is not an image"):
        load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path)))
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(GenlabError, match="broken.png is not a readable image"):
        load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path)))


def test_folder_dataset_needs_a_folder(tmp_path):
    with pytest.raises(GenlabError, match="--data-dir"):
        load_dataset(DataConfig(dataset="folder"))
    (tmp_path / "e").mkdir()
    with pytest.raises(GenlabError, match="holds no images"):
        load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "e")))


def test_download_verifies_and_leaves_nothing_on_mismatch(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"genlab" * 100)
    good = "md5:" + hashlib.md5(src.read_bytes()).hexdigest()
    dest = download(src.as_uri(), tmp_path / "out" / "a.bin", good)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(GenlabError, match="expected 0+; the file was deleted"):
        download(src.as_uri(), tmp_path / "out" / "b.bin", "md5:" + "0" * 32)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin"]


def test_imageset_refuses_mismatched_counts():
    with pytest.raises(GenlabError, match="3 images but 2 labels"):
        ImageSet(torch.from_numpy(random_images(3)), torch.zeros(2, dtype=torch.int64), "x")


def test_a_folder_keeps_colour_when_it_has_any(tmp_path):
    from tests.conftest import write_colour_folder

    write_colour_folder(tmp_path / "c", n=20)
    data = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "c"), image_size=32))
    assert data.images.shape == (16, 3, 32, 32) and data.class_names == ["discs", "squares"]
    assert (data.images[:, 0] != data.images[:, 1]).any()  # colour kept
    white = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "c"), image_size=32))
    black = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "c"), image_size=32, background="black"))
    assert int(white.images[0, :, 0, 0].min()) == 255 and int(black.images[0, :, 0, 0].max()) == 0  # a corner
    grey = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "c"), image_size=32, channels="1"))
    assert grey.images.shape == (16, 1, 32, 32)


def test_a_grey_folder_stays_grey_and_a_fifth_is_held_out(tmp_path):
    for i in range(10):
        save_image(tmp_path / f"{i}.png", np.full((20, 30), 10 * i, np.uint8), "L")
    train = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16))
    test = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16, split="test"))
    assert train.images.shape == (8, 1, 16, 16) and test.images.shape == (2, 1, 16, 16)
    seen = {int(x[0, 8, 8]) for x in train.images}
    assert not seen & {int(x[0, 8, 8]) for x in test.images}  # the held-out images are never trained on
    assert train.class_names == ["all"]


def test_centre_crop_keeps_the_middle(tmp_path):
    wide = np.zeros((20, 60), np.uint8)
    wide[:, 20:40] = 255  # a white middle third
    save_image(tmp_path / "w.png", wide, "L")
    squeezed = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=12))
    cropped = load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=12, crop=True))
    assert int(cropped.images[0, 0, 6, 1]) == 255 and int(squeezed.images[0, 0, 6, 1]) == 0


def test_every_dataset_can_be_resized_with_the_one_filter():
    from genlab.data.convert import resize

    small = load_dataset(DataConfig(dataset="mnist-sample", limit=20))
    big = load_dataset(DataConfig(dataset="mnist-sample", limit=20, image_size=32, channels="3"))
    assert big.images.shape == (20, 3, 32, 32)
    assert torch.equal(big.images[:, :1], resize(small.images, 32))
