"""Label-free model selection (SND, DEV) against direct computations and toy domains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from headstart.adaptation import (
    DEVResult,
    deep_embedded_validation,
    per_example_cross_entropy,
    soft_neighborhood_density,
)
from headstart.errors import ConfigError


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _snd_loops(probs: np.ndarray, temperature: float) -> float:
    """SND written out with plain Python loops, straight from the paper's definition."""
    rows = [[float(v) for v in row] for row in probs]
    unit = []
    for row in rows:
        norm = math.sqrt(sum(v * v for v in row))
        unit.append([v / norm for v in row])
    n, total = len(unit), 0.0
    for i in range(n):
        sims = []
        for j in range(n):
            dot = sum(a * b for a, b in zip(unit[i], unit[j], strict=True))
            sims.append(dot / temperature)
        others = [sims[j] for j in range(n) if j != i]
        top = max(others)
        exps = [math.exp(s - top) for s in others]
        z = sum(exps)
        total += -sum((e / z) * math.log(e / z) for e in exps if e > 0)
    return total / n


def _clustered(rng: np.random.Generator, n: int, k: int, spread: float) -> np.ndarray:
    """Confident outputs, one cluster per class, the classes equally used."""
    labels = np.arange(n) % k
    return _softmax(5.0 * np.eye(k)[labels] + spread * rng.normal(size=(n, k)))


# --- SND --------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_snd_equals_a_loop_reference(temperature):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=23)
    got = soft_neighborhood_density(probs, temperature=temperature)
    assert got == pytest.approx(_snd_loops(probs, temperature), rel=1e-10, abs=1e-12)


def test_snd_is_invariant_to_the_row_order():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=40)
    perm = rng.permutation(40)
    a, b = soft_neighborhood_density(probs), soft_neighborhood_density(probs[perm])
    assert a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_snd_prefers_clustered_outputs_to_scattered_ones(seed):
    # The paper's claim: outputs that form dense class clusters give each example many
    # close neighbours (high neighbourhood entropy); outputs scattered over the simplex
    # (softmax of random logits, from mildly to very confident) give few.
    rng = np.random.default_rng(seed)
    n, k = 200, 5
    clustered = soft_neighborhood_density(_clustered(rng, n, k, spread=0.5))
    for scale in (2.0, 5.0):
        scattered = soft_neighborhood_density(_softmax(scale * rng.normal(size=(n, k))))
        assert clustered > scattered + 0.1
    # tighter clusters are denser
    assert clustered > soft_neighborhood_density(_clustered(rng, n, k, spread=2.0)) + 0.1
    # with equal clusters of n / k rows, each example's neighbourhood is its cluster
    assert clustered == pytest.approx(math.log(n / k - 1), abs=0.05)


def test_snd_of_collapsed_outputs_is_its_maximum_log_n_minus_1():
    # The documented failure mode: identical outputs make every neighbour equally close.
    # log(N - 1), not log(N): the example itself is no neighbour.
    probs = np.tile([0.9, 0.05, 0.05], (30, 1))
    assert soft_neighborhood_density(probs) == pytest.approx(math.log(29), rel=1e-12)


def test_snd_subsamples_deterministically_above_max_rows():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=60)
    full = soft_neighborhood_density(probs)
    assert soft_neighborhood_density(probs, max_rows=60) == full  # at the limit: all rows
    sub = soft_neighborhood_density(probs, max_rows=40, seed=7)
    assert sub == soft_neighborhood_density(probs, max_rows=40, seed=7)
    rows = np.random.default_rng(7).choice(60, 40, replace=False)
    assert sub == pytest.approx(soft_neighborhood_density(probs[rows]), rel=1e-12)
    assert sub != pytest.approx(full, rel=1e-6)
    assert sub != pytest.approx(soft_neighborhood_density(probs, max_rows=40, seed=8), rel=1e-6)


def test_snd_subsamples_large_inputs_by_default():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=2300)
    rows = np.random.default_rng(0).choice(2300, 2000, replace=False)
    expected = soft_neighborhood_density(probs[rows])
    assert soft_neighborhood_density(probs) == pytest.approx(expected, rel=1e-12)


def test_snd_rejects_bad_input():
    with pytest.raises(ConfigError, match="temperature"):
        soft_neighborhood_density(np.eye(3), temperature=0.0)
    with pytest.raises(ConfigError, match=r"\(1, 3\)"):
        soft_neighborhood_density(np.ones((1, 3)))
    with pytest.raises(ConfigError, match=r"\(5,\)"):
        soft_neighborhood_density(np.ones(5))


# --- cross entropy ----------------------------------------------------------------------


def test_per_example_cross_entropy():
    probs = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    got = per_example_cross_entropy(probs, np.array([0, 0, 2]))
    np.testing.assert_allclose(got, [-math.log(0.7), math.log(1e12), -math.log(0.5)])
    with pytest.raises(ConfigError, match=r"\(2,\)"):
        per_example_cross_entropy(probs, np.array([0, 1]))
    with pytest.raises(ConfigError, match="integer labels"):
        per_example_cross_entropy(probs, np.array([0, 1, 3]))


# --- DEV --------------------------------------------------------------------------------


def _cv_by_hand(weights: np.ndarray, losses: np.ndarray) -> tuple[float, float, float]:
    weighted = weights * losses
    c = np.cov(weighted, weights)  # ddof=1 for both: the ratio does not depend on it
    eta = -c[0, 1] / c[1, 1]
    plain = weighted.mean()
    return plain + eta * weights.mean() - eta, eta, plain


@pytest.mark.parametrize("n_source", [400, 1200])
def test_dev_on_identical_domains_weights_near_one(n_source):
    # The weights are the density ratio whatever the domain sizes (balanced classifier:
    # prior factor 1); with 1200 source and 400 target rows an uncorrected ratio would
    # average 1/3.
    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=(n_source, 3)), rng.normal(size=(400, 3))
    val, losses = rng.normal(size=(200, 3)), rng.exponential(size=200)
    r = deep_embedded_validation(src, tgt, val, losses)
    assert isinstance(r, DEVResult)
    assert r.weights.shape == (200,)
    assert r.weights.mean() == pytest.approx(1.0, abs=0.05)
    assert r.weights.min() > 0.5 and r.weights.max() < 2.0
    assert r.risk == pytest.approx(losses.mean(), abs=0.05)
    assert r.plain == pytest.approx(losses.mean(), abs=0.05)


def test_dev_control_variate_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(300, 4))
    tgt = rng.normal(loc=0.7, size=(300, 4))
    val = rng.normal(size=(150, 4))
    losses = rng.exponential(size=150) * (1 + val[:, 0] ** 2)
    r = deep_embedded_validation(src, tgt, val, losses)
    risk, eta, plain = _cv_by_hand(np.asarray(r.weights), losses)
    assert r.eta == pytest.approx(eta, rel=1e-9)
    assert r.plain == pytest.approx(plain, rel=1e-12)
    assert r.risk == pytest.approx(risk, rel=1e-9)
    assert r.eta != 0.0
    assert not r.weights.flags.writeable


def test_dev_constant_weights_give_no_control_variate():
    rng = np.random.default_rng(2)
    src, tgt = rng.normal(size=(100, 2)), rng.normal(loc=1.0, size=(100, 2))
    val = np.tile([0.3, -0.2], (20, 1))  # identical rows: identical weights
    losses = rng.exponential(size=20)
    r = deep_embedded_validation(src, tgt, val, losses)
    assert r.eta == 0.0
    assert r.risk == r.plain == pytest.approx(r.weights[0] * losses.mean())


def test_dev_prefers_the_model_that_is_right_where_the_target_is():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(400, 2))
    val = rng.normal(size=(200, 2))
    tgt = rng.normal(loc=(1.5, 0.0), scale=0.5, size=(400, 2))
    near = val[:, 0] > 0.75  # the source-validation rows the target sits on
    assert 20 < near.sum() < 100
    w = deep_embedded_validation(src, tgt, val, np.ones(200)).weights
    assert w[near].mean() > 10 * w[~near].mean()
    assert np.median(w[near]) > np.max(w[val[:, 0] < -0.5])

    good = np.where(near, 0.2, 1.0)  # low loss exactly on the target-like rows
    bad = np.where(near, 1.0, 0.2)
    bad *= good.mean() / bad.mean()  # the same mean source loss
    assert good.mean() == pytest.approx(bad.mean())
    r_good = deep_embedded_validation(src, tgt, val, good)
    r_bad = deep_embedded_validation(src, tgt, val, bad)
    assert r_good.risk < r_bad.risk
    assert r_good.plain < r_bad.plain


def test_dev_weights_stay_finite_on_separable_domains():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(200, 2))
    tgt = rng.normal(loc=50.0, size=(200, 2))
    val = np.vstack([rng.normal(size=(20, 2)), rng.normal(loc=50.0, size=(5, 2))])
    r = deep_embedded_validation(src, tgt, val, rng.exponential(size=25))
    assert np.isfinite(r.weights).all() and math.isfinite(r.risk)
    assert r.weights.max() <= (1 - 1e-6) / 1e-6 * (1 + 1e-9)
    assert r.weights.min() >= 1e-6 / (1 - 1e-6) * (1 - 1e-9)


def test_dev_shape_mismatches_raise_config_errors_naming_both_shapes():
    rng = np.random.default_rng(5)
    src, tgt, val = rng.normal(size=(50, 3)), rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    with pytest.raises(ConfigError) as e:
        deep_embedded_validation(src, tgt, val, np.ones(29))
    assert "(30, 3)" in str(e.value) and "(29,)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        deep_embedded_validation(src, rng.normal(size=(40, 4)), val, np.ones(30))
    assert "(50, 3)" in str(e.value) and "(40, 4)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        deep_embedded_validation(src, tgt, rng.normal(size=(30, 2)), np.ones(30))
    assert "(50, 3)" in str(e.value) and "(30, 2)" in str(e.value)
    with pytest.raises(ConfigError, match="NaN"):
        deep_embedded_validation(src, tgt, val, np.r_[np.ones(29), np.nan])
