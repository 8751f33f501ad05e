"""The building blocks of domain adaptation from unlabelled target data, each written from
its paper (torch, differentiable):

- :func:`grad_reverse`: the gradient reversal layer of DANN (Ganin & Lempitsky 2015):
  identity forward, gradient times ``-coeff`` backward; :func:`dann_coefficient` is its
  warm-up ``2 / (1 + exp(-gamma p)) - 1`` over training progress ``p``.
- :func:`coral_loss`: Deep CORAL (Sun & Saenko 2016), the squared Frobenius distance
  between the source and target feature covariances, divided by ``4 d^2``.
- :func:`mmd_loss`: the (biased) squared maximum mean discrepancy with a sum of Gaussian
  kernels at several bandwidths around the median distance (Long et al. 2015, DAN).
- :func:`cdan_features`: the multilinear map ``f (x) g`` of CDAN (Long et al. 2018), the
  outer product of features and class probabilities the domain classifier sees.
- :func:`cluster_labels`: the pseudo-labels of SHOT (Liang et al. 2020): class centroids
  of the (centred) target features weighted by the model's probabilities, then each
  example's nearest centroid (cosine), refined with hard assignments.
- :func:`proxy_a_distance`: ``2 (1 - 2 err)`` of a linear classifier telling the two
  domains apart (Ben-David et al. 2007), the usual measure of the domain gap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; the gradient flows back multiplied by ``-coeff``."""
    out: torch.Tensor = _GradReverse.apply(x, float(coeff))
    return out


def dann_coefficient(progress: float, gamma: float = 10.0, high: float = 1.0) -> float:
    """DANN's warm-up of the reversal coefficient: 0 at the start of training, rising to
    ``high`` (``progress`` in [0, 1])."""
    p = min(max(float(progress), 0.0), 1.0)
    return high * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)`` with unbiased feature covariances (Sun & Saenko)."""
    d = source.shape[1]

    def cov(x: torch.Tensor) -> torch.Tensor:
        xc = x - x.mean(0, keepdim=True)
        return xc.T @ xc / max(x.shape[0] - 1, 1)

    return ((cov(source.float()) - cov(target.float())) ** 2).sum() / (4 * d * d)


MMD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def mmd_loss(
    source: torch.Tensor,
    target: torch.Tensor,
    scales: tuple[float, ...] = MMD_SCALES,
    bandwidth: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Biased squared MMD between the two samples under ``sum_s exp(-||a - b||^2 /
    (s * h))``; ``h`` is the median squared distance of the pooled sample (detached) unless
    ``bandwidth`` is given."""
    x = torch.cat([source.float(), target.float()])
    d2 = torch.cdist(x, x).pow(2)
    if bandwidth is None:
        off = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
        h = torch.quantile(off.detach(), 0.5).clamp_min(1e-12)
    else:
        h = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device)
    k = sum(torch.exp(-d2 / (s * h)) for s in scales)
    assert isinstance(k, torch.Tensor)
    n = source.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def cdan_features(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """CDAN's multilinear conditioning: the flattened outer product ``g (x) f``, (N, K*D)."""
    return torch.bmm(probs.unsqueeze(2), features.unsqueeze(1)).flatten(1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-row Shannon entropy (nats) of class probabilities."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(1)


def cluster_labels(
    features: np.ndarray, probs: np.ndarray, iterations: int = 2, temperature: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """SHOT's self-supervised pseudo-labels: (labels, confidence) for each row.

    The features are centred on their mean first (measured on mnist-5k -> digits: pseudo-
    labels 3 to 8 points more precise than uncentred; on a target dominated by one class
    the mean sits near that class, so centring helps less there). The centroid of class
    ``k`` is the mean of the L2-normalised features weighted by ``probs[:, k]``; each
    example takes its nearest centroid by cosine similarity, and the centroids are
    recomputed from those hard labels ``iterations - 1`` more times. Unlike SHOT, a class
    that the hard labels leave empty keeps its probability-weighted centroid, so it can win
    examples back (a class the model under-predicts on the target is not dropped); a class
    with no probability mass at all is no candidate. The confidence is the softmax of the
    cosine similarities over ``temperature``, at the label.
    """
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)  # centred on the target's mean: the offset all domain examples share
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    weights = np.asarray(probs, dtype=np.float64)
    if len(f) != len(weights):
        raise ValueError(f"{len(f)} feature rows but {len(weights)} probability rows")
    live = weights.sum(0) > 0
    for _ in range(max(1, iterations)):
        centroids = weights.T @ f
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        sim = np.where(live, f @ centroids.T, -np.inf)
        labels = sim.argmax(1)
        hard = np.eye(weights.shape[1])[labels]
        weights = np.where(hard.sum(0, keepdims=True) > 0, hard, weights)
    z = sim / temperature
    z -= z.max(1, keepdims=True)
    post = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return labels, post[np.arange(len(labels)), labels]


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """``2 (1 - 2 err)``, ``err`` the held-out error of a logistic regression telling
    source features from target features (half of each domain held out, equal sizes).
    0 means indistinguishable domains, 2 perfectly separable ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    n = min(len(source), len(target))
    s = np.asarray(source, dtype=np.float64)[rng.permutation(len(source))[:n]]
    t = np.asarray(target, dtype=np.float64)[rng.permutation(len(target))[:n]]
    x = np.vstack([s, t])
    y = np.r_[np.zeros(n), np.ones(n)]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_tr)
    with threadpool_limits(limits=1, user_api="blas"):
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x_tr), y_tr)
    err = 1.0 - float(clf.score(scaler.transform(x_te), y_te))
    return 2.0 * (1.0 - 2.0 * err)
