"""build_transform, ImageDataset and data_fingerprint."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.data import (
    ImageDataset,
    build_transform,
    data_fingerprint,
    from_arrays,
    scan_image_folder,
)
from headstart.errors import ConfigError

MEAN, STD = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)


def _grey28() -> Image.Image:
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[0, 0] = 255  # a bright corner pixel that a centre crop would lose
    return Image.fromarray(pixels, "L").convert("RGB")


def test_eval_transform_resizes_whole_image_and_normalises() -> None:
    tf = build_transform(56, MEAN, STD, train=False)
    out = tf(_grey28())
    assert isinstance(out, torch.Tensor) and out.shape == (3, 56, 56)
    black = [(0.0 - m) / s for m, s in zip(MEAN, STD, strict=True)]
    assert torch.allclose(out[:, -1, -1], torch.tensor(black))  # normalised with mean/std
    assert out[0, 0, 0] > out[0, -1, -1]  # the corner survived: no centre crop
    assert torch.equal(out, tf(_grey28()))  # deterministic
    white = tf(Image.new("RGB", (10, 30), (255, 255, 255)))
    assert white.shape == (3, 56, 56)  # non-square input squashed, not cropped
    expected = [(1.0 - m) / s for m, s in zip(MEAN, STD, strict=True)]  # [1, 3, 1]
    assert torch.allclose(white[:, 0, 0], torch.tensor(expected))


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_train_transform_shape(augment: str) -> None:
    tf = build_transform(32, MEAN, STD, train=True, augment=augment)
    assert tf(_grey28()).shape == (3, 32, 32)


def test_unknown_augment_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'none', 'light', 'strong'"):
        build_transform(32, MEAN, STD, train=True, augment="heavy")


def test_image_dataset() -> None:
    X = np.zeros((3, 28, 28), dtype=np.uint8)
    ds = ImageDataset(from_arrays(X, ["a", "b", "b"]), build_transform(16, MEAN, STD, False))
    assert len(ds) == 3
    image, label = ds[2]
    assert image.shape == (3, 16, 16) and label == 1 and isinstance(label, int)


def test_fingerprint_of_arrays() -> None:
    X = np.zeros((3, 4, 4), dtype=np.uint8)
    base = data_fingerprint(from_arrays(X, [0, 1, 1]))
    assert base == data_fingerprint(from_arrays(X.copy(), [0, 1, 1]))
    X2 = X.copy()
    X2[2, 3, 3] = 1
    assert data_fingerprint(from_arrays(X2, [0, 1, 1])) != base
    assert data_fingerprint(from_arrays(X, [1, 1, 0])) != base
    assert len(base) == 64


def test_fingerprint_of_folder_follows_content_not_location(tmp_path: Path) -> None:
    root = tmp_path / "one"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (6, 6), (i * 40, 0, 0)).save(root / name / f"{i}.png")
    original = data_fingerprint(scan_image_folder(root))
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "two")
    assert data_fingerprint(scan_image_folder(moved)) == original
    img = Image.open(moved / "dog" / "1.png").convert("RGB")
    img.putpixel((5, 5), (0, 0, 1))
    img.save(moved / "dog" / "1.png")
    assert data_fingerprint(scan_image_folder(moved)) != original
