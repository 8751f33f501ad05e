"""The datasets that ship inside packages."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from headstart.data import BUNDLED_DATASETS, bundled, load_bundled
from headstart.data.bundled import DIGIT_CLASSES, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR
from headstart.data.sources import resolve_images
from headstart.errors import DataError

needs_fashion = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed",
)
needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None,
    reason="scikit-image (the photos of mnist-m) is not installed",
)


def test_names() -> None:
    assert set(BUNDLED_DATASETS) == {
        "fashion-mnist",
        "mnist-5k",
        "digits",
        "fashion-mnist-corrupted",
        "mnist-m",
        "fashion-mnist-small",
    }


def test_fashion_mnist() -> None:
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    test = load_bundled("fashion-mnist", "test")
    assert test.arrays is not None and test.arrays.shape == (10000, 28, 28)
    assert test.arrays.dtype == np.uint8 and test.labels.dtype == np.int64
    assert len(test.classes) == 10 and test.classes[0] == "T-shirt/top"
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert test.image(0).size == (28, 28) and test.name == "fashion-mnist[test]"
    assert len(load_bundled("fashion-mnist")) == 60000
    with pytest.raises(DataError, match="train, test"):
        load_bundled("fashion-mnist", "all")


def test_mnist_5k_holdout() -> None:
    train, test = load_bundled("mnist-5k"), load_bundled("mnist-5k", "test")
    assert len(train) == 4000 and len(test) == 1000
    assert train.arrays is not None and train.arrays.shape[1:] == (28, 28)
    assert train.arrays.dtype == np.uint8 and train.arrays.max() == 255
    assert train.classes == [str(d) for d in range(10)]
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert len(load_bundled("mnist-5k", "all")) == 5000


def test_digits_scaling_and_splits() -> None:
    everything = load_bundled("digits", "all")
    assert everything.arrays is not None and everything.arrays.shape == (1797, 8, 8)
    assert everything.arrays.dtype == np.uint8 and everything.arrays.max() == 255
    assert len(everything.classes) == 10
    train, test = load_bundled("digits", "train"), load_bundled("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.arrays is not None and test.arrays is not None
    assert np.array_equal(load_bundled("digits", "test").arrays, test.arrays)  # fixed holdout


def test_unknown_name_and_split() -> None:
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_bundled("digit")
    with pytest.raises(DataError, match="train, test, all"):
        load_bundled("digits", "validation")


def test_cached_arrays_are_read_only() -> None:
    samples = load_bundled("digits", "all")
    assert samples.arrays is not None
    with pytest.raises(ValueError):
        samples.arrays[0, 0, 0] = 1


def _boxes(images: np.ndarray) -> np.ndarray:
    """(height, width) of each image's bounding box of non-zero pixels (0 if blank)."""
    rows, cols = images.any(axis=2), images.any(axis=1)
    heights = np.where(rows.any(1), 28 - rows[:, ::-1].argmax(1) - rows.argmax(1), 0)
    widths = np.where(cols.any(1), 28 - cols[:, ::-1].argmax(1) - cols.argmax(1), 0)
    return np.stack([heights, widths], axis=1)


@needs_skimage
def test_mnist_m_is_mnist_5k_in_colour() -> None:
    everything = load_bundled("mnist-m", "all")
    source = load_bundled("mnist-5k", "all")
    assert everything.arrays is not None and source.arrays is not None
    assert everything.arrays.shape == (5000, 28, 28, 3) and everything.arrays.dtype == np.uint8
    assert not everything.arrays.flags.writeable
    assert everything.classes == DIGIT_CLASSES and everything.name == "mnist-m[all]"
    assert np.array_equal(everything.labels, source.labels)
    assert everything.image(0).mode == "RGB"
    # |crop - digit| per channel: colour, and a different colour from image to image
    pixels = everything.arrays.reshape(5000, -1, 3).astype(np.int16)
    assert (np.abs(pixels[:, :, 0] - pixels[:, :, 1]) > 10).mean() > 0.2
    assert np.all(pixels.mean(axis=1).std(axis=0) > 20)
    # the digit shows: its strokes' colour stands apart from the background's
    strokes = (source.arrays > 128)[..., None]
    stroke_colour = (pixels.reshape(5000, 28, 28, 3) * strokes).sum((1, 2)) / strokes.sum((1, 2))
    ground_colour = (pixels.reshape(5000, 28, 28, 3) * ~strokes).sum((1, 2)) / (~strokes).sum(
        (1, 2)
    )
    assert np.median(np.abs(stroke_colour - ground_colour).max(axis=1)) > 60
    # the same fixed holdout as mnist-5k: same labels, same order
    for split in ("train", "test"):
        assert np.array_equal(
            load_bundled("mnist-m", split).labels, load_bundled("mnist-5k", split).labels
        )
    assert len(load_bundled("mnist-m", "test")) == 1000


@needs_skimage
def test_mnist_m_is_deterministic() -> None:
    first = load_bundled("mnist-m", "test")
    assert first.arrays is not None
    second = load_bundled("mnist-m", "test")
    assert second.arrays is not None and np.array_equal(second.arrays, first.arrays)
    before = first.arrays.tobytes()
    bundled._mnist_m.cache_clear()
    again = load_bundled("mnist-m", "test")
    assert again.arrays is not None and again.arrays.tobytes() == before


def test_blend_on_photos_recipe() -> None:
    digits = np.zeros((3, 28, 28), dtype=np.uint8)
    digits[:, 10:18, 10:18] = 255
    photo = np.zeros((40, 50, 3), dtype=np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 200, 30, 90
    out, which = bundled.blend_on_photos(digits, [photo], seed=0)
    assert out.shape == (3, 28, 28, 3) and which.tolist() == [0, 0, 0]
    assert out[0, 0, 0].tolist() == [200, 30, 90]  # background: the crop
    assert out[0, 12, 12].tolist() == [55, 225, 165]  # stroke: |crop - 255|


@needs_fashion
def test_fashion_mnist_small_is_a_scale_shift() -> None:
    everything = load_bundled("fashion-mnist-small", "all")
    source = load_bundled("fashion-mnist", "test")
    assert everything.arrays is not None and source.arrays is not None
    assert everything.arrays.shape == (10000, 28, 28) and everything.arrays.dtype == np.uint8
    assert not everything.arrays.flags.writeable
    assert everything.classes == FASHION_MNIST_CLASSES
    assert np.array_equal(everything.labels, source.labels)
    small, original = _boxes(everything.arrays), _boxes(source.arrays)
    assert (small.max(axis=1) < original.max(axis=1)).mean() > 0.95
    assert small.max() <= round(28 * bundled.SMALL_SCALE[1])
    assert np.all(everything.arrays.reshape(10000, -1).max(axis=1) > 0)  # none lost
    # placed at random: the boxes' corners spread over the canvas
    rows = everything.arrays.any(axis=2).argmax(axis=1)
    assert rows.min() <= 2 and rows.max() >= 12
    assert np.bincount(load_bundled("fashion-mnist-small", "test").labels).tolist() == [200] * 10


@needs_fashion
def test_fashion_mnist_small_is_deterministic() -> None:
    first = load_bundled("fashion-mnist-small", "train")
    assert first.arrays is not None
    before = first.arrays.tobytes()
    second = load_bundled("fashion-mnist-small", "train")
    assert second.arrays is not None and second.arrays.tobytes() == before
    bundled._fashion_mnist_small.cache_clear()
    again = load_bundled("fashion-mnist-small", "train")
    assert again.arrays is not None and again.arrays.tobytes() == before


@pytest.mark.parametrize(
    ("spec", "name", "n"),
    [
        ("mnist-m", "mnist-m[train]", 4000),
        ("mnist-m:test", "mnist-m[test]", 1000),
        ("fashion-mnist-small:test", "fashion-mnist-small[test]", 2000),
    ],
)
def test_shifted_targets_resolve_as_specs(spec: str, name: str, n: int) -> None:
    if spec.startswith("mnist-m") and importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image (the photos of mnist-m) is not installed")
    if (
        spec.startswith("fashion")
        and not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
    ):
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    samples = resolve_images(spec)
    assert samples.name == name and len(samples) == n
