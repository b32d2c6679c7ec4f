"""CIFAR-10's binary version, read from small files written in its format, and every way they can be
wrong: a size that is not a whole number of records, a pickle, a damaged or foreign archive, a tar
with the wrong members."""

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from genlab.config import DataConfig
from genlab.data import cifar, load_dataset
from genlab.errors import GenlabError


def records(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None].astype(np.uint8), pixels], 1).tobytes(), labels, pixels


def write_bin_folder(folder, per_file=4):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(cifar.FILES["train"] + cifar.FILES["test"]):
        (folder / name).write_bytes(records(per_file, seed=i)[0])
    return folder


def write_archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_records_become_colour_images_and_labels(tmp_path):
    write_bin_folder(tmp_path / cifar.FOLDER)
    train = load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    test = load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path), split="test"))
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.class_names[0] == "airplane" and test.labels.tolist() == [0, 1, 2, 3]
    _, _, pixels = records(4, seed=5)
    # red plane first, then green, then blue, each row-major
    assert torch.equal(test.images[1, 1].flatten(), torch.from_numpy(pixels[1, 1024:2048]))


def test_a_file_that_is_not_whole_records_is_refused(tmp_path):
    folder = write_bin_folder(tmp_path / "b")
    (folder / "test_batch.bin").write_bytes(records(3)[0][:-100])
    with pytest.raises(GenlabError, match=r"has 9,119 bytes, not a multiple of 3,073"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(folder), split="test"))


def test_a_pickle_is_never_loaded(tmp_path):
    folder = write_bin_folder(tmp_path / "b")
    (folder / "test_batch.bin").write_bytes(pickle.dumps({"data": b"x" * 50}, protocol=2))
    with pytest.raises(GenlabError, match="is a pickle .* genlab reads only the binary version"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(folder), split="test"))
    py = tmp_path / "py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(b"\x80\x02")
    with pytest.raises(GenlabError, match="holds the python version of CIFAR-10; .*pickle"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(py)))


def test_the_archive_must_be_the_publishers(tmp_path, monkeypatch):
    files = {f"{cifar.FOLDER}/{name}": records(2, seed=i)[0]
             for i, name in enumerate(cifar.FILES["train"] + cifar.FILES["test"])}
    archive = write_archive(tmp_path / cifar.ARCHIVE, files)
    with pytest.raises(GenlabError, match="not the publisher's c32a1d4ab5d03f1284b67883e8d87530"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    data = load_dataset(DataConfig(dataset="cifar10", data_dir=str(archive)))
    assert data.images.shape == (10, 3, 32, 32)
    assert not (tmp_path / cifar.FOLDER).exists()  # read in memory, never extracted


def test_a_tar_without_its_members_is_refused(tmp_path, monkeypatch):
    archive = write_archive(tmp_path / cifar.ARCHIVE,
                            {"../evil.bin": records(1)[0], f"{cifar.FOLDER}/test_batch.bin": records(1)[0]})
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(GenlabError, match=f"has no regular file {cifar.FOLDER}/data_batch_1.bin"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(archive)))


def test_missing_data_says_where_to_get_it(tmp_path):
    with pytest.raises(GenlabError, match="put cifar-10-binary.tar.gz .* pass --data-dir"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
