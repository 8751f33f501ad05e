"""The datasets that ship inside packages."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.data import BUNDLED_DATASETS, load_bundled
from headstart.data.bundled import FASHION_MNIST_DIR
from headstart.errors import DataError


def test_names() -> None:
    assert set(BUNDLED_DATASETS) == {
        "fashion-mnist",
        "mnist-5k",
        "digits",
        "fashion-mnist-corrupted",
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
