"""Prototypes and N-way K-shot episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from headstart.errors import DataError
from headstart.fewshot import evaluate_episodes, sample_episodes
from headstart.fewshot.episodes import episode_accuracy, mean_ci
from headstart.heads.prototypes import class_means, nearest_prototype, prototype_head


def _blobs(k: int = 6, n: int = 30, d: int = 16, seed: int = 0, spread: float = 3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d)) * spread
    y = np.repeat(np.arange(k), n)
    return centres[y] + rng.normal(0, 1, (k * n, d)), y


def test_prototypes_are_the_class_means():
    x, y = _blobs(k=3, n=5)
    means = class_means(x, y, 3)
    for c in range(3):
        np.testing.assert_allclose(means[c], x[y == c].mean(0))
    with pytest.raises(DataError, match="every class"):
        class_means(x[y < 2], y[y < 2], 3)


def test_the_linear_head_predicts_the_nearest_prototype_by_cosine():
    x, y = _blobs()
    w, b = prototype_head(x, y, 6)
    logits = torch.as_tensor(x, dtype=torch.float32) @ w.T + b
    expected = nearest_prototype(x, class_means(x, y, 6))
    np.testing.assert_array_equal(logits.argmax(1).numpy(), expected)
    assert (expected == y).mean() > 0.95
    # scaled to about cos / 0.1 for a typical example
    assert 5.0 < float(logits.max(1).values.mean()) <= 10.5


def test_one_shot_uses_the_single_example_as_its_prototype():
    x, y = _blobs(k=4, n=10)
    first = np.array([np.flatnonzero(y == c)[0] for c in range(4)])
    w, _ = prototype_head(x[first], y[first], 4)
    unit = x[first] / np.linalg.norm(x[first], axis=1, keepdims=True)
    np.testing.assert_allclose(
        (w / w.norm(dim=1, keepdim=True)).numpy(), unit, rtol=1e-5, atol=1e-6
    )
    assert (nearest_prototype(x, x[first]) == y).mean() > 0.8


def test_episodes_never_share_an_example_between_support_and_query():
    _, y = _blobs(k=8, n=25)
    episodes = sample_episodes(y, ways=5, shots=5, queries=15, episodes=200, seed=1)
    assert len(episodes) == 200
    for e in episodes:
        assert e.support.shape == (5, 5) and e.query.shape == (5, 15)
        assert len(set(e.classes.tolist())) == 5
        assert not set(e.support.ravel()) & set(e.query.ravel())
        assert len(set(e.support.ravel()) | set(e.query.ravel())) == 100
        for i, c in enumerate(e.classes):
            assert (y[e.support[i]] == c).all() and (y[e.query[i]] == c).all()
    again = sample_episodes(y, ways=5, shots=5, queries=15, episodes=200, seed=1)
    assert all(np.array_equal(a.support, b.support) for a, b in zip(episodes, again, strict=True))
    held_out = sample_episodes(y, 3, 1, episodes=50, classes=[5, 6, 7])
    assert all(set(e.classes.tolist()) <= {5, 6, 7} for e in held_out)


def test_episodes_refuse_what_the_data_cannot_give():
    _, y = _blobs(k=4, n=10)
    with pytest.raises(DataError, match="at least 5 classes"):
        sample_episodes(y, ways=5, shots=1)
    with pytest.raises(DataError, match="at least 20 examples"):
        sample_episodes(y, ways=3, shots=5, queries=15)


def test_episode_accuracy_and_its_confidence_interval():
    x, y = _blobs(k=6, n=30, spread=0.5)  # overlapping classes: one shot is not enough
    one = evaluate_episodes(x, y, ways=5, shots=1, queries=10, episodes=100, seed=0)
    five = evaluate_episodes(x, y, ways=5, shots=5, queries=10, episodes=100, seed=0)
    assert one["n"] == 100 and 0.3 < one["mean"] < five["mean"] < 1.0
    assert 0 < one["ci95"] < 0.06
    noise = np.random.default_rng(0).normal(size=x.shape)  # no signal: chance, 1 / ways
    chance = evaluate_episodes(noise, y, ways=5, shots=5, queries=10, episodes=200, seed=0)
    assert abs(chance["mean"] - 0.2) < 2 * chance["ci95"] + 0.02
    values = [0.5, 0.7, 0.6, 0.9]
    ci = mean_ci(values)
    half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert ci["mean"] == pytest.approx(0.675) and ci["ci95"] == pytest.approx(half)
    e = sample_episodes(y, 5, 1, episodes=1)[0]
    assert 0.0 <= episode_accuracy(x, e) <= 1.0
