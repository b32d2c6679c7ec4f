"""Metrics of a model rather than of its samples: perceptual path length for a `LatentSpace`, the
test split's likelihood for a `Likelihood`."""

from __future__ import annotations

import copy
import math

import torch

from genlab.data import ImageSet
from genlab.metrics import scores
from genlab.metrics.features import Extractor
from genlab.models.protocols import EstimatedLikelihood, LatentSpace, Likelihood, LikelihoodBounds


def ppl(model, extractor: Extractor, n: int = 2000, epsilon: float = 1e-4, seed: int = 0,
        batch_size: int = 500) -> float | None:
    """Perceptual path length in Z (StyleGAN): slerp between latents, distance in the extractor's
    features (float64, so that a step of 1e-4 is not lost in rounding). None for a family without a
    latent space."""
    if not isinstance(model, LatentSpace):
        return None
    gen = torch.Generator().manual_seed(seed)
    net64 = copy.deepcopy(extractor.net).double().eval()
    lengths = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z0, z1 = torch.randn(m, model.latent_dim, generator=gen), torch.randn(m, model.latent_dim, generator=gen)
        t = torch.rand(m, generator=gen) * (1 - epsilon)
        with torch.no_grad():
            # decode gives [-1, 1]; the extractor takes [0, 1]
            a = (model.decode(scores.slerp(z0, z1, t)).double().cpu() + 1) / 2
            b = (model.decode(scores.slerp(z0, z1, t + epsilon)).double().cpu() + 1) / 2
            fa, fb = _features(net64(a)), _features(net64(b))
        lengths.append(scores.path_lengths((fa - fb).square().sum(1), epsilon))
    return scores.perceptual_path_length(torch.cat(lengths))


def _features(out) -> torch.Tensor:
    """The features of an extractor's output: (features, logits) for a classifier, else features."""
    return out[0] if isinstance(out, tuple) else out


def likelihood(model, test: ImageSet, limit: int = 10_000) -> dict | None:
    """Test-split negative log-likelihood in nats per image and bits per dimension, for a
    `Likelihood` (with the ELBO beside it for `LikelihoodBounds`)."""
    if not isinstance(model, Likelihood):
        return None
    if isinstance(model, EstimatedLikelihood):
        limit = min(limit, model.likelihood_images)
    images, labels = test.images[:limit], test.labels[:limit]
    conditional = bool(model.conditional_classes)
    if getattr(model, "takes_text", False):  # a model trained on captions: each test image's own
        from genlab.models.text import tokenize

        labels, conditional = tokenize(test.caption_texts()[:limit], warn=False), True

    def per_batch(fn) -> list:
        return [fn(images[i:i + 500], **({"labels": labels[i:i + 500]} if conditional else {}))
                for i in range(0, len(images), 500)]

    dims = model.likelihood_dims
    if isinstance(model, LikelihoodBounds):  # a VAE: the ELBO beside the importance-weighted estimate
        both = per_batch(model.likelihood_bounds)
        elbo, ll = (torch.cat([b[j].double().cpu() for b in both]) for j in (0, 1))
    else:
        elbo, ll = None, torch.cat([b.double().cpu() for b in per_batch(model.log_likelihood)])
    nll = float(-ll.mean())
    out = {"nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2))}
    if elbo is not None:
        out["neg_elbo_nats"] = float(-elbo.mean())
    return out
