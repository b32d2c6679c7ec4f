"""What is going wrong in training, said in plain words while it happens.

The tutorial genlab grew from names four ways GAN training fails: the discriminator and generator
out of balance, vanishing or exploding gradients, mode collapse, too little data. `Diagnostics`
runs watches over each step's logs (cheap: a few floats into windows) and, every few steps, their
probes of the model. When a failure starts it is said once, as one sentence with the evidence and a
remedy; when it ends it may be said again if it returns after a quiet while.

`GradientWatch` serves every family (each logs `grad_norm` or `grad_norm_<net>`); a family adds its
own watches through the `Diagnosed` protocol (the GAN's are in gan_diagnostics.py). Non-finite
values are not diagnosed here: the runtime stops the run before they reach an optimiser.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW = 50  # steps over which a condition must hold
FAR = 1.7  # "far" from the gradient history: a factor of 10^1.7 = 50
QUIET = 500  # steps before a failure that has ended may be reported again


@dataclass
class Diagnosis:
    kind: str
    step: int
    sentence: str
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"step": self.step, "kind": self.kind, "sentence": self.sentence, "evidence": self.evidence}


class History:
    """The last WINDOW values of every logged number, and a slow running mean of each gradient
    norm's log10 (a horizon of ~20 windows, so a sudden change stands out)."""

    def __init__(self):
        self.recent: dict[str, deque] = {}
        self.sums: dict[str, float] = {}  # of each window, kept as values come and go (a step costs O(keys))
        self.log_mean: dict[str, float] = {}
        self.steps = 0

    def push(self, logs: dict[str, float]) -> None:
        self.steps += 1
        for key, value in logs.items():
            window = self.recent.get(key)
            if window is None:
                window = self.recent[key] = deque(maxlen=WINDOW)
                self.sums[key] = 0.0
            if len(window) == WINDOW:
                self.sums[key] -= window[0]
            window.append(value)
            self.sums[key] += value
        if self.steps % WINDOW == 0:  # exact again once a window, so rounding cannot drift
            self.sums = {k: sum(w) for k, w in self.recent.items()}

    def mean(self, key: str) -> float | None:
        """The mean over the last WINDOW steps (None until there are that many)."""
        values = self.recent.get(key)
        return self.sums[key] / WINDOW if values and len(values) == WINDOW else None

    def grad_keys(self) -> list[str]:
        return [k for k in self.recent if k.startswith("grad_norm")]

    def settle(self) -> None:
        """Move each gradient norm's slow history towards the latest value (after the watches read it)."""
        for key in self.grad_keys():
            now = math.log10(max(self.recent[key][-1], 1e-30))
            old = self.log_mean.get(key)
            self.log_mean[key] = now if old is None else 0.999 * old + 0.001 * now


class Watch:
    """A watch of one kind of failure: `observe` after each step, `probe` every few steps. Each
    returns the diagnoses that hold now (reported only when they start)."""

    step_kinds: tuple[str, ...] = ()
    probe_kinds: tuple[str, ...] = ()

    def observe(self, step: int, history: History) -> list[Diagnosis]:
        return []

    def probe(self, step: int, scores: dict | None) -> list[Diagnosis]:
        return []


def net_name(key: str) -> str:
    """`grad_norm_d` -> "D", `grad_norm` -> "the model"."""
    return key.removeprefix("grad_norm_").upper() if key != "grad_norm" else "the model"


class GradientWatch(Watch):
    """A network's 50-step mean gradient norm 50x below (vanishing) or above (exploding) its slow
    history, after the first 200 steps."""

    step_kinds = ("vanishing_gradients", "exploding_gradients")

    def observe(self, step: int, history: History) -> list[Diagnosis]:
        out = []
        for key in history.grad_keys():
            net = net_name(key)
            Net = net[0].upper() + net[1:]
            past, recent = history.log_mean.get(key), history.mean(key)
            if past is None or history.steps <= 4 * WINDOW or recent is None:
                continue
            level = math.log10(max(recent, 1e-30))
            evidence = {"net": net, "recent": recent, "history": 10 ** past}
            if level < past - FAR:
                out.append(Diagnosis("vanishing_gradients", step,
                           f"{Net}'s gradients are vanishing: their norm has averaged {recent:.3g} over the last "
                           f"{WINDOW} steps, against about {10 ** past:.3g} before. {net} has stopped learning; "
                           "check for saturated activations, raise the learning rate, or use the non-saturating "
                           "loss.", evidence))
            elif level > past + FAR:
                out.append(Diagnosis("exploding_gradients", step,
                           f"{Net}'s gradients are exploding: their norm has averaged {recent:.3g} over the last "
                           f"{WINDOW} steps, against about {10 ** past:.3g} before. Lower the learning rate or add "
                           "spectral normalisation / a gradient penalty (--loss wgan-gp).", evidence))
        return out


class Diagnostics:
    """Watches over one run, and the reporting of each failure once, as it starts."""

    def __init__(self, watches: list[Watch]):
        self.watches = watches
        self.history = History()
        self.active: set[str] = set()
        self.reported: dict[str, int] = {}  # kind -> step it was last reported

    def observe(self, step: int, logs: dict[str, float]) -> list[Diagnosis]:
        self.history.push(logs)
        found = [d for w in self.watches for d in w.observe(step, self.history)]
        self.history.settle()
        return self._report(found, tuple(k for w in self.watches for k in w.step_kinds))

    def probe(self, step: int, scores: dict | None = None) -> list[Diagnosis]:
        found = [d for w in self.watches for d in w.probe(step, scores)]
        return self._report(found, tuple(k for w in self.watches for k in w.probe_kinds))

    def _report(self, found: list[Diagnosis], kinds: tuple[str, ...]) -> list[Diagnosis]:
        """New diagnoses only: a failure is said when it starts, and again only if it returns after
        having ended for a while (QUIET steps)."""
        current = {d.kind: d for d in found}
        new = [d for kind, d in current.items() if kind not in self.active
               and d.step - self.reported.get(kind, -QUIET) >= QUIET]
        for d in new:
            self.reported[d.kind] = d.step
        self.active = (self.active - set(kinds)) | set(current)
        return new
