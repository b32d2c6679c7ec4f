"""Data-parallel training under torchrun (PyTorch's launcher; one process per GPU or CPU worker).

`torchrun --nproc_per_node N genlab train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; genlab then
joins the process group (NCCL on GPUs, gloo on CPUs), every rank draws its share of each global
batch, gradients are averaged across ranks inside `Runtime.finish_grads`, and rank 0 alone writes
the run folder. Multi-node runs use the same command with torchrun's rendezvous flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from genlab.errors import GenlabError

# How long `barrier` waits for a rank's work done alone (the first rank training a first stage or a
# feature extractor into the cache before the others read it: a quarter of an hour and more on a
# CPU). A collective of the process group gives up after torch's default (30 minutes on gloo, 10 on
# NCCL) and would kill a run whose set-up takes longer; if the first rank fails instead, torchrun
# stops the others, so a long wait here never hangs a run.
SETUP_TIMEOUT = timedelta(hours=24)
_setup_group = None


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device, timeout: timedelta | None = None) -> Ranks:
    """Join the process group when launched by torchrun with more than one process (its collectives
    wait `timeout` at most; None: torch's default), and a gloo group for `barrier`."""
    global _setup_group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=timeout)
            _setup_group = dist.new_group(backend="gloo", timeout=SETUP_TIMEOUT)
        except (RuntimeError, ValueError) as err:
            raise GenlabError(f"could not join the torchrun process group ({err}); check the "
                              "rendezvous address and that every node runs the same command") from None
    return ranks


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK."""
    if device.type == "cuda" and ranks.world_size > 1:
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return device


def any_rank(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """True on every rank when it is true on any (so that all ranks stop at the same step)."""
    if ranks.world_size <= 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def rank0_value(value: float, ranks: Ranks, device: torch.device) -> float:
    """Rank 0's `value` on every rank (a clock reading, so that all ranks act on the same one)."""
    if ranks.world_size <= 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def broadcast_state(modules) -> None:
    """Start every rank from rank 0's weights and buffers. Buffers matter: a first stage's latent
    scale and VQ codebook are buffers, and a rank on another node with a cache of its own has
    trained its own first stage, not bit for bit rank 0's on a GPU or another CPU."""
    if dist.is_initialized():
        for module in modules:
            for t in (*module.parameters(), *module.buffers()):
                dist.broadcast(t.data, src=0)


def barrier() -> None:
    """Wait for every rank, up to SETUP_TIMEOUT: for the work one rank does alone before training."""
    if dist.is_initialized():
        dist.barrier(group=_setup_group)


def shutdown() -> None:
    global _setup_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _setup_group = None
