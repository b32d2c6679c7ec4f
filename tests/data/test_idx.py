import gzip

import numpy as np
import pytest

from genlab.data.idx import IDX_TYPES, encode_idx, parse_idx, read_idx, write_idx
from genlab.errors import GenlabError


@pytest.mark.parametrize("dtype", [t.newbyteorder("=") for t in IDX_TYPES.values()])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_element_type(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == dtype and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_gz_files_are_gzip_and_raw_files_are_not(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "x.gz", array)
    write_idx(tmp_path / "x", array)
    assert gzip.decompress((tmp_path / "x.gz").read_bytes()) == (tmp_path / "x").read_bytes()
    assert (tmp_path / "x").read_bytes()[:4] == bytes([0, 0, 0x08, 2])


def test_labels_are_big_endian_on_disk():
    data = encode_idx(np.array([1, 256], dtype=np.int32))
    assert data[8:] == bytes([0, 0, 0, 1, 0, 0, 1, 0])


GOOD = encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01" + GOOD[4:], "bad magic"),          # first bytes not zero
    (b"\x00\x00\x07\x03" + GOOD[4:], "bad magic"),          # unknown element type
    (b"\x00\x00\x08\x00", "bad magic"),                     # zero dimensions
    (GOOD[:2], "too short"),
    (GOOD[:10], "truncated inside its header"),
    (GOOD[:-1], "holds 23 bytes"),                          # body one byte short
    (GOOD + b"\x00", "holds 25 bytes"),                     # trailing garbage
    (GOOD[:4] + b"\x00\x00\x00\x09" + GOOD[8:], r"declares shape \(9, 3, 4\)"),  # count disagrees
])
def test_corrupt_headers_and_sizes_are_refused(data, message):
    with pytest.raises(GenlabError, match=message):
        parse_idx(data, "f")


def test_truncation_at_every_offset_is_refused():
    for cut in range(len(GOOD)):
        with pytest.raises(GenlabError):
            parse_idx(GOOD[:cut], "f")


def test_damaged_gzip_is_refused(tmp_path):
    packed = gzip.compress(GOOD)
    (tmp_path / "t.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(GenlabError, match="damaged gzip"):
        read_idx(tmp_path / "t.gz")
    (tmp_path / "c.gz").write_bytes(packed[:10] + bytes(b ^ 0xFF for b in packed[10:]))
    with pytest.raises(GenlabError, match="damaged gzip"):
        read_idx(tmp_path / "c.gz")


def test_missing_file(tmp_path):
    with pytest.raises(GenlabError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")
