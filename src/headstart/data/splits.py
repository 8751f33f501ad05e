"""Stratified train / validation / test splits and per-class subsampling (k-shot)."""

from __future__ import annotations

import math

import numpy as np

from headstart.errors import ConfigError, DataError

_EMPTY = np.empty(0, dtype=np.int64)


def stratified_split(
    labels: np.ndarray,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split positions ``0..N-1`` into (train, val, test) index arrays, stratified by label.

    The arrays are sorted, disjoint and together cover every position. Every class with
    at least 3 examples gets at least one in train and, when its fraction is above 0, at
    least one in val and in test. A fraction of 0 gives an empty array. The same seed
    always gives the same split. Unlabelled examples (``-1``) are treated as one more
    group.

    scikit-learn's ``train_test_split(stratify=...)`` is used when its result meets the
    guarantees above; for tiny classes a per-class seeded split is used instead.
    """
    y = np.asarray(labels).reshape(-1)
    _check_fractions(val_fraction, test_fraction)
    if len(y) == 0:
        return _EMPTY, _EMPTY, _EMPTY
    split = _sklearn_split(y, val_fraction, test_fraction, seed)
    if split is None or not _meets_guarantees(y, split, val_fraction, test_fraction):
        split = _per_class_split(y, val_fraction, test_fraction, seed)
    train, val, test = split
    return np.sort(train), np.sort(val), np.sort(test)


def per_class_subsample(
    labels: np.ndarray,
    n_per_class: int,
    seed: int = 0,
    classes: list[str] | None = None,
) -> np.ndarray:
    """Sorted positions of ``n_per_class`` randomly chosen examples of every class.

    Unlabelled examples (``-1``) are never chosen. ``classes`` (optional) names the
    classes in error messages.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ConfigError(
            "n_per_class to be a whole number of at least 1",
            repr(n_per_class),
            "pass e.g. n_per_class=5",
        )
    y = np.asarray(labels).reshape(-1)
    values, counts = np.unique(y[y >= 0], return_counts=True)
    short = [(v, c) for v, c in zip(values, counts, strict=True) if c < n_per_class]
    if short:
        listed = ", ".join(f"class {_class_name(v, classes)} has {c}" for v, c in short)
        raise DataError(
            f"at least {n_per_class} examples in every class",
            listed,
            f"ask for at most {min(c for _, c in short)} per class, or add examples",
        )
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == v), n_per_class, replace=False) for v in values]
    if not chosen:
        return _EMPTY
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def up_to_per_class(
    labels: np.ndarray, n: int, seed: int, classes: list[int] | None = None
) -> np.ndarray:
    """Sorted positions of at most ``n`` random examples of every class (of ``classes``,
    default every label present)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    wanted = np.unique(labels) if classes is None else classes
    picks = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in wanted]
    return np.sort(np.concatenate(picks)) if picks else _EMPTY


def _class_name(value: int, classes: list[str] | None) -> str:
    if classes is not None and 0 <= value < len(classes):
        return repr(classes[value])
    return str(int(value))


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(f, (int, float)) and 0.0 <= f < 1.0):
            raise ConfigError(f"{name} in [0, 1)", repr(f), f"pass e.g. {name}=0.15")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            "val_fraction + test_fraction below 1, leaving examples to train on",
            f"{val_fraction} + {test_fraction}",
            "lower one of the fractions, e.g. 0.15 each",
        )


def _sklearn_split(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """scikit-learn's stratified split, or ``None`` where it refuses (tiny classes)."""
    from sklearn.model_selection import train_test_split  # lazy: a heavy import

    idx = np.arange(len(y), dtype=np.int64)
    try:
        rest, test = idx, _EMPTY
        if test_fraction > 0:
            rest, test = train_test_split(
                idx, test_size=test_fraction, stratify=y, random_state=seed
            )
        train, val = rest, _EMPTY
        if val_fraction > 0:
            train, val = train_test_split(
                rest,
                test_size=val_fraction / (1.0 - test_fraction),
                stratify=y[rest],
                random_state=seed,
            )
    except ValueError:
        return None
    return np.asarray(train), np.asarray(val), np.asarray(test)


def _meets_guarantees(
    y: np.ndarray,
    split: tuple[np.ndarray, np.ndarray, np.ndarray],
    val_fraction: float,
    test_fraction: float,
) -> bool:
    train, val, test = split
    values, counts = np.unique(y, return_counts=True)
    for value, count in zip(values, counts, strict=True):
        if count < 3:
            continue
        if not np.any(y[train] == value):
            return False
        if val_fraction > 0 and not np.any(y[val] == value):
            return False
        if test_fraction > 0 and not np.any(y[test] == value):
            return False
    return True


def _per_class_split(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for value in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == value))
        n_val, n_test = _class_counts(len(members), val_fraction, test_fraction)
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test : n_test + n_val])
        parts[0].append(members[n_test + n_val :])
    train, val, test = (np.concatenate(p).astype(np.int64) for p in parts)
    return train, val, test


def _class_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of ``n``: rounded, at least 1 each from 3 up, train >= 1."""
    n_val = math.floor(n * val_fraction + 0.5)
    n_test = math.floor(n * test_fraction + 0.5)
    if n >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    while n > 0 and n - n_val - n_test < 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test
