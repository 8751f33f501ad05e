"""scikit-learn linear classifiers as heads, folded into a torch linear layer.

A standardising scaler plus a linear model (logistic regression, linear SVM, ridge) is
itself a linear map, so after fitting we fold scaler and coefficients into one
``weight`` / ``bias`` pair. The run folder then holds a plain linear head in safetensors:
nothing is pickled, and prediction is the same code path for every head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from headstart.device import sklearn_seed
from headstart.registry import Registry

#: spreads below this fraction of the median feature spread count as constant features
SCALE_FLOOR = 1e-3

HEADS: Registry[Callable[[float], object] | None] = Registry("head")
HEADS.add("linear", None, "A torch linear layer trained with AdamW on cached embeddings.")
HEADS.add(
    "prototype",
    None,
    "Nearest class mean by cosine (no training; works from one example per class).",
)
HEADS.add(
    "logistic",
    lambda c: LogisticRegression(C=c, max_iter=3000),
    "scikit-learn logistic regression (standardised features).",
)
HEADS.add(
    "svm",
    lambda c: LinearSVC(C=c, max_iter=10000),
    "scikit-learn linear SVM (standardised features; scores through softmax).",
)
HEADS.add(
    "ridge",
    lambda c: RidgeClassifier(alpha=1.0 / c),
    "scikit-learn ridge classifier (standardised features).",
)


def fit_sklearn_head(
    name: str, x: np.ndarray, y: np.ndarray, num_classes: int, c: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a registered scikit-learn head; return an equivalent (weight, bias). ``seed``:
    the run's seed; the solver's own random state is derived from it (a linear SVM's
    coordinate order), never taken from numpy's process-wide generator."""
    factory = HEADS.get(name)
    if factory is None:
        raise ValueError(f"head {name!r} is a torch head, not a scikit-learn one")
    scaler = StandardScaler().fit(x)
    # a dead feature (e.g. one of MiniLM's dimensions is ~1e-33 everywhere) has a tiny but
    # non-zero spread; dividing by it gives weights of 1e31 that wreck any later fine-tuning
    # (lp-ft). No feature is scaled up more than 1000 times as much as a typical one.
    scaler.scale_ = np.maximum(
        scaler.scale_, SCALE_FLOOR * max(float(np.median(scaler.scale_)), 1e-12)
    )
    model: Any = factory(c)
    if "random_state" in model.get_params():  # a solver that draws (a linear SVM's order)
        model.set_params(random_state=sklearn_seed(seed, f"head {name}"))
    # one BLAS thread: after a torch forward pass, torch's OpenMP threads and a
    # multi-threaded BLAS contend for the cores and the solver runs many times slower
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(scaler.transform(x), y)
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    classes = np.asarray(model.classes_)
    if coef.shape[0] == 1:  # binary: one score s for classes_[1]; logits (0, s)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, -1e4)  # classes absent from the training data never win
    scale = scaler.scale_
    for row, cls in enumerate(classes):
        w = coef[row] / scale
        weight[int(cls)] = w
        bias[int(cls)] = intercept[row] - float(w @ scaler.mean_)
    return torch.tensor(weight, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32)
