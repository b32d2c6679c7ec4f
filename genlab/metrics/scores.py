"""Sample-quality metrics as pure functions of features (torch tensors [N, D]) or class logits.

Each function cites the paper it implements. Statistics are computed in float64; nearest-neighbour
distances in chunks so that 10,000 x 10,000 comparisons never hold a full matrix in memory.
"""

from __future__ import annotations

import math
import warnings

import torch


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64)


# ---------------------------------------------------------------- FID

def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and covariance [D, D] (unbiased, n - 1) of features [N, D], in float64."""
    f = _f64(features)
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues from
    rounding (a near-singular covariance) are clipped to zero instead of turning into NaN."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})   (Heusel et al. 2017, arXiv:1706.08500).

    Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2}), a symmetric PSD product whose eigenvalues
    `eigvalsh` finds stably even when a covariance is singular (fewer samples than dimensions).
    """
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fid = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return max(float(fid), 0.0)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


# ---------------------------------------------------------------- KID

def polynomial_mmd(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3   (Binkowski et al. 2018,
    arXiv:1801.01401); the cross term is averaged over all m^2 pairs, as in the authors' code."""
    x, y = _f64(real), _f64(fake)
    d, m = x.shape[1], x.shape[0]
    k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    n = y.shape[0]
    term_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(term_x + term_y - 2 * k_xy.mean())


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> dict:
    """Mean and std of polynomial MMD^2 over random subsets drawn without replacement.

    With fewer samples than `subset_size` the subsets shrink to what there is (and to fewer
    subsets when all of them would be the same), with a warning rather than an error."""
    size = min(subset_size, len(real), len(fake))
    count = subsets
    if size < subset_size:
        count = 1 if size == len(real) == len(fake) else subsets
        warnings.warn(f"KID: {min(len(real), len(fake))} samples are fewer than the subset size "
                      f"{subset_size}; using {count} subset(s) of {size}", stacklevel=2)
    if size < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    values = []
    for _ in range(count):
        r = real[torch.randperm(len(real), generator=generator)[:size]]
        f = fake[torch.randperm(len(fake), generator=generator)[:size]]
        values.append(polynomial_mmd(r, f))
    v = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(v.mean()), "std": float(v.std(unbiased=False)), "subsets": count, "subset_size": size}


# ---------------------------------------------------------------- Inception Score

def inception_score(logits: torch.Tensor, splits: int = 10, generator: torch.Generator | None = None) -> dict:
    """exp(E_x KL(p(y|x) || p(y))) on `splits` parts of the shuffled samples   (Salimans et al. 2016,
    arXiv:1606.03498); p(y) is the mean prediction within each part."""
    logits = _f64(logits)[torch.randperm(len(logits), generator=generator)]
    scores = []
    for part in logits.chunk(splits):
        log_p = part.log_softmax(1)
        log_py = part.softmax(1).mean(0).log()
        scores.append((log_p.exp() * (log_p - log_py)).sum(1).mean().exp())
    s = torch.stack(scores)
    return {"mean": float(s.mean()), "std": float(s.std(unbiased=False)) if len(s) > 1 else 0.0}


# ---------------------------------------------------------------- manifold metrics

def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [len(a), len(b)] (float32 matmul form; clamped at 0)."""
    a2, b2 = a.square().sum(1, keepdim=True), b.square().sum(1)
    return (a2 + b2 - 2 * a @ b.T).clamp(min=0).sqrt()


def knn_radii(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of every point to its k-th nearest other point [N] (the point itself excluded)."""
    f = features.float()
    out = []
    for start in range(0, len(f), chunk):
        d = pairwise_distances(f[start:start + chunk], f)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0 is the point itself
    return torch.cat(out)


def _ball_counts(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048):
    """For each point, how many balls B(centre, radius) contain it [len(points)], and for each
    centre whether any point falls in its ball [len(centres)]."""
    counts = torch.zeros(len(points), dtype=torch.int64)
    hit = torch.zeros(len(centres), dtype=torch.bool)
    c = centres.float()
    for start in range(0, len(points), chunk):
        inside = pairwise_distances(points[start:start + chunk].float(), c) <= radii
        counts[start:start + chunk] = inside.sum(1)
        hit |= inside.any(0)
    return counts, hit


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3,
                     real_radii: torch.Tensor | None = None) -> dict:
    """Improved precision and recall   (Kynkäänniemi et al. 2019, arXiv:1904.06991): precision is
    the share of fakes inside the real manifold (union of k-NN balls of the real points), recall
    the share of reals inside the fake manifold."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    fake_counts, _ = _ball_counts(fake, real, real_radii)
    real_counts, _ = _ball_counts(real, fake, knn_radii(fake, k))
    return {"precision": float((fake_counts > 0).float().mean()), "recall": float((real_counts > 0).float().mean())}


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5,
                     real_radii: torch.Tensor | None = None) -> dict:
    """Density and coverage   (Naeem et al. 2020, arXiv:2002.09797): density counts how many real
    k-NN balls hold each fake (1 on average for a perfect model, can exceed 1); coverage is the
    share of real balls that hold at least one fake."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    counts, hit = _ball_counts(fake, real, real_radii)
    return {"density": float(counts.double().mean() / k), "coverage": float(hit.float().mean())}


# ---------------------------------------------------------------- classes

def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total-variation distance between two histograms of shares (0 = the same, 1 = disjoint)."""
    return float(0.5 * (p - q).abs().sum())


def class_coverage(predicted: torch.Tensor, data_histogram: torch.Tensor, min_share: float = 0.1) -> dict:
    """Mode collapse as plain numbers: how many of the data's classes the classifier finds in the
    samples (a class counts when it gets at least `min_share` of its share in the data), and the
    total-variation distance between the two class histograms (0 = same mix, 1 = disjoint)."""
    num_classes = len(data_histogram)
    p_data = data_histogram.double() / data_histogram.sum()
    p_fake = torch.bincount(predicted, minlength=num_classes)[:num_classes].double() / len(predicted)
    found = int(((p_fake >= min_share * p_data) & (p_data > 0)).sum())
    return {"classes_found": found, "num_classes": int((p_data > 0).sum()),
            "class_tv": total_variation(p_fake, p_data), "histogram": p_fake.tolist()}


# ---------------------------------------------------------------- perceptual path length

def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b at fractions t [N]   (Shoemake 1985)."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = (a_n * b_n).sum(1).clamp(-1, 1).acos().unsqueeze(1)
    so = omega.sin()
    t = t.unsqueeze(1)
    # where a and b are (nearly) parallel, slerp is lerp
    safe = so.abs() > 1e-7
    w_a = torch.where(safe, ((1 - t) * omega).sin() / so.where(safe, torch.ones_like(so)), 1 - t)
    w_b = torch.where(safe, (t * omega).sin() / so.where(safe, torch.ones_like(so)), t)
    return w_a * a + w_b * b


def path_lengths(distances: torch.Tensor, epsilon: float) -> torch.Tensor:
    """d(G(slerp(t)), G(slerp(t + eps))) / eps^2 for each pair, as in StyleGAN (Karras et al. 2019,
    arXiv:1812.04948) with squared feature distance for d."""
    return _f64(distances) / epsilon ** 2


def perceptual_path_length(lengths: torch.Tensor) -> float:
    """Mean of the path lengths between their 1st and 99th percentiles (StyleGAN's filtering)."""
    lengths = _f64(lengths)
    lo, hi = torch.quantile(lengths, 0.01), torch.quantile(lengths, 0.99)
    kept = lengths[(lengths >= lo) & (lengths <= hi)]
    return float(kept.mean()) if len(kept) else math.nan


# ---------------------------------------------------------------- data copying

def nearest_distances(points: torch.Tensor, reference: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Distance of every point to its nearest reference point [len(points)]."""
    ref = reference.float()
    return torch.cat([pairwise_distances(points[i:i + chunk].float(), ref).min(1).values
                      for i in range(0, len(points), chunk)])


def kmeans(x: torch.Tensor, k: int, iterations: int = 20, seed: int = 0) -> torch.Tensor:
    """Centroids [k, D] by Lloyd's algorithm from k distinct points drawn with a fixed seed."""
    x = x.float()
    centroids = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k]].clone()
    for _ in range(iterations):
        cells = assign_cells(x, centroids)
        for c in range(k):
            members = x[cells == c]
            if len(members):
                centroids[c] = members.mean(0)
    return centroids


def assign_cells(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([pairwise_distances(x[i:i + chunk].float(), centroids).argmin(1) for i in range(0, len(x), chunk)])


def mann_whitney_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """The normal approximation of the Mann-Whitney U statistic that values of `b` exceed values of
    `a` (ties count a half): 0 when they are alike, negative when b's values are smaller."""
    m, n = len(a), len(b)
    both = torch.cat([a, b]).double()
    order = both.argsort()
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, m + n + 1, dtype=torch.float64)
    values, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # ties share their mean rank
        sums = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, ranks)
        ranks = (sums / counts)[inverse]
    u = float(ranks[m:].sum()) - n * (n + 1) / 2  # pairs (a_i, b_j) with b_j > a_i
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


def data_copying(train: torch.Tensor, heldout: torch.Tensor, fake: torch.Tensor, cells: int | None = None,
                 min_per_cell: int = 20) -> dict:
    """Meehan et al. 2020, "A Non-Parametric Test to Detect Data-Copying in Generative Models"
    (arXiv:2004.05675): partition the training features into cells (k-means); in each cell compare
    the distance from each generated point to its nearest training point with the same distance for
    held-out real points (Mann-Whitney Z); C_T is their average weighted by the held-out points per
    cell. Near 0: samples sit as far from the training images as unseen real images do; well below
    0: closer, as copies would. p is the one-sided p-value of the null "no copying" (C_T ~ N(0, 1))."""
    k = cells or max(3, min(20, len(heldout) // 50))
    centroids = kmeans(train, k)
    cell_h, cell_f = assign_cells(heldout, centroids), assign_cells(fake, centroids)
    d_h, d_f = nearest_distances(heldout, train), nearest_distances(fake, train)
    total, weight, used = 0.0, 0, 0
    for c in range(k):
        in_h, in_f = d_h[cell_h == c], d_f[cell_f == c]
        if len(in_h) < min_per_cell or len(in_f) < min_per_cell:
            continue
        total += len(in_h) * mann_whitney_z(in_h, in_f)
        weight += len(in_h)
        used += 1
    if not weight:
        return {"ct": None, "p_value": None, "cells": 0}
    ct = total / weight
    return {"ct": ct, "p_value": 0.5 * (1 + math.erf(ct / math.sqrt(2))), "cells": used,
            "median_distance_ratio": float(d_f.median() / d_h.median().clamp(min=1e-12))}


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two lists (ties get their mean rank)."""
    def ranks(v):
        t = torch.tensor(v, dtype=torch.float64)
        order = t.argsort()
        r = torch.empty_like(t)
        r[order] = torch.arange(len(t), dtype=torch.float64)
        for value in torch.unique(t):
            same = t == value
            r[same] = r[same].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))
