"""Reader and writer for the IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).

An IDX file is a 4-byte magic number (two zero bytes, an element-type code, the number of
dimensions), one big-endian uint32 per dimension, then the elements in row-major order, big-endian.
The files usually arrive gzipped. Every way such a file can be damaged (wrong magic, unknown type,
sizes that disagree with the byte count, a broken gzip stream) becomes one `GenlabError` naming
the file, never a numpy or zlib traceback.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from genlab.errors import GenlabError

# element-type code -> big-endian numpy dtype
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise GenlabError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip: a raw IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise GenlabError(f"IDX file {path} is a damaged gzip archive ({err}); "
                          "download or copy it again") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a numpy array in native byte order, validating every header field."""
    if len(data) < 4:
        raise GenlabError(f"IDX file {name} is too short ({len(data)} bytes) to hold a header; "
                          "the file is truncated")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_TYPES or ndim == 0:
        raise GenlabError(f"{name} is not an IDX file: bad magic number {data[:4].hex()} "
                          "(expected 0000 then a type code such as 08 and a dimension count)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise GenlabError(f"IDX file {name} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise GenlabError(f"IDX file {name} declares shape {tuple(dims)} ({expected} bytes of "
                          f"{dtype.name}) but holds {len(data) - header} bytes; the file is "
                          "truncated or corrupt")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (the inverse of `parse_idx`)."""
    for code, dtype in IDX_TYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    raise ValueError(f"IDX has no element type for {array.dtype}")


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an IDX file; gzipped when the name ends in .gz."""
    data = encode_idx(array)
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
