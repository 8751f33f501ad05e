"""stratified_split and per_class_subsample."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.data import per_class_subsample, stratified_split
from headstart.errors import ConfigError, DataError


def _labels(counts: list[int]) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(1).permutation(y)


def _check_partition(y: np.ndarray, parts: tuple[np.ndarray, ...]) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist())) == len(y)  # disjoint, covers all
    assert sorted(joined.tolist()) == list(range(len(y)))
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)  # sorted


def test_split_is_a_stratified_partition() -> None:
    counts = [100, 50, 20, 7]
    y = _labels(counts)
    train, val, test = stratified_split(y, 0.15, 0.15, seed=0)
    _check_partition(y, (train, val, test))
    for c, n in enumerate(counts):
        for part, fraction in ((val, 0.15), (test, 0.15), (train, 0.7)):
            assert abs(np.sum(y[part] == c) - n * fraction) <= 1


def test_split_is_deterministic_per_seed() -> None:
    y = _labels([30, 30, 30])
    first = stratified_split(y, seed=3)
    again = stratified_split(y, seed=3)
    other = stratified_split(y, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[2], other[2])


def test_tiny_classes_do_not_break_the_split() -> None:
    y = _labels([1, 2, 3, 5, 40])
    train, val, test = stratified_split(y, 0.15, 0.15, seed=0)
    _check_partition(y, (train, val, test))
    for c in (2, 3, 4):  # every class with >= 3 examples is in all three parts
        for part in (train, val, test):
            assert np.sum(y[part] == c) >= 1
    assert np.sum(y[train] == 0) == 1  # a single example goes to train


def test_many_small_classes_each_reach_val_and_test() -> None:
    y = _labels([4] * 10)  # sklearn alone would give val/test fewer slots than classes
    train, val, test = stratified_split(y, 0.15, 0.15, seed=0)
    _check_partition(y, (train, val, test))
    for c in range(10):
        assert [np.sum(y[p] == c) for p in (train, val, test)] == [2, 1, 1]


def test_zero_fraction_gives_empty_part() -> None:
    y = _labels([10, 10])
    train, val, test = stratified_split(y, val_fraction=0.0, test_fraction=0.2)
    assert len(val) == 0 and len(test) == 4 and len(train) == 16
    with pytest.raises(ConfigError):
        stratified_split(y, 0.6, 0.5)


def test_per_class_subsample() -> None:
    y = _labels([10, 6, 8])
    idx = per_class_subsample(y, 5, seed=0)
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [5, 5, 5]
    assert not np.array_equal(idx, per_class_subsample(y, 5, seed=1))
    assert np.array_equal(idx, per_class_subsample(y, 5, seed=0))
    with pytest.raises(DataError, match="class 'b' has 6") as info:
        per_class_subsample(y, 7, classes=["a", "b", "c"])
    assert "at most 6" in info.value.fix
