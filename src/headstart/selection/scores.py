"""Transferability scores: how well a frozen backbone's features suit a labelled target
task, computed from cached features before any training. Higher is better for all.

Each score is written here from its paper, vectorised over classes and samples:

- ``logme``: LogME, You et al. 2021, "LogME: Practical Assessment of Pre-trained Models
  for Transfer Learning". The log marginal evidence of a Bayesian linear regression from
  the features to each one-hot label column, with the prior and noise precisions (alpha,
  beta) set by MacKay's fixed-point iteration, averaged over classes and divided by N.
- ``leep``: LEEP, Nguyen et al. 2020. The mean log-likelihood of the target labels under
  the "expected empirical predictor" built from the source head's probabilities.
- ``nce``: Negative Conditional Entropy, Tran et al. 2019, ``-H(Y | Z)`` where ``Z`` is
  the source head's predicted (argmax) class.
- ``hscore``: H-score, Bao et al. 2019, ``tr(cov(f)^+ cov(E[f | y]))``.
- ``hscore-shrink``: the H-score with a Ledoit-Wolf shrunk covariance, Ibrahim et al. 2023,
  "Newer is not always better: Rethinking transferability metrics".
- ``knn``: leave-one-out k-nearest-neighbour accuracy (cosine similarity).
- ``linear``: cross-validated accuracy of a logistic-regression probe (stratified folds).
- ``ridge``: the same with a closed-form ridge classifier (penalty by leave-one-out).

``leep`` and ``nce`` need the source task's class probabilities; for a backbone without a
source head (a text encoder, an intermediate layer, random weights) they raise
:class:`NotApplicable` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from headstart.registry import Registry

#: prior / noise precision updates stop when their ratio moves less than this (relative)
LOGME_TOL = 1e-5
LOGME_MAX_ITER = 100


class NotApplicable(Exception):
    """A score cannot be computed for this candidate; the message says why."""


@dataclass(frozen=True)
class Scorer:
    """A transferability score: ``fn(features (N, D), labels (N,), source_probs (N, Z) or
    None) -> float``; higher means the candidate should transfer better."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]
    needs_source: bool = False
    paper: str = ""

    def __call__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        source_probs: np.ndarray | None = None,
        no_source_reason: str = "this candidate has no source head",
    ) -> float:
        if self.needs_source and source_probs is None:
            raise NotApplicable(
                f"{self.name} needs the source task's class probabilities; {no_source_reason}"
            )
        return float(self.fn(np.asarray(features), np.asarray(labels), source_probs))


SCORES: Registry[Scorer] = Registry("transferability score")


def _onehot(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot matrix (N, K) over the classes present, the label index of each row)."""
    _, idx = np.unique(labels, return_inverse=True)
    y = np.zeros((len(labels), int(idx.max()) + 1 if len(idx) else 0))
    y[np.arange(len(labels)), idx] = 1.0
    return y, idx


# -- LogME --------------------------------------------------------------------------------------
def logme_evidence(
    features: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per target column: (log evidence / N, alpha, beta) at the fixed point.

    ``targets`` is (N, K); column k is regressed on the features. With the thin SVD
    ``F = U diag(sigma) V^T`` and ``s = sigma^2`` (the non-zero eigenvalues of F^T F), the
    posterior mean is ``m = V diag(beta / (alpha + beta s)) V^T F^T y`` and the updates are
    ``gamma = sum(beta s / (alpha + beta s))``, ``alpha = gamma / m^T m``,
    ``beta = (N - gamma) / ||y - F m||^2`` (You et al. 2021, Algorithm 1), run for every
    column at once."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    n, d = f.shape
    _, sigma, vt = np.linalg.svd(f, full_matrices=False)
    s = sigma**2  # (r,)
    proj = vt @ (f.T @ y)  # (r, K): V^T F^T y
    k = y.shape[1]
    alpha, beta = np.ones(k), np.ones(k)
    for _ in range(LOGME_MAX_ITER):
        denom = alpha[None, :] + beta[None, :] * s[:, None]  # (r, K)
        gamma = (beta[None, :] * s[:, None] / denom).sum(0)
        m_coef = beta[None, :] * proj / denom  # coordinates of m in V's basis
        alpha_de = (m_coef**2).sum(0)
        resid = y - f @ (vt.T @ m_coef)
        beta_de = (resid**2).sum(0)
        new_alpha = gamma / np.maximum(alpha_de, 1e-300)
        new_beta = (n - gamma) / np.maximum(beta_de, 1e-300)
        done = np.abs(new_alpha / new_beta - alpha / beta) <= LOGME_TOL * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if done.all():
            break
    denom = alpha[None, :] + beta[None, :] * s[:, None]
    m_coef = beta[None, :] * proj / denom
    alpha_de = (m_coef**2).sum(0)
    beta_de = ((y - f @ (vt.T @ m_coef)) ** 2).sum(0)
    # log|A| with A = alpha I + beta F^T F: r eigenvalues alpha + beta s, d - r equal to alpha
    logdet = np.log(denom).sum(0) + (d - len(s)) * np.log(alpha)
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * logdet
        - beta / 2 * beta_de
        - alpha / 2 * alpha_de
        - n / 2 * np.log(2 * np.pi)
    )
    return evidence / n, alpha, beta


def logme(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None) -> float:
    y, _ = _onehot(labels)
    evidence, _, _ = logme_evidence(features, y)
    return float(evidence.mean())


# -- LEEP and NCE (need the source head) -------------------------------------------------------
def leep(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None) -> float:
    theta = np.asarray(source_probs, dtype=np.float64)  # (N, Z), rows sum to 1
    y, idx = _onehot(labels)
    n = len(labels)
    joint = y.T @ theta / n  # P(y, z), (K, Z)
    p_z = joint.sum(0, keepdims=True)
    cond = joint / np.maximum(p_z, 1e-300)  # P(y | z)
    eep = (theta @ cond.T)[np.arange(n), idx]  # sum_z P(y_i | z) theta_i(z)
    return float(np.log(np.maximum(eep, 1e-300)).mean())


def nce(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None) -> float:
    z = np.asarray(source_probs).argmax(1)
    _, zi = np.unique(z, return_inverse=True)
    y, idx = _onehot(labels)
    joint = np.zeros((y.shape[1], int(zi.max()) + 1))
    np.add.at(joint, (idx, zi), 1.0)
    joint /= len(labels)
    p_z = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log((joint / p_z)[nz])).sum())


# -- H-score --------------------------------------------------------------------------------------
def hscore(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None) -> float:
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    y, idx = _onehot(labels)
    class_means = (y.T @ f) / y.sum(0)[:, None]  # (K, D)
    g = class_means[idx]  # E[f | y] for every sample
    cov_f = f.T @ f / len(f)
    cov_g = g.T @ g / len(f)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))


def hscore_shrink(
    features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None
) -> float:
    """H-score with a Ledoit-Wolf shrunk feature covariance (Ibrahim et al. 2023): with
    fewer samples than feature dimensions the plain H-score's pseudo-inverse makes it
    ``K - 1`` for every backbone; shrinkage keeps it informative.
    ``tr(((1 - a) cov(f) + a mu I)^-1 (1 - a) cov(E[f | y]))``, ``mu = tr(cov(f)) / D``."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    y, idx = _onehot(labels)
    class_means = (y.T @ f) / y.sum(0)[:, None]
    g = class_means[idx]
    cov_f = f.T @ f / len(f)
    cov_g = g.T @ g / len(f)
    a = float(ledoit_wolf_shrinkage(f, assume_centered=True))
    mu = np.trace(cov_f) / f.shape[1]
    shrunk = (1 - a) * cov_f + a * mu * np.eye(f.shape[1])
    return float(np.trace(np.linalg.solve(shrunk, (1 - a) * cov_g)))


# -- kNN and a linear probe ------------------------------------------------------------------------
KNN_K = 5
KNN_BLOCK = 2048


def knn_loo(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None) -> float:
    """Leave-one-out accuracy of a k-NN (cosine similarity, majority vote, ties to the
    smaller label as in scikit-learn); similarities in blocks of rows, so memory stays
    ``KNN_BLOCK x N``."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    y, idx = _onehot(labels)
    n = len(f)
    k = min(KNN_K, n - 1)
    correct = 0
    for start in range(0, n, KNN_BLOCK):
        rows = np.arange(start, min(start + KNN_BLOCK, n))
        sim = f[rows] @ f.T
        sim[np.arange(len(rows)), rows] = -np.inf  # leave each sample out
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        votes = y[nearest].sum(1)  # (rows, K)
        correct += int((votes.argmax(1) == idx[rows]).sum())
    return correct / n


LINEAR_FOLDS = 5
#: columns whose spread is below this fraction of the widest column's are left out
DEAD_SPREAD = 1e-6


def _cv_accuracy(name: str, classifier: object, features: np.ndarray, labels: np.ndarray) -> float:
    """Mean accuracy of standardised features -> ``classifier`` over stratified folds (5,
    or fewer when a class has fewer examples); numerically dead columns left out."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, counts = np.unique(labels, return_counts=True)
    folds = int(min(LINEAR_FOLDS, counts.min()))
    if folds < 2:
        raise NotApplicable(f"{name} needs at least 2 examples of every class")
    probe = make_pipeline(StandardScaler(), classifier)
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    return float(cross_val_score(probe, _live_columns(features), labels, cv=cv).mean())


def linear_cv(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None) -> float:
    """Cross-validated accuracy of a logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression

    return _cv_accuracy("linear", LogisticRegression(C=1.0, max_iter=1000), features, labels)


RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))


def ridge_cv(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None) -> float:
    """Cross-validated accuracy of a ridge-regression classifier (one-hot targets, its
    penalty chosen per fold by efficient leave-one-out) on the same folds as ``linear``:
    a closed-form probe."""
    from sklearn.linear_model import RidgeClassifierCV

    return _cv_accuracy("ridge", RidgeClassifierCV(alphas=RIDGE_ALPHAS), features, labels)


def _live_columns(features: np.ndarray) -> np.ndarray:
    """The columns with real spread: standardising would blow numerically dead columns
    (spread ~1e-33, as some text encoders have) up to unit variance."""
    x = np.asarray(features, dtype=np.float64)
    spread = x.std(0)
    return x[:, spread > DEAD_SPREAD * max(float(spread.max(initial=0.0)), 1e-300)]


for _s in (
    Scorer("logme", logme, paper="You et al. 2021"),
    Scorer("leep", leep, needs_source=True, paper="Nguyen et al. 2020"),
    Scorer("nce", nce, needs_source=True, paper="Tran et al. 2019"),
    Scorer("hscore", hscore, paper="Bao et al. 2019"),
    Scorer("hscore-shrink", hscore_shrink, paper="Ibrahim et al. 2023, shrunk H-score"),
    Scorer("knn", knn_loo, paper=f"leave-one-out {KNN_K}-NN accuracy, cosine"),
    Scorer("linear", linear_cv, paper=f"{LINEAR_FOLDS}-fold logistic-regression accuracy"),
    Scorer("ridge", ridge_cv, paper=f"{LINEAR_FOLDS}-fold ridge-classifier accuracy"),
):
    SCORES.add(_s.name, _s, _s.paper)
