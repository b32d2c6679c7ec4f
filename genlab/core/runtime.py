"""Where and how a family's optimisation step runs: device, precision, data parallelism, the guard
that keeps non-finite numbers away from the optimisers, and the random state that makes a run
repeatable (seeding, and capturing every generator for an exact resume).

Families own their optimisers (DESIGN.md), so each optimiser step goes through three calls:

    rt.backward(loss)                        # scaled for fp16
    rt.finish_grads("D", self.D, opt, loss)  # unscale, average over ranks, refuse NaN/inf
    rt.step(opt)

so a family is written once and runs on a CPU, a GPU in mixed precision, or under torchrun.
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from genlab.errors import GenlabError

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; asking for a missing GPU is an error."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps and mps.is_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenlabError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if name == "mps" and not (mps and mps.is_available()):
        raise GenlabError("--device mps: Apple's MPS is not available here; use --device cpu")
    return torch.device(name)


def cpuinfo(field: str) -> str:
    """The first CPU's `field` in /proc/cpuinfo ("flags", "model name"; Linux; "" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.split(":", 1)[0].strip() == field and ":" in line), "")
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags, read from /proc/cpuinfo (Linux; empty elsewhere)."""
    return set(cpuinfo("flags").split())


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 faster than fp32: AMX's bf16 tiles. AVX-512 BF16 alone is not
    enough: on a 2-core Xeon with it and no AMX, bf16 autocast trained the latent diffusion prior at
    0.69x and the fashion DCGAN at 0.80x fp32's images a second, and sampled at 0.72x its speed; on
    an AVX2 EPYC (no bf16 at all) it ran ~10x slower."""
    return "amx_bf16" in cpu_flags()


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` picks the fastest precision the hardware runs well; any other name is kept."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict:
    """Every global random generator's state (Python, NumPy, torch, CUDA), as tensors and numbers
    that a checkpoint can hold."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """The inverse of `capture_rng`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


class LazyOptimizer:
    """A torch optimiser built on its first use: `LazyOptimizer(torch.optim.Adam, params, lr=...)`
    stands where the optimiser would (step, zero_grad, param_groups, state_dict, load_state_dict).

    Building any torch optimiser first imports torch._dynamo (1.8-2.6 s on 2 CPU cores), which
    `genlab sample`, `eval` and `serve` never need: they load a run's optimiser state and never
    step. A state loaded before the first use waits for it (its structure checked at once, with
    torch's messages) and is what `state_dict()` returns until then, so a loaded model saves the
    very state it loaded."""

    _OWN = ("_cls", "_groups", "_kwargs", "_opt", "_state")

    def __init__(self, cls: type, params, **kwargs):
        params = list(params)
        self._cls, self._kwargs, self._opt, self._state = cls, kwargs, None, None
        # the parameters now (a generator would be spent), in groups as the optimiser takes them
        self._groups = [dict(g, params=list(g["params"])) for g in params] if params and isinstance(params[0], dict) \
            else [{"params": params}]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._opt is None:
            opt = self._cls(self._groups, **self._kwargs)
            if self._state is not None:
                opt.load_state_dict(self._state)
            self._opt, self._state = opt, None
        return self._opt

    def __getattr__(self, name: str):
        if name in LazyOptimizer._OWN or name.startswith("__"):  # copy and pickle look for dunders
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def state_dict(self) -> dict:
        if self._opt is None and self._state is not None:
            return self._state
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self._opt is not None:
            self._opt.load_state_dict(state)
            return
        saved = state.get("param_groups") if isinstance(state, dict) else None
        if not isinstance(saved, list) or not isinstance(state.get("state"), dict):
            raise ValueError("an optimiser state needs 'state' and 'param_groups'")
        if len(saved) != len(self._groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(s.get("params", ())) != len(g["params"]) for s, g in zip(saved, self._groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        self._state = state


class NonFiniteError(Exception):
    """A loss or a gradient became NaN or infinite; raised before the optimiser sees it."""

    def __init__(self, quantity: str, value: float):
        super().__init__(f"{quantity} is {value}")
        self.quantity, self.value = quantity, value


@dataclass
class Runtime:
    """Device, precision and data-parallel context of a family's training step."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def create(cls, device: torch.device, precision: str = "fp32", rank: int = 0, world_size: int = 1) -> "Runtime":
        precision = resolve_precision(precision, device)
        if precision not in PRECISIONS:
            raise GenlabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "fp16" and device.type != "cuda":
            raise GenlabError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        return cls(device, precision, rank, world_size, scaler)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        """Mixed precision for the forward passes (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's part of a tensor drawn for the global batch (e.g. the noise z), so that N
        ranks with batch B/N compute what one process with batch B computes."""
        if not self.distributed:
            return x
        return x.chunk(self.world_size)[self.rank]

    def global_batch(self, local: int) -> int:
        return local * self.world_size

    def drawn(self, draw, shape: tuple[int, ...]) -> torch.Tensor:
        """`draw(size, device=)` for the global batch (shape[0], this rank's batch, times the ranks),
        this rank's part. Every rank's generator is seeded alike, so N ranks draw what one process
        with the whole batch draws, where each drawing its own would give N copies of the same noise
        (every family's noise, masks and augmentations go through here; one process: a plain draw)."""
        return self.shard(draw((self.global_batch(shape[0]), *shape[1:]), device=self.device))

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) noise for this rank's share of a batch (`drawn`)."""
        return self.drawn(torch.rand, shape)

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal noise for this rank's share of a batch (`drawn`)."""
        return self.drawn(torch.randn, shape)

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        """Integers in [low, high) for this rank's share of a batch (`drawn`)."""
        return self.drawn(lambda size, device: torch.randint(low, high, size, device=device), shape)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def finish_grads(self, name: str, module: torch.nn.Module, optimizer, loss: torch.Tensor) -> float:
        """Unscale, average the gradients over ranks, and refuse a non-finite loss or gradient.

        Returns the gradient norm (diagnostics use it). Raises NonFiniteError naming `name` on
        every rank alike: the losses travel with the gradients in the same all-reduce, so one
        rank's NaN stops all of them at the same step instead of leaving the others waiting."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        loss_value = loss.detach().float().reshape(1)
        if self.distributed:
            loss_value = self._all_reduce_mean(grads, loss_value)
        # one fused norm checks the loss and every gradient at once (0 * inf and 0 * nan are nan);
        # only when it is not finite do we look again to say which it was
        norm = torch.stack(torch._foreach_norm(grads)).norm() if grads else torch.zeros(())
        checked = float(norm + 0 * loss_value.to(norm.device).sum())
        if math.isfinite(checked):
            return checked
        if not bool(torch.isfinite(loss_value)):
            raise NonFiniteError(f"loss of {name}", float(loss_value))
        if self.scaler is not None:  # fp16 overflow: the scaler skips this step and lowers its scale
            return float(norm)
        raise NonFiniteError(f"gradient of {name}", float(norm))

    def _all_reduce_mean(self, grads: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        """Average gradients (and the loss) over ranks in one flat all-reduce; returns the loss."""
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.to(grads[0].device if grads else loss.device)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[-1:].cpu()

    def step(self, optimizer) -> None:
        """The optimiser step; in fp16 the scaler's, which skips steps with overflowed gradients
        and adjusts its scale (one scaler may serve several optimisers: GradScaler tracks each)."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()} if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
