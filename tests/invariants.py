"""The results a redesign must not change: for every registered model, the sha256 of
`model.safetensors` (its content: see `state_digest`) after a short seeded CPU run (the tiny configs of tests/test_families.py) and of
the images `genlab sample` draws from it.

Float results depend on the CPU's instruction set and on PyTorch's version, so the hashes are kept
with a fingerprint of the machine they were recorded on; `tests/test_invariants.py` compares on a
machine with the same fingerprint and says so (a skip naming both fingerprints) on another.

    .venv/bin/python tests/invariants.py      # records tests/invariants.json on this machine
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from genlab.core.runtime import cpu_flags, cpuinfo

RECORD = Path(__file__).with_name("invariants.json")
TINY = ["--limit", "128", "--batch-size", "16", "--no-progress", "--device", "cpu", "--grid-size", "8",
        "--steps", "6", "--seed", "0", "--threads", "1"]
SMALL = {  # the tiny configs of tests/test_families.py
    "gan-mlp": [], "dcgan": ["--width", "8"], "vae": ["--width", "8"], "vae-mlp": ["--width", "8"],
    "transformer": ["--d-model", "16", "--layers", "1", "--heads", "2"],
    "diffusion": ["--width", "8", "--timesteps", "20", "--sample-steps", "3"],
}


def fingerprint() -> dict:
    """What decides the bits of a float computation on the CPU: PyTorch, the CPU and its vector units."""
    flags = cpu_flags()
    model = cpuinfo("model name") or platform.processor()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma")
    return {"torch": torch.__version__, "machine": platform.machine(), "cpu": model,
            "flags": sorted(f for f in wanted if f in flags)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_digest(path: Path) -> str:
    """sha256 of a safetensors file's content: its header with sorted keys, then the tensor bytes.
    (The library writes the header's keys in hash-map order, so the raw bytes differ between two
    saves of the same state.)"""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True).encode()
    return sha256(header + data[8 + size:])


def hashes(models=None, root: Path | None = None) -> dict[str, dict[str, str]]:
    """{model: {"weights": sha256 of model.safetensors, "samples": sha256 of the sampled images}}."""
    from genlab.cli import main

    threads = torch.get_num_threads()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(root or tmp)
        try:
            for name in models or SMALL:
                run = root / name
                assert main(["train", "--model", name, "--out", str(run), *TINY, *SMALL[name]]) == 0
                assert main(["sample", str(run), "--n", "5", "--seed", "3", "--out", str(root / f"{name}.npz")]) == 0
                images = np.load(root / f"{name}.npz")["images"]
                out[name] = {"weights": state_digest(run / "model.safetensors"),
                             "samples": sha256(np.ascontiguousarray(images).tobytes() + str(images.shape).encode())}
        finally:
            torch.set_num_threads(threads)  # --threads 1 set it for this process
    return out


if __name__ == "__main__":
    record = {"fingerprint": fingerprint(), "hashes": hashes()}
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    json.dump(record, sys.stdout, indent=2)
