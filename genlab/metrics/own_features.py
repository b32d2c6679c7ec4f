"""Bring your own features: a module of your own that maps float images [N, C, H, W] in [0, 1] to
features [N, D], e.g. InceptionV3 exported on a machine that has it, so that numbers can be compared
with papers. Two kinds of file:

- a TorchScript module (`torch.jit.save`, usually FILE.pt), named `torchscript-<8 hex>`;
- an exported program (`torch.export.save`, FILE.pt2; PyTorch's successor to TorchScript, which
  torch 2.13 marks deprecated), named `export-<8 hex>`. Export it in eval mode with a dynamic batch
  dimension: the features are computed in batches of several sizes.

Each is named by its file's sha256. Loading either runs what the file holds: load only files you trust
(genlab's own weights are safetensors and run none).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import torch
from torch import nn

from genlab.errors import GenlabError
from genlab.metrics.features import Extractor
from genlab.paths import cache_dir

EXPORT_HINT = ("if it was exported for one batch size, export it with a dynamic batch dimension: "
               "torch.export.export(net.eval(), (x,), dynamic_shapes={'x': {0: torch.export.Dim('batch')}})")


class Exported(nn.Module):
    """An exported program as a module. Its mode (eval or train) was fixed when it was exported and
    its graph refuses .eval(), so .train()/.eval() stop here; .double() and .to() reach its weights."""

    def __init__(self, program):
        super().__init__()
        self.graph = program.module()

    def train(self, mode: bool = True) -> "Exported":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def is_exported_program(path: Path) -> bool:
    """Whether `path` is a torch.export archive (a zip with an `archive_format` record)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("archive_format") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _open(path: Path) -> tuple[str, nn.Module]:
    if is_exported_program(path):
        try:
            return "export", Exported(torch.export.load(str(path)))
        except Exception as err:  # a damaged or newer archive: torch's own error, in one line
            raise GenlabError(f"{path} is a torch.export archive that cannot be loaded ({_first_line(err)}); "
                              "save it again with torch.export.save in this torch version") from None
    try:
        return "torchscript", torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as err:
        raise GenlabError(f"{path} is not a TorchScript module ({_first_line(err)}) nor an exported program; "
                          "save one with torch.jit.save or torch.export.save") from None


def load_own_extractor(path: str | Path, image_shape: tuple[int, int, int], data_key: str) -> Extractor:
    """The module at `path` (TorchScript or exported program) as an Extractor of images of
    `image_shape`; its statistics of the data named `data_key` are cached under
    <cache>/features/<kind>-<8 hex>/<data_key>/."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"feature extractor {path} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    kind, module = _open(path)
    what = "TorchScript extractor" if kind == "torchscript" else "exported extractor"
    probe = torch.rand(3, *image_shape, generator=torch.Generator().manual_seed(0))
    for n in (2, 3):  # two batch sizes: an export made for one batch size fails at least one
        try:
            with torch.no_grad():
                out = module(probe[:n])
        except Exception as err:  # the module's own code failed on images of the data's shape
            hint = f"; {EXPORT_HINT}" if kind == "export" else ""
            raise GenlabError(f"{what} {path} fails on {n} images [N, {', '.join(map(str, image_shape))}] "
                              f"in [0, 1] ({type(err).__name__}: {_first_line(err)}){hint}") from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n or not out.is_floating_point():
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise GenlabError(f"{what} {path} returned {shape} for {n} images; it must map float images "
                              "[N, C, H, W] in [0, 1] to features [N, D]")
    name = f"{kind}-{digest[:8]}"
    spec = {"kind": kind, "name": name, "file": str(path), "sha256": digest, "dataset": None,
            "image_shape": list(image_shape), "num_classes": 0, "class_names": [], "feature_dim": int(out.shape[1])}
    folder = cache_dir() / "features" / name / data_key
    folder.mkdir(parents=True, exist_ok=True)
    return Extractor(module, spec, folder)
