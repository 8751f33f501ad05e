"""Every transferability score against an independent reference computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.model_selection import LeaveOneOut, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from headstart.selection import SCORES, NotApplicable
from headstart.selection.scores import logme_evidence


def _data(n: int = 60, d: int = 8, k: int = 3, signal: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centers = rng.normal(size=(k, d)) * signal
    x = centers[y] + rng.normal(size=(n, d))
    return x, y


def _direct_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, F F^T / alpha + I / beta) / N, straight from the model's definition."""
    n = len(y)
    cov = f @ f.T / alpha + np.eye(n) / beta
    return float(stats.multivariate_normal(np.zeros(n), cov).logpdf(y)) / n


@pytest.mark.parametrize("shape", [(40, 6), (12, 30)])  # N > D and N < D
def test_logme_evidence_is_the_maximised_marginal_likelihood(shape):
    rng = np.random.default_rng(1)
    f = rng.normal(size=shape)
    y = (f[:, 0] + 0.5 * rng.normal(size=shape[0]) > 0).astype(float)
    ev, alpha, beta = logme_evidence(f, y[:, None])
    # the closed form equals the Gaussian marginal likelihood at the same alpha, beta
    assert ev[0] == pytest.approx(_direct_log_evidence(f, y, alpha[0], beta[0]), abs=1e-8)

    # and (alpha, beta) maximise it: an independent numerical optimiser finds the same value
    def neg(log_ab: np.ndarray) -> float:
        return -_direct_log_evidence(f, y, float(np.exp(log_ab[0])), float(np.exp(log_ab[1])))

    best = optimize.minimize(neg, x0=np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8})
    assert ev[0] == pytest.approx(-best.fun, abs=1e-5)


def test_logme_averages_the_classes_one_hot_columns():
    x, y = _data()
    onehot = np.eye(3)[y]
    per_class, _, _ = logme_evidence(x, onehot)
    assert SCORES.get("logme")(x, y) == pytest.approx(per_class.mean())
    assert SCORES.get("logme")(x, y) > SCORES.get("logme")(*_data(signal=0.0))


def _leep_loops(theta: np.ndarray, y: np.ndarray) -> float:
    n, z_count = theta.shape
    classes = sorted(set(y.tolist()))
    joint = {
        (c, z): sum(theta[i, z] for i in range(n) if y[i] == c) / n
        for c in classes
        for z in range(z_count)
    }
    p_z = [sum(joint[(c, z)] for c in classes) for z in range(z_count)]
    total = 0.0
    for i in range(n):
        total += np.log(sum(joint[(y[i], z)] / p_z[z] * theta[i, z] for z in range(z_count)))
    return total / n


def test_leep_against_the_papers_definition():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(30, 7)) * 2
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, size=30)
    assert SCORES.get("leep")(np.zeros((30, 1)), y, theta) == pytest.approx(_leep_loops(theta, y))


def test_leep_worked_case():
    # a source head that is certain and maps each target class to its own source class:
    # the empirical predictor is exact, so LEEP = log 1 = 0 (its maximum)
    y = np.array([0, 1, 2, 0, 1, 2])
    theta = np.eye(3)[y]
    assert SCORES.get("leep")(np.zeros((6, 1)), y, theta) == pytest.approx(0.0)
    # an uninformative (uniform) head: LEEP = sum_y P(y) log P(y) = -log 3 here
    uniform = np.full((6, 3), 1 / 3)
    assert SCORES.get("leep")(np.zeros((6, 1)), y, uniform) == pytest.approx(-np.log(3))


def test_nce_is_mutual_information_minus_label_entropy():
    rng = np.random.default_rng(3)
    theta = rng.dirichlet(np.ones(6), size=50)
    y = rng.integers(0, 3, size=50)
    z = theta.argmax(1)
    expected = mutual_info_score(y, z) - stats.entropy(np.bincount(y) / len(y))
    assert SCORES.get("nce")(np.zeros((50, 1)), y, theta) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_source_scores_say_not_applicable_without_a_source_head(name):
    x, y = _data()
    with pytest.raises(
        NotApplicable, match="class probabilities; this candidate has no source head"
    ):
        SCORES.get(name)(x, y, None)


def test_hscore_against_loops_and_its_known_value():
    x, y = _data(n=45, d=5)
    xc = x - x.mean(0)
    cov_f = sum(np.outer(r, r) for r in xc) / len(x)
    means = {c: xc[y == c].mean(0) for c in set(y.tolist())}
    cov_g = sum(np.outer(means[c], means[c]) for c in y) / len(x)
    expected = np.trace(np.linalg.pinv(cov_f) @ cov_g)
    assert SCORES.get("hscore")(x, y) == pytest.approx(expected)
    # features that are the one-hot labels themselves: H-score = rank = K - 1
    assert SCORES.get("hscore")(np.eye(4)[np.arange(40) % 4], np.arange(40) % 4) == pytest.approx(3)


def test_knn_matches_scikit_learn_leave_one_out():
    x, y = _data(n=50, signal=0.7)
    knn = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute")
    expected = cross_val_score(knn, x, y, cv=LeaveOneOut()).mean()
    assert SCORES.get("knn")(x, y) == pytest.approx(expected)


def test_linear_matches_a_cross_validated_probe():
    x, y = _data(n=60, signal=0.5)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    assert SCORES.get("linear")(x, y) == pytest.approx(cross_val_score(probe, x, y, cv=cv).mean())
    separable = SCORES.get("linear")(*_data(signal=20.0))
    assert separable == 1.0


@pytest.mark.parametrize("name", ["logme", "hscore", "hscore-shrink", "knn", "linear", "ridge"])
def test_every_feature_score_prefers_signal_to_noise(name):
    informative = SCORES.get(name)(*_data(n=90, signal=1.5))
    random = SCORES.get(name)(*_data(n=90, signal=0.0))
    assert informative > random


def test_unknown_score_suggests_a_name():
    with pytest.raises(ValueError, match="logme"):
        SCORES.get("logmee")


def test_shrunk_hscore_against_scikit_learns_ledoit_wolf():
    from sklearn.covariance import LedoitWolf

    x, y = _data(n=30, d=40, signal=1.0)  # fewer examples than dimensions
    lw = LedoitWolf(assume_centered=True).fit(x - x.mean(0))
    xc = x - x.mean(0)
    means = np.stack([xc[y == c].mean(0) for c in range(3)])[y]
    cov_g = means.T @ means / len(x)
    expected = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * cov_g))
    assert SCORES.get("hscore-shrink")(x, y) == pytest.approx(expected, rel=1e-6)
    # the plain H-score is stuck at K - 1 here, whatever the features
    assert SCORES.get("hscore")(x, y) == pytest.approx(2.0)
    assert SCORES.get("hscore")(np.random.default_rng(1).normal(size=(30, 40)), y) == pytest.approx(
        2.0
    )


def test_linear_probe_ignores_numerically_dead_columns():
    x, y = _data(n=90, d=10, signal=1.5)
    dead = np.random.default_rng(5).normal(size=(90, 300)) * 1e-33  # a text encoder's dead dims
    assert SCORES.get("linear")(np.hstack([x, dead]), y) == pytest.approx(
        SCORES.get("linear")(x, y)
    )


def test_knn_in_blocks_equals_one_block(monkeypatch):
    import headstart.selection.scores as sc

    x, y = _data(n=70, signal=0.6)
    whole = SCORES.get("knn")(x, y)
    monkeypatch.setattr(sc, "KNN_BLOCK", 16)
    assert SCORES.get("knn")(x, y) == whole


def test_logme_of_several_columns_equals_each_column_alone():
    x, y = _data(n=50, d=12)
    onehot = np.eye(3)[y]
    together, _, _ = logme_evidence(x, onehot)
    alone = [logme_evidence(x, onehot[:, [k]])[0][0] for k in range(3)]
    np.testing.assert_allclose(together, alone, rtol=1e-9)


def test_ridge_matches_a_cross_validated_ridge_classifier():
    from sklearn.linear_model import RidgeClassifierCV

    from headstart.selection.scores import RIDGE_ALPHAS

    x, y = _data(n=60, d=20, signal=0.5)
    probe = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=RIDGE_ALPHAS))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    assert SCORES.get("ridge")(x, y) == pytest.approx(cross_val_score(probe, x, y, cv=cv).mean())
    assert SCORES.get("ridge")(*_data(signal=20.0)) == 1.0
