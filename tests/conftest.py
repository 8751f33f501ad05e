"""Shared fixtures: an isolated embedding cache and small labelled image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path_factory.mktemp("cache")))


def make_image_folder(
    root: Path,
    n_per_class: int = 12,
    classes=("circle", "square", "stripes"),
    size: int = 24,
    seed: int = 0,
) -> Path:
    """Synthetic but learnable classes: each class has its own shape and colour."""
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
            yy, xx = np.mgrid[:size, :size]
            if ci % 3 == 0:
                mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
            elif ci % 3 == 1:
                mask = (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4)
            else:
                mask = (xx // 3) % 2 == 0
            img[mask] = [200 + 20 * (ci % 2), 60 * ci % 255, 255 - 50 * ci % 255]
            Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


def toy_arrays(n_per_class: int = 10, k: int = 3, size: int = 16, seed: int = 0):
    """A separable array dataset: class c has a bright band at row block c."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 30, (n_per_class * k, size, size)).astype(np.uint8)
    y = np.repeat(np.arange(k), n_per_class)
    band = size // k
    for i, c in enumerate(y):
        X[i, c * band : (c + 1) * band] = 230
    return X, y
