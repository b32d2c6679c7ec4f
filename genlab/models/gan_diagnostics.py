"""The GAN's own failures, watched while it trains (the family offers these through `Diagnosed`;
the Trainer runs them without knowing what a discriminator is):

- D overpowering G: the 50-step average of D(G(z)) below 0.1 with D right >= 95% of the time (for
  the losses without probabilities, D right >= 95%), held for 50 more steps;
- mode collapse: 64 samples spread less than a quarter as much as real images do, or (with
  --eval-every) the evaluation classifier finds fewer classes than the data has; two probes in a row;
- too little data: D scores real images it never saw at least 40% of the way from training images
  towards fakes (the drift Karras et al. 2020 watch); two probes in a row.

The probes look at the G being trained, not its average, which D never plays against, and start
after WARMUP steps: an untrained G emits near-identical blobs at first, which is not collapse.
"""

from __future__ import annotations

import torch

from genlab.models.common import balanced_labels
from genlab.models.diagnosis import WINDOW, Diagnosis, History, Watch

WARMUP = 1000  # steps before the probes judge
COLLAPSE_RATIO = 0.25  # samples' spread below a quarter of the data's (healthy MLP GANs: >= 0.38 by step 600)
DRIFT = 0.4  # held-out real images scored 40% of the way towards fakes (healthy: |drift| < 0.1)


def pairwise_spread(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images (in [0, 1] pixels): the spread of a batch."""
    x = images.float().flatten(1) / 255
    d = torch.cdist(x, x)
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


class GanWatch(Watch):
    """The three GAN failures above, for a `Discriminated` family with `sample(..., averaged=False)`."""

    step_kinds = ("d_overpowering",)
    probe_kinds = ("mode_collapse", "d_overfitting")

    def __init__(self, model, train: tuple[torch.Tensor, torch.Tensor],
                 heldout: tuple[torch.Tensor, torch.Tensor] | None, seed: int = 0):
        self.model, self.seed = model, seed
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(train[0]), generator=gen)[:256]
        self.train = (train[0][pick], train[1][pick])
        self.heldout = None
        if heldout is not None:
            pick = torch.randperm(len(heldout[0]), generator=gen)[:256]
            self.heldout = (heldout[0][pick], heldout[1][pick])
        self.data_spread = pairwise_spread(self.train[0][:64])
        self.overpowered_for = 0  # consecutive steps the windowed overpowering condition has held
        self.strikes = {"mode_collapse": 0, "d_overfitting": 0}
        self.last_drift: float | None = None

    # ---------------------------------------------------------------- per step

    def observe(self, step: int, history: History) -> list[Diagnosis]:
        probabilities = self.model.d_outputs_probabilities
        d_fake, d_acc = history.mean("d_fake"), history.mean("d_acc")
        holds = d_acc is not None and d_acc >= 0.95 and not (probabilities and (d_fake is None or d_fake > 0.1))
        self.overpowered_for = self.overpowered_for + 1 if holds else 0
        if self.overpowered_for < WINDOW:  # the 50-step average must stay there for 50 more steps:
            return []                       # DCGAN's D often wins briefly in its first hundred steps
        g = history.mean("grad_norm_g")
        g_then = 10 ** history.log_mean["grad_norm_g"] if "grad_norm_g" in history.log_mean else None
        evidence = {"d_fake": d_fake, "d_acc": d_acc, "grad_norm_g": g, "grad_norm_g_history": g_then}
        g_text = (f"; G's gradient norm is {g:.3g} (it was about {g_then:.3g})"
                  if g is not None and g_then and g_then > 1e-12 else "")
        shown = f"D(G(z)) has averaged {d_fake:.3f}" if probabilities else \
            f"D has told real from fake {d_acc:.0%} of the time"
        lasting = f"{WINDOW} steps (and below 0.1 for {2 * WINDOW})" if probabilities else \
            f"{WINDOW} steps (and above 95% for {2 * WINDOW})"
        return [Diagnosis("d_overpowering", step,
                          f"The discriminator is overpowering the generator: {shown} over the last "
                          f"{lasting}{g_text}. G gets little useful signal. Try a lower D learning rate "
                          "(--lr-d), spectral normalisation (--spectral-norm), --augment translation,cutout, or "
                          "the non-saturating loss.", evidence)]

    # ---------------------------------------------------------------- every few steps

    def probe(self, step: int, scores: dict | None = None) -> list[Diagnosis]:
        """Sample diversity, D's gap between training and held-out images, and (from evaluation
        scores, when the run has them) the classes the evaluator finds."""
        if step < WARMUP:
            return []
        found = [self._sustained("mode_collapse", self._collapse(step, scores))]
        if self.heldout is not None:
            found.append(self._sustained("d_overfitting", self._overfitting(step)))
        return [d for d in found if d is not None]

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
                         "Try --ema 0.999, --conditional, a lower learning rate, --loss wgan-gp, or --mode-seeking 0.1 "
                         "(MSGAN: G is pushed to spread its images as its noise spreads).",
                         {"diversity_ratio": ratio, "classes_found": classes})

    def _overfitting(self, step: int) -> Diagnosis | None:
        """Where D places real images it never saw, between training images and fakes (Karras et
        al. 2020, arXiv:2006.06676, watch the same drift): 0 = like training images, 1 = like fakes.
        Scale-free, so it reads the same for every loss."""
        gen = torch.Generator().manual_seed(self.seed + 2)
        k = self.model.conditional_classes
        fake_labels = balanced_labels(len(self.train[0]), k) if k else None
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
