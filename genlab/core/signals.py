"""Ctrl-C and SIGTERM as a request to stop where the work can be kept, not as a kill.

Used by the training loop (stop after the current step, save a checkpoint) and by the trainings
genlab caches (stop after the current step, keep its progress: genlab.core.progress).
"""

from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """While installed, the first Ctrl-C or SIGTERM sets `requested` and prints `notice`; a second
    one raises KeyboardInterrupt at once. Handlers can only be set in the main thread; elsewhere it
    installs nothing and `requested` stays False."""

    def __init__(self, notice: str):
        self.notice = notice
        self.requested = False
        self.previous: dict = {}

    def __call__(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\ngenlab: {self.notice} (again to abort)", file=sys.stderr)

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self)
        return self

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
