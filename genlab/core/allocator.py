"""How the process's C allocator treats the tensors PyTorch frees on the CPU (no torch import here:
the CLI sets it before anything is allocated)."""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt's parameters, <malloc.h>


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A forward pass on the CPU allocates and frees tensors of several MB; by default glibc serves
    those with fresh mmap'ed pages, or trims its heap after they are freed, so every pass pays page
    faults on zeroed memory. Raising the mmap and trim thresholds (what PyTorch's CPU tuning guide
    gets by preloading jemalloc or tcmalloc) made the fashion latent-diffusion run's DDIM-50 sampling
    1.2-1.3x faster on 2 cores (benchmarks/results/latent_budget.md). Linux with glibc only; with
    another allocator preloaded, or with GENLAB_MALLOC=system, nothing changes. Returns whether the
    thresholds were set."""
    if sys.platform != "linux" or os.environ.get("GENLAB_MALLOC") == "system" \
            or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl has no libc.so.6 with mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20) and mallopt(M_TRIM_THRESHOLD, 1 << 30)
                and mallopt(M_TOP_PAD, 64 << 20))
