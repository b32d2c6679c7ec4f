"""Saving and loading a family's state as one safetensors file, written atomically.

A family's `state_dict()` is a tree: dicts (optimiser state has int keys), lists, tuples, numbers,
strings and tensors. The tensors go into the safetensors body under their path in the tree
("G/net.0.weight", "opt_G/state/0/exp_avg"); the rest of the tree goes, as JSON with each tensor
replaced by its key, into the file's `__metadata__`. Loading parses that JSON and the tensors, and
never unpickles: a file from someone else cannot run code.

The file is written to a temporary name in the same folder, fsynced, renamed into place and the
folder fsynced, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from genlab.errors import GenlabError

FORMAT = "genlab-state/1"


def weights_hash(net: torch.nn.Module) -> str:
    """sha256 of a network's weights and buffers, by name: what names a cached extractor or first stage."""
    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def encode_tree(tree, tensors: dict[str, torch.Tensor], path: str = ""):
    """JSON-able copy of `tree`, moving tensors into `tensors` keyed by their path."""
    if isinstance(tree, torch.Tensor):
        key = path or "tensor"
        tensors[key] = tree.detach().cpu().contiguous()
        return {"$tensor": key}
    if isinstance(tree, dict):
        return {"$dict": [[k, encode_tree(v, tensors, f"{path}/{k}" if path else str(k))]
                          for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        items = [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(tree)]
        return {"$tuple": items} if isinstance(tree, tuple) else items
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} at {path!r} in a checkpoint")


def decode_tree(node, tensors: dict[str, torch.Tensor]):
    """Inverse of `encode_tree`."""
    if isinstance(node, list):
        return [decode_tree(v, tensors) for v in node]
    if isinstance(node, dict):
        if "$tensor" in node:
            return tensors[node["$tensor"]]
        if "$tuple" in node:
            return tuple(decode_tree(v, tensors) for v in node["$tuple"])
        return {k: decode_tree(v, tensors) for k, v in node["$dict"]}
    return node


def state_to_bytes(state: dict, metadata: dict[str, str] | None = None) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    tree = encode_tree(state, tensors)
    meta = {"format": FORMAT, "tree": json.dumps(tree), **(metadata or {})}
    return st_save(tensors, metadata=meta)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any moment leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise GenlabError(f"could not write {path}: {err.strerror or err}; free some space or "
                          "choose a writable --out (any earlier file there is untouched)") from None


def save_state(path: str | Path, state: dict, metadata: dict[str, str] | None = None) -> None:
    """Save a family's state tree as safetensors (atomically)."""
    write_atomic(Path(path), state_to_bytes(state, metadata))


def _header(data: bytes, name: str) -> dict:
    """The safetensors JSON header, checked before the library sees the bytes."""
    if len(data) < 8:
        raise GenlabError(f"{name} is not a genlab checkpoint: too short ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise GenlabError(f"{name} is not a genlab checkpoint: truncated or not safetensors")
    try:
        header = json.loads(data[8:8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise GenlabError(f"{name} is not a genlab checkpoint: its header is not safetensors JSON") from None
    if not isinstance(header, dict):
        raise GenlabError(f"{name} is not a genlab checkpoint: its header is not a JSON object")
    return header


def load_state(path: str | Path) -> tuple[dict, dict[str, str]]:
    """(state tree, metadata) from a file written by `save_state`; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    meta = _header(data, str(path)).get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise GenlabError(f"{path} is not a genlab checkpoint (no {FORMAT} marker); "
                          "genlab only loads weights it wrote")
    try:
        tensors = st_load(data)
        tree = decode_tree(json.loads(meta["tree"]), tensors)
    except Exception as err:  # any damage inside a file that claims to be ours
        raise GenlabError(f"checkpoint {path} is damaged ({type(err).__name__}: {err})") from None
    return tree, {k: v for k, v in meta.items() if k != "tree"}


def load_into(target, state: dict, source: str, expected: str) -> None:
    """`target.load_state_dict(state)`, with a mismatch (a tensor of the wrong shape, a missing
    key) reported as one line naming the file and what it should fit."""
    try:
        target.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else repr(err))
        raise GenlabError(f"{source} does not fit {expected}: {detail}") from None
