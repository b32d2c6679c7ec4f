"""Where genlab keeps files that outlive a run: downloaded datasets, later feature extractors."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$GENLAB_CACHE, else $XDG_CACHE_HOME/genlab, else ~/.cache/genlab."""
    if os.environ.get("GENLAB_CACHE"):
        return Path(os.environ["GENLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genlab"
