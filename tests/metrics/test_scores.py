"""Metrics against reference values: closed forms, constructed point clouds, torchmetrics."""

import math
import warnings

import pytest
import torch

from genlab.metrics import scores


def gaussian(n, d, seed, mean=0.0, scale=1.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + mean


def test_fid_of_a_set_with_itself_is_zero():
    x = gaussian(2000, 16, 0)
    assert scores.fid(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_a_mean_shift_is_its_squared_length():
    x = gaussian(2000, 16, 0)
    shift = torch.linspace(0.1, 0.5, 16, dtype=torch.float64)
    assert scores.fid(x, x + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    grows = [scores.fid(x, x + s * shift) for s in (0.5, 1, 2, 4)]
    assert grows == sorted(grows) and grows[0] > 0


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    mu1, mu2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    expected = 5.0 + sum((a.sqrt() - b.sqrt()) ** 2 for a, b in zip(s1, s2))  # |dmu|^2 + sum (sd1 - sd2)^2
    got = scores.frechet_distance(mu1, torch.diag(s1).double(), mu2, torch.diag(s2).double())
    assert got == pytest.approx(float(expected), rel=1e-10)


def test_fid_with_singular_covariances_is_finite():
    a, b = gaussian(10, 64, 1), gaussian(10, 64, 2)  # 10 points in 64 dimensions: rank 9
    value = scores.fid(a, b)
    assert math.isfinite(value) and value > 0
    assert scores.fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_is_unbiased_for_identical_distributions():
    gen = torch.Generator().manual_seed(0)
    values = [scores.kid(gaussian(400, 8, 2 * i), gaussian(400, 8, 2 * i + 1), subsets=5, subset_size=200,
                         generator=gen)["mean"] for i in range(40)]
    v = torch.tensor(values)
    assert abs(float(v.mean())) < 3 * float(v.std()) / math.sqrt(len(v))
    shifted = scores.kid(gaussian(400, 8, 0), gaussian(400, 8, 1, mean=0.5), subsets=5, subset_size=200, generator=gen)
    assert shifted["mean"] > 10 * float(v.std())


def test_kid_with_few_samples_warns_and_shrinks():
    with pytest.warns(UserWarning, match="fewer than the subset size 1000; using 1 subset\\(s\\) of 50"):
        out = scores.kid(gaussian(50, 4, 0), gaussian(50, 4, 1))
    assert out["subsets"] == 1 and out["subset_size"] == 50
    with pytest.warns(UserWarning, match="using 100 subset\\(s\\) of 60"):
        assert scores.kid(gaussian(500, 4, 0), gaussian(60, 4, 1))["subset_size"] == 60


def one_hot_logits(classes, num_classes=10, sharp=30.0):
    return torch.nn.functional.one_hot(classes, num_classes).double() * sharp


def test_inception_score_extremes():
    one_class = one_hot_logits(torch.zeros(1000, dtype=torch.long))
    assert scores.inception_score(one_class)["mean"] == pytest.approx(1.0, abs=1e-6)
    balanced = one_hot_logits(torch.arange(1000) % 10)
    assert scores.inception_score(balanced, splits=1)["mean"] == pytest.approx(10.0, rel=1e-3)
    # ten shuffled splits of 100 are not each perfectly balanced: a little under 10
    assert 9.3 < scores.inception_score(balanced)["mean"] < 10.0
    uniform = torch.zeros(1000, 10)
    assert scores.inception_score(uniform)["mean"] == pytest.approx(1.0)


def modes(n_per_mode, which, seed=0):
    """Tight 2-D Gaussian clusters around 8 well-separated centres on a circle (one per mode)."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    centres = 20 * torch.stack([angles.cos(), angles.sin()], 1)
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([centres[m] + 0.5 * torch.randn(n_per_mode, 2, generator=gen) for m in which])


def test_precision_recall_of_a_generator_covering_half_the_modes():
    real = modes(200, range(8), seed=0)
    half = modes(400, range(4), seed=1)
    pr = scores.precision_recall(real, half, k=3)
    assert pr["precision"] > 0.95 and pr["recall"] == pytest.approx(0.5, abs=0.03)
    same = scores.precision_recall(real, modes(200, range(8), seed=2), k=3)
    assert same["precision"] > 0.95 and same["recall"] > 0.95
    off = scores.precision_recall(real, modes(200, range(8), seed=3) + 7.0, k=3)
    assert off["precision"] < 0.05 and off["recall"] < 0.05


def test_density_and_coverage():
    real = modes(200, range(8), seed=0)
    dc = scores.density_coverage(real, modes(400, range(4), seed=1), k=5)
    assert dc["coverage"] == pytest.approx(0.5, abs=0.03)
    same = scores.density_coverage(real, modes(200, range(8), seed=2), k=5)
    assert same["density"] == pytest.approx(1.0, abs=0.15) and same["coverage"] > 0.9


def test_knn_radii_exclude_the_point_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert scores.knn_radii(points, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert scores.knn_radii(points, 2, chunk=3).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_class_coverage_sees_collapse():
    data_hist = torch.full((10,), 100)
    collapsed = scores.class_coverage(torch.full((1000,), 3), data_hist)
    assert collapsed["classes_found"] == 1 and collapsed["class_tv"] == pytest.approx(0.9)
    balanced = scores.class_coverage(torch.arange(1000) % 10, data_hist)
    assert balanced["classes_found"] == 10 and balanced["class_tv"] == pytest.approx(0.0)


def test_slerp_endpoints_and_parallel_vectors():
    a, b = gaussian(5, 10, 0), gaussian(5, 10, 1)
    torch.testing.assert_close(scores.slerp(a, b, torch.zeros(5, dtype=torch.float64)), a)
    torch.testing.assert_close(scores.slerp(a, b, torch.ones(5, dtype=torch.float64)), b)
    mid = scores.slerp(a, 2 * a, torch.full((5,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(mid, 1.5 * a)  # parallel: falls back to linear interpolation


def test_ppl_filters_outliers():
    lengths = torch.cat([torch.ones(98), torch.tensor([0.0, 1e9])])
    assert scores.perceptual_path_length(lengths) == pytest.approx(1.0)


# ---------------------------------------------------------------- torchmetrics agreement

class FixedFeatures(torch.nn.Module):
    """A fixed random projection of the pixels: the same feature module for both libraries."""

    def __init__(self, dim=32):
        super().__init__()
        self.proj = torch.nn.Linear(64, dim)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        self.num_features = dim

    def forward(self, x):
        return self.proj(x.float().flatten(1) / 255)


def pixel_sets():
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (300, 1, 8, 8), generator=gen, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 40).clamp(0, 255).to(torch.uint8)
    fake = fake[torch.randperm(300, generator=gen)][:250]
    return real, fake


def test_fid_kid_is_agree_with_torchmetrics():
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = pixel_sets()
    net = FixedFeatures()
    with torch.no_grad():
        f_real, f_fake = net(real), net(fake)

    ref = tm_fid.FrechetInceptionDistance(feature=net)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    assert scores.fid(f_real, f_fake) == pytest.approx(float(ref.compute()), rel=1e-3)

    # one subset of all samples: no random draws, so both libraries see the same sets
    ref_kid = KernelInceptionDistance(feature=net, subsets=1, subset_size=250)
    ref_kid.update(real[:250], real=True)
    ref_kid.update(fake, real=False)
    ours = scores.kid(f_real[:250], f_fake, subsets=1, subset_size=250)
    assert ours["mean"] == pytest.approx(float(ref_kid.compute()[0]), rel=1e-3)

    ref_is = InceptionScore(feature=net, splits=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_is.update(fake)
        expected = float(ref_is.compute()[0])
    assert scores.inception_score(f_fake, splits=1)["mean"] == pytest.approx(expected, rel=1e-3)
