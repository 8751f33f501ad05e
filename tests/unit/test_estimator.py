"""The scikit-learn facade: estimator rules, GridSearchCV, Pipeline, save / load."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from headstart import PretrainedEmbedder, TransferClassifier
from tests.conftest import toy_arrays


def _clf(**kw):
    return TransferClassifier(
        **{
            "backbone": "toy-resnet",
            "strategy": "linear-probe",
            "head": "logistic",
            "image_size": 32,
            **kw,
        }
    )


def test_estimator_rules_and_prediction():
    X, y = toy_arrays(n_per_class=12)
    labels = np.array(["a", "b", "c"])[y]
    clf = _clf()
    assert clone(clf).get_params() == clf.get_params()
    with pytest.raises(NotFittedError, match="fit"):
        clf.predict(X)
    assert clf.fit(X, labels) is clf
    assert list(clf.classes_) == ["a", "b", "c"]
    proba = clf.predict_proba(X)
    assert proba.shape == (36, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert set(clf.predict(X)) <= {"a", "b", "c"}
    assert clf.score(X, labels) > 0.8


def test_save_and_load_give_identical_predictions(tmp_path):
    X, y = toy_arrays(n_per_class=10)
    clf = _clf(strategy="finetune", head="linear", epochs=1).fit(X, y)
    clf.save(tmp_path / "m")
    again = TransferClassifier.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(clf.predict_proba(X), again.predict_proba(X))
    assert again.get_params() == clf.get_params()
    np.testing.assert_array_equal(again.classes_, clf.classes_)


def test_grid_search_and_cross_val_score():
    X, y = toy_arrays(n_per_class=10)
    gs = GridSearchCV(_clf(), {"head": ["logistic", "ridge"]}, cv=2)
    gs.fit(X, y)
    assert gs.best_params_["head"] in ("logistic", "ridge")
    assert len(gs.cv_results_["mean_test_score"]) == 2
    assert gs.best_score_ > 0.5
    scores = cross_val_score(_clf(), X, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.5


def test_pretrained_embedder_in_a_pipeline():
    X, y = toy_arrays(n_per_class=10)
    emb = PretrainedEmbedder(backbone="toy-resnet", image_size=32)
    with pytest.raises(NotFittedError):
        emb.transform(X)
    Z = emb.fit_transform(X)
    assert Z.shape == (30, 96)
    pipe = make_pipeline(
        PretrainedEmbedder(backbone="toy-resnet", image_size=32), LogisticRegression(max_iter=2000)
    )
    assert pipe.fit(X, y).score(X, y) > 0.8
