"""Domain-adaptation building blocks against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart.adaptation import (
    cdan_features,
    coral_loss,
    dann_coefficient,
    entropy,
    grad_reverse,
    mmd_loss,
    proxy_a_distance,
)
from headstart.data import load_bundled
from headstart.data.bundled import CORRUPTIONS, corrupt


def test_gradient_reversal_flips_the_gradient_sign_numerically():
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z @ w).sum()

    out = f(grad_reverse(x, coeff=0.7))
    assert torch.equal(grad_reverse(x, 0.7), x)  # identity forward
    (g,) = torch.autograd.grad(out, x)
    # central differences of f (no reversal) at x
    eps, num = 1e-6, torch.zeros_like(x)
    for i in range(5):
        for j in range(3):
            d = torch.zeros_like(x)
            d[i, j] = eps
            num[i, j] = (f(x.detach() + d) - f(x.detach() - d)) / (2 * eps)
    torch.testing.assert_close(g, -0.7 * num, atol=1e-8, rtol=1e-6)


def test_dann_coefficient_warms_up_from_zero_to_one():
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(1.0) == pytest.approx(2 / (1 + np.exp(-10)) - 1)
    values = [dann_coefficient(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] > 0.99


def test_coral_matches_numpy():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) * 2 + 1
    expected = ((np.cov(s, rowvar=False) - np.cov(t, rowvar=False)) ** 2).sum() / (4 * 36)
    got = coral_loss(torch.tensor(s), torch.tensor(t))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(coral_loss(torch.tensor(s), torch.tensor(s))) == pytest.approx(0.0, abs=1e-7)


def _mmd_numpy(s: np.ndarray, t: np.ndarray, h: float, scales) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        total = 0.0
        for i in range(len(a)):
            for j in range(len(b)):
                d2 = float(((a[i] - b[j]) ** 2).sum())
                total += sum(np.exp(-d2 / (sc * h)) for sc in scales)
        return total / (len(a) * len(b))

    return k(s, s) + k(t, t) - 2 * k(s, t)


def test_mmd_matches_a_direct_double_sum():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(12, 4)), rng.normal(size=(9, 4)) + 0.8
    scales = (0.5, 1.0, 2.0)
    got = mmd_loss(torch.tensor(s), torch.tensor(t), scales=scales, bandwidth=3.0)
    assert float(got) == pytest.approx(_mmd_numpy(s, t, 3.0, scales), rel=1e-5)
    # the default bandwidth is the median squared distance of the pooled sample
    pooled = np.vstack([s, t])
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    h = float(np.median(d2[~np.eye(len(pooled), dtype=bool)]))
    got = mmd_loss(torch.tensor(s), torch.tensor(t))
    assert float(got) == pytest.approx(_mmd_numpy(s, t, h, (0.25, 0.5, 1.0, 2.0, 4.0)), rel=1e-4)
    assert float(mmd_loss(torch.tensor(s), torch.tensor(s))) == pytest.approx(0.0, abs=1e-6)


def test_cdan_map_is_the_outer_product():
    f, g = torch.randn(3, 4), torch.softmax(torch.randn(3, 2), 1)
    m = cdan_features(f, g)
    assert m.shape == (3, 8)
    torch.testing.assert_close(m[1].view(2, 4), torch.outer(g[1], f[1]))


def test_entropy_of_uniform_and_certain_rows():
    p = torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(entropy(p), torch.tensor([np.log(4), 0.0], dtype=torch.float32))


def test_proxy_a_distance_separates_shifted_domains():
    rng = np.random.default_rng(0)
    same = proxy_a_distance(rng.normal(size=(300, 5)), rng.normal(size=(300, 5)))
    apart = proxy_a_distance(rng.normal(size=(300, 5)), rng.normal(size=(300, 5)) + 3)
    assert abs(same) < 0.4 and apart > 1.9


def test_corrupted_fashion_mnist_is_seeded_and_uses_every_corruption():
    clean = load_bundled("fashion-mnist", "test").arrays[:200]
    a, kinds = corrupt(clean, seed=0)
    b, _ = corrupt(clean, seed=0)
    assert np.array_equal(a, b) and set(kinds.tolist()) == set(range(len(CORRUPTIONS)))
    inverted = kinds == CORRUPTIONS.index("invert")
    assert np.array_equal(a[inverted], 255 - clean[inverted])
    shifted = load_bundled("fashion-mnist-corrupted", "all")
    assert len(shifted) == 10000 and shifted.classes == load_bundled("fashion-mnist").classes
    assert not np.array_equal(
        shifted.arrays[:50], load_bundled("fashion-mnist", "test").arrays[:50]
    )


def test_cluster_labels_recover_clusters_a_weak_classifier_gets_wrong():
    from headstart.adaptation.losses import cluster_labels

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 8)) * 4
    truth = np.repeat(np.arange(3), 100)
    features = centres[truth] + rng.normal(0, 1, (300, 8)) + 10.0  # a shared domain offset
    # a weak classifier: right on 50 % of the points, a random class on the rest
    guess = np.where(rng.random(300) < 0.5, truth, rng.integers(0, 3, 300))
    probs = np.full((300, 3), 0.2)
    probs[np.arange(300), guess] = 0.6
    assert (guess == truth).mean() < 0.75
    # one more point halfway between the first two clusters
    features = np.vstack([features, (centres[0] + centres[1]) / 2 + 10.0])
    probs = np.vstack([probs, np.full(3, 1 / 3)])
    labels, confidence = cluster_labels(features, probs)
    assert (labels[:300] == truth).mean() > 0.97
    assert confidence[300] < np.quantile(confidence[:300], 0.05) and confidence.max() <= 1.0
    # a class with no probability mass at all is never a label
    dead = np.hstack([probs, np.zeros((301, 1))])
    assert cluster_labels(features, dead)[0].max() < 3
