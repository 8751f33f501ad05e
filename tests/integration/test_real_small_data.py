"""The defaults at a few labels per class, on the real offline backbones."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from headstart import PretrainedEmbedder, TransferClassifier
from headstart.data import load_bundled, per_class_subsample
from headstart.data.text import load_bundled_text

pytestmark = pytest.mark.slow


def _stripes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of horizontal and ``n`` of vertical stripes, noisy: trivially separable."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 80, (2 * n, 32, 32)).astype(np.uint8)
    x[:n, ::4, :] = 255
    x[n:, :, ::4] = 255
    return x, np.array(["horizontal"] * n + ["vertical"] * n)


def test_estimator_with_no_arguments_fits_forty_separable_arrays():
    x, y = _stripes(20)
    clf = TransferClassifier().fit(x, y)
    assert clf.score(x, y) > 0.95
    assert clf.metrics_["params"]["auto"]["strategy"] in ("linear-probe", "prototypes")
    x_new, y_new = _stripes(20, seed=1)
    assert clf.score(x_new, y_new) > 0.95


def test_default_fit_is_at_or_above_logistic_regression_on_frozen_features():
    """Digits at 10 labels per class: the default (probe on several layers, flipped views,
    cross-validated) against scikit-learn's logistic regression on the final features."""
    pool, test = load_bundled("digits", "train"), load_bundled("digits", "test")
    idx = per_class_subsample(pool.labels, 10, seed=0, classes=pool.classes)
    x_tr, y_tr = pool.arrays[idx], np.asarray(pool.labels)[idx]
    clf = TransferClassifier().fit(x_tr, y_tr)
    ours = clf.score(test.arrays, test.labels)
    emb = PretrainedEmbedder(image_size=64).fit(x_tr)
    anchor = LogisticRegression(max_iter=5000).fit(emb.transform(x_tr), y_tr)
    theirs = anchor.score(emb.transform(test.arrays), test.labels)
    assert ours >= theirs


def test_estimator_with_no_arguments_on_a_few_dozen_texts():
    bbc = load_bundled_text("bbc-news", "train")
    idx = per_class_subsample(bbc.labels, 6, seed=0, classes=bbc.classes)
    texts = [bbc.texts[i] for i in idx]
    labels = [bbc.classes[int(bbc.labels[i])] for i in idx]
    clf = TransferClassifier(max_length=128).fit(texts, labels)
    test = load_bundled_text("bbc-news", "test")
    keep = per_class_subsample(test.labels, 20, seed=1, classes=test.classes)
    y = [test.classes[int(test.labels[i])] for i in keep]
    assert clf.score([test.texts[i] for i in keep], y) > 0.8  # chance is 0.2
