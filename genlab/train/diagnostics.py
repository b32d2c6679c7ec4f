"""What is going wrong in GAN training, said in plain words while it happens.

The tutorial genlab grew from names four ways GAN training fails: the discriminator and generator
out of balance, vanishing or exploding gradients, mode collapse, too little data. `Diagnostics`
watches each step's logs (cheap: a few floats into windows) and every `every` steps probes the model
(64 samples of the G being trained, not its average, which D never plays against; D's scores on 256
training and 256 held-out images). When a failure starts it says so once, as one sentence with the
evidence and a remedy, and keeps it in RUN/diagnostics.jsonl; when the failure ends it may be said
again if it returns. Non-finite values are not diagnosed here: the runtime stops the run before they
reach an optimiser (genlab.train.runtime).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch

WINDOW = 50  # steps over which a condition must hold
FAR = 1.7  # "far" from the gradient history: a factor of 10^1.7 = 50
WARMUP = 1000  # steps before the probes judge: an untrained G is expected to emit near-identical blobs
QUIET = 500  # steps before a failure that has ended may be reported again
COLLAPSE_RATIO = 0.25  # samples' spread below a quarter of the data's (healthy MLP GANs: >= 0.38 by step 600)
NET_NAMES = {"grad_norm_d": "D", "grad_norm_g": "G"}  # other families log one `grad_norm`
DRIFT = 0.4  # held-out real images scored 40% of the way towards fakes (healthy: |drift| < 0.1)


@dataclass
class Diagnosis:
    kind: str
    step: int
    sentence: str
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"step": self.step, "kind": self.kind, "sentence": self.sentence, "evidence": self.evidence}


def pairwise_spread(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images (in [0, 1] pixels): the spread of a batch."""
    x = images.float().flatten(1) / 255
    d = torch.cdist(x, x)
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


class Diagnostics:
    """Per-step observation of a family's logs, periodic probes of the model, and the one-time
    reporting of each failure as it starts."""

    def __init__(self, model, train_images: torch.Tensor, train_labels: torch.Tensor,
                 heldout: tuple[torch.Tensor, torch.Tensor] | None, every: int = 100, seed: int = 0,
                 probabilities: bool = True):
        self.model, self.every, self.seed = model, every, seed
        self.probabilities = probabilities  # D's outputs are probabilities (BCE losses)
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(train_images), generator=gen)[:256]
        self.train = (train_images[pick], train_labels[pick])
        self.heldout = None
        if heldout is not None:
            pick = torch.randperm(len(heldout[0]), generator=gen)[:256]
            self.heldout = (heldout[0][pick], heldout[1][pick])
        self.data_spread = pairwise_spread(self.train[0][:64])
        self.recent: dict[str, deque] = {}
        self.log_history: dict[str, float] = {}  # slow running mean of log10 gradient norms
        self.seen_steps = 0
        self.active: set[str] = set()
        self.reported: dict[str, int] = {}  # kind -> step it was last reported
        self.overpowered_for = 0  # consecutive steps the windowed overpowering condition has held
        self.strikes = {"mode_collapse": 0, "d_overfitting": 0}
        self.last_drift: float | None = None

    # ---------------------------------------------------------------- per step

    def observe(self, step: int, logs: dict[str, float]) -> list[Diagnosis]:
        self.seen_steps += 1
        for key, value in logs.items():  # every family's gradient norms; the GAN's D outputs
            if key in ("d_fake", "d_acc") or key.startswith("grad_norm"):
                self.recent.setdefault(key, deque(maxlen=WINDOW)).append(value)
        found = [self._overpowering(step), *self._gradients(step)]
        return self._report(found, ("d_overpowering", "vanishing_gradients", "exploding_gradients"))

    def _mean(self, key: str) -> float | None:
        values = self.recent.get(key)
        return sum(values) / len(values) if values and len(values) == WINDOW else None

    def _overpowering(self, step: int) -> Diagnosis | None:
        d_fake, d_acc = self._mean("d_fake"), self._mean("d_acc")
        holds = d_acc is not None and d_acc >= 0.95 and not (self.probabilities and (d_fake is None or d_fake > 0.1))
        self.overpowered_for = self.overpowered_for + 1 if holds else 0
        if self.overpowered_for < WINDOW:  # the 50-step average must stay there for 50 more steps:
            return None                     # DCGAN's D often wins briefly in its first hundred steps
        g = self._mean("grad_norm_g")
        g_then = 10 ** self.log_history["grad_norm_g"] if "grad_norm_g" in self.log_history else None
        evidence = {"d_fake": d_fake, "d_acc": d_acc, "grad_norm_g": g, "grad_norm_g_history": g_then}
        g_text = (f"; G's gradient norm is {g:.3g} (it was about {g_then:.3g})"
                  if g is not None and g_then and g_then > 1e-12 else "")
        shown = f"D(G(z)) has averaged {d_fake:.3f}" if self.probabilities else \
            f"D has told real from fake {d_acc:.0%} of the time"
        lasting = f"{WINDOW} steps (and below 0.1 for {2 * WINDOW})" if self.probabilities else \
            f"{WINDOW} steps (and above 95% for {2 * WINDOW})"
        return Diagnosis("d_overpowering", step,
                         f"The discriminator is overpowering the generator: {shown} over the last "
                         f"{lasting}{g_text}. G gets little useful signal. Try a lower D learning rate "
                         "(--lr-d), spectral normalisation (--spectral-norm), --augment translation,cutout, or "
                         "the non-saturating loss.", evidence)

    def _gradients(self, step: int) -> list[Diagnosis | None]:
        out = []
        for key, recent in self.recent.items():
            if not key.startswith("grad_norm"):
                continue
            net = NET_NAMES.get(key, "the model")
            now = math.log10(max(recent[-1], 1e-30))
            history = self.log_history.get(key)
            mean_recent = self._mean(key)
            if history is not None and self.seen_steps > 4 * WINDOW and mean_recent is not None:
                level = math.log10(max(mean_recent, 1e-30))
                if level < history - FAR:
                    out.append(Diagnosis("vanishing_gradients", step,
                               f"{net[0].upper() + net[1:]}'s gradients are vanishing: their norm has averaged {mean_recent:.3g} over the "
                               f"last {WINDOW} steps, against about {10 ** history:.3g} before. {net} has stopped "
                               "learning; check for saturated activations, raise the learning rate, or use the "
                               "non-saturating loss.", {"net": net, "recent": mean_recent, "history": 10 ** history}))
                elif level > history + FAR:
                    out.append(Diagnosis("exploding_gradients", step,
                               f"{net[0].upper() + net[1:]}'s gradients are exploding: their norm has averaged {mean_recent:.3g} over "
                               f"the last {WINDOW} steps, against about {10 ** history:.3g} before. Lower the "
                               "learning rate or add spectral normalisation / a gradient penalty (--loss wgan-gp).",
                               {"net": net, "recent": mean_recent, "history": 10 ** history}))
            # the history moves slowly (a horizon of ~20 windows), so a sudden change stands out
            self.log_history[key] = now if history is None else 0.999 * history + 0.001 * now
        return out

    # ---------------------------------------------------------------- every `every` steps

    def probe(self, step: int, scores: dict | None = None) -> list[Diagnosis]:
        """Sample diversity, D's gap between training and held-out images, and (from evaluation
        scores, when the run has them) the classes the evaluator finds."""
        if step < WARMUP or not hasattr(self.model, "discriminate"):
            return []  # the probes judge a GAN (other families' samplers can be slow, and they have no D)
        found = [self._sustained("mode_collapse", self._collapse(step, scores))]
        if self.heldout is not None and hasattr(self.model, "discriminate"):
            found.append(self._sustained("d_overfitting", self._overfitting(step)))
        return self._report(found, ("mode_collapse", "d_overfitting"))

    def _sustained(self, kind: str, found: Diagnosis | None) -> Diagnosis | None:
        """A probe's finding counts from its second time in a row (one probe can be noise)."""
        self.strikes[kind] = self.strikes[kind] + 1 if found is not None else 0
        return found if self.strikes[kind] >= 2 else None

    def _collapse(self, step: int, scores: dict | None) -> Diagnosis | None:
        samples = self.model.sample(64, generator=torch.Generator().manual_seed(self.seed + 1), averaged=False)
        spread = pairwise_spread(samples)
        ratio = spread / max(self.data_spread, 1e-9)
        classes = (scores or {}).get("classes_found")
        k = (scores or {}).get("num_classes")
        few_classes = classes is not None and k is not None and classes < k
        if ratio >= COLLAPSE_RATIO and not few_classes:
            return None
        parts = []
        if ratio < COLLAPSE_RATIO:
            parts.append(f"the samples differ from each other {ratio:.0%} as much as real images do "
                         f"(mean pairwise distance {spread:.3g} vs {self.data_spread:.3g})")
        if few_classes:
            parts.append(f"the evaluation classifier finds only {classes} of the {k} classes")
        return Diagnosis("mode_collapse", step,
                         "Mode collapse: " + " and ".join(parts) + ". G is producing a few kinds of image. "
                         "Try --ema 0.999, --conditional, a lower learning rate, or --loss wgan-gp.",
                         {"diversity_ratio": ratio, "classes_found": classes})

    def _overfitting(self, step: int) -> Diagnosis | None:
        """Where D places real images it never saw, between training images and fakes (Karras et
        al. 2020, arXiv:2006.06676, watch the same drift): 0 = like training images, 1 = like fakes.
        Scale-free, so it reads the same for every loss."""
        gen = torch.Generator().manual_seed(self.seed + 2)
        k = getattr(self.model, "conditional_classes", None)
        fake_labels = torch.arange(len(self.train[0])) % k if k else None
        fakes = self.model.sample(len(self.train[0]), labels=fake_labels, generator=gen, averaged=False)
        on_train = float(self.model.discriminate(*self.train).mean())
        on_heldout = float(self.model.discriminate(*self.heldout).mean())
        on_fake = float(self.model.discriminate(fakes, fake_labels).mean())
        separation = on_train - on_fake
        if separation <= 0.1 * (abs(on_train) + abs(on_fake)) + 1e-3:
            return None  # D does not tell training images from fakes yet: no scale to measure against
        drift = (on_train - on_heldout) / separation
        self.last_drift = drift
        if drift < DRIFT:
            return None
        return Diagnosis("d_overfitting", step,
                         f"The discriminator is memorising the training images: it scores real images it never saw "
                         f"{drift:.0%} of the way from training images towards fakes (mean score {on_train:.3g} on "
                         f"training images, {on_heldout:.3g} on held-out, {on_fake:.3g} on fakes). There is too "
                         "little data for D; use --augment translation,cutout, more data, or stop earlier "
                         "(--eval-every keeps the best checkpoint).",
                         {"d_train": on_train, "d_heldout": on_heldout, "d_fake": on_fake, "drift": drift})

    # ---------------------------------------------------------------- reporting

    def _report(self, found: list[Diagnosis | None], kinds: tuple[str, ...]) -> list[Diagnosis]:
        """New diagnoses only: a failure is said when it starts, and again only if it returns after
        having ended for a while (QUIET steps)."""
        current = {d.kind: d for d in found if d is not None}
        new = [d for kind, d in current.items() if kind not in self.active
               and d.step - self.reported.get(kind, -QUIET) >= QUIET]
        for d in new:
            self.reported[d.kind] = d.step
        self.active = (self.active - set(kinds)) | set(current)
        return new
