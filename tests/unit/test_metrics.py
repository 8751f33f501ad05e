"""Evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from headstart.evaluation import classification_metrics


def test_metrics_match_scikit_learn_and_count_everything():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    m = classification_metrics(y, p, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx((y == p).mean())
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert np.array(m["confusion_matrix"]).sum() == 200
    assert [m["per_class"][c]["support"] for c in "abcd"] == np.bincount(y, minlength=4).tolist()


def test_a_class_absent_from_the_evaluated_set_does_not_count_as_zero():
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, y.copy(), ["a", "b", "c"])
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0
    assert m["per_class"]["c"]["support"] == 0
