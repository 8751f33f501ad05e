"""The default head on embeddings: a multinomial logistic regression fitted to its optimum.

A probe trained for a few epochs of SGD and early-stopped on a validation split of one or
two examples per class stops long before it fits (the first measurements on held-out
data: 0.39 where a plain scikit-learn logistic regression reached 0.74). This probe is
fitted by scikit-learn's L-BFGS solver to a small gradient tolerance instead, and:

- the features are rescaled to a fixed mean norm (:data:`FEATURE_NORM`), so that the
  regularisation strength ``C`` means the same for every backbone (EfficientNet's pooled
  features have a norm near 60, MiniLM's near 2);
- ``C`` is chosen by stratified k-fold cross-validation on the labelled examples, with a
  one-standard-error rule towards :data:`DEFAULT_C`: with few examples the fold accuracies
  are noisy, and a strongly regularised probe (close to nearest class means) is the safe
  choice unless the data say clearly otherwise;
- extra training views (the embeddings of horizontally flipped images) enter as further
  examples; a fold never splits an example from its views, and held-out examples are
  scored on the mean of their views, as at test time;
- the out-of-fold logits at the chosen ``C`` are kept, so temperature scaling can be
  fitted without a validation split.

The result is folded into one ``(weight, bias)`` pair of a linear layer on the raw
embeddings: a run folder holds a plain linear head, nothing is pickled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

#: embeddings are rescaled to this mean L2 norm before fitting (C is then comparable)
FEATURE_NORM = 50.0
#: the regularisation used without enough examples to cross-validate (1 per class)
DEFAULT_C = 1.0
#: the candidates cross-validation picks from
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: folds of the cross-validation (fewer when a class has fewer examples)
CV_FOLDS = 5
#: the final fit stops when the largest gradient entry is below this
TOLERANCE = 1e-6


@dataclass
class ProbeFit:
    """A fitted probe folded into a linear layer on the raw embeddings."""

    weight: torch.Tensor  # (num_classes, D)
    bias: torch.Tensor  # (num_classes,)
    c: float
    scale: float  # the factor the embeddings were multiplied by before fitting
    views: int
    cv: dict[str, Any] = field(default_factory=dict)
    #: out-of-fold logits (N, num_classes) of the labelled examples at the chosen C, or
    #: None when there were too few examples to cross-validate
    oof_logits: np.ndarray | None = None
    #: fitted by minibatches streamed from disk-backed embeddings (not to convergence)
    streamed: bool = False

    def summary(self) -> dict[str, Any]:
        return {"c": self.c, "scale": self.scale, "views": self.views, **self.cv}


def _lr(c: float, tol: float = 1e-4) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=10_000, tol=tol)


def _logits(model: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits (N, num_classes); classes missing from the model's training data get -1e4."""
    w, b = _full_coef(model, num_classes)
    return np.asarray(x @ w.T + b)


def _full_coef(model: LogisticRegression, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: one score s for classes_[1]; logits (-s/2, s/2)
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.full(num_classes, -1e4)  # classes absent from the training data never win
    for row, cls in enumerate(np.asarray(model.classes_)):
        weight[int(cls)] = coef[row]
        bias[int(cls)] = intercept[row]
    return weight, bias


def _stack(views: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    return np.concatenate([v[idx] for v in views])


def cross_validate_c(
    views: list[np.ndarray],
    y: np.ndarray,
    num_classes: int,
    grid: tuple[float, ...] = C_GRID,
    folds: int = CV_FOLDS,
    seed: int = 0,
) -> tuple[float, dict[str, Any], np.ndarray | None]:
    """The C to use, what the cross-validation saw, and the out-of-fold logits at that C.

    ``views``: the (already rescaled) embeddings of each view, aligned with ``y``."""
    counts = np.bincount(y, minlength=num_classes)
    present = counts[counts > 0]
    k = int(min(folds, present.min())) if len(present) > 1 else 0
    if k < 2:
        return DEFAULT_C, {"policy": "default C (fewer than 2 examples in a class)"}, None
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    mean_view = np.mean(views, axis=0)
    oof = {c: np.zeros((len(y), num_classes)) for c in grid}
    for tr, va in splitter.split(mean_view, y):
        x_tr, y_tr = _stack(views, tr), np.tile(y[tr], len(views))
        model = _lr(grid[0])
        model.warm_start = True  # each C starts from the previous (smaller) C's optimum
        for c in sorted(grid):
            model.C = c
            model.fit(x_tr, y_tr)
            oof[c][va] = _logits(model, mean_view[va], num_classes)
    accuracy = {c: float(np.mean(oof[c].argmax(1) == y)) for c in grid}
    best = max(grid, key=lambda c: (accuracy[c], -abs(np.log(c / DEFAULT_C))))
    se = float(np.sqrt(accuracy[best] * (1 - accuracy[best]) / len(y)))
    chosen = best
    if DEFAULT_C in accuracy and accuracy[DEFAULT_C] >= accuracy[best] - se:
        chosen = DEFAULT_C  # within one standard error of the best: keep the default
    info = {
        "policy": f"C by {k}-fold cross-validation (one-standard-error rule toward "
        f"C={DEFAULT_C:g})",
        "folds": k,
        "cv_accuracy": {f"{c:g}": round(a, 4) for c, a in accuracy.items()},
        "cv_accuracy_chosen": accuracy[chosen],
    }
    return chosen, info, oof[chosen]


def fit_probe(
    views: list[np.ndarray] | np.ndarray,
    y: np.ndarray,
    num_classes: int,
    c: float | None = None,
    seed: int = 0,
) -> ProbeFit:
    """Fit the probe on embeddings ``views`` (one (N, D) array, or a list of them: the same
    N examples seen through several views) with labels ``y``. ``c=None``: chosen by
    cross-validation when every class has 2 examples or more, else :data:`DEFAULT_C`."""
    vs = (
        [np.asarray(views, dtype=np.float64)]
        if not isinstance(views, list)
        else [np.asarray(v, dtype=np.float64) for v in views]
    )
    y = np.asarray(y, dtype=np.int64)
    scale = FEATURE_NORM / max(float(np.mean(np.linalg.norm(vs[0], axis=1))), 1e-12)
    # the optimum of an L2-penalised linear model lies in the span of its training
    # examples: fitting in an orthonormal basis of that span is exact and much faster
    # when there are fewer examples than dimensions (a 1280-d embedding, 200 examples)
    basis = _row_space(np.concatenate(vs))
    vs = [v * scale @ basis for v in vs]
    oof = None
    # one BLAS thread: after a torch forward pass, torch's OpenMP threads and a
    # multi-threaded BLAS contend for the cores and the solver runs many times slower
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if c is None:
            c, info, oof = cross_validate_c(vs, y, num_classes, seed=seed)
        else:
            info = {"policy": f"C={c:g} as given"}
        model = _lr(c, TOLERANCE).fit(np.concatenate(vs), np.tile(y, len(vs)))
    w, b = _full_coef(model, num_classes)
    return ProbeFit(
        weight=torch.tensor(w @ basis.T * scale, dtype=torch.float32),
        bias=torch.tensor(b, dtype=torch.float32),
        c=float(c),
        scale=scale,
        views=len(vs),
        cv=info,
        oof_logits=oof,
    )


def _row_space(x: np.ndarray) -> np.ndarray:
    """An orthonormal (D, r) basis of the span of the rows of ``x`` (the identity when the
    rows span every dimension)."""
    n, d = x.shape
    if n >= d:
        return np.eye(d)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > s.max() * max(n, d) * np.finfo(np.float64).eps
    return np.asarray(vt[keep].T)


def probe_gradient(
    weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, c: float
) -> np.ndarray:
    """The gradient of the probe's objective ``C * sum(cross-entropy) + |W|^2 / 2`` (in the
    rescaled feature space ``x``) at ``(weight, bias)``: zero at the optimum."""
    logits = x @ weight.T + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    grad_w = c * p.T @ x + weight
    grad_b = c * p.sum(0)
    return np.concatenate([grad_w.ravel(), grad_b])


#: the streaming probe: passes over the training rows, Adam's learning rate, rows per step
STREAM_EPOCHS = 5
STREAM_LR = 3e-3
STREAM_BATCH = 512
#: the share of training examples held out to score the streaming probe (at most
#: STREAM_HOLDOUT_MAX); it stands in for the cross-validated accuracy
STREAM_HOLDOUT = 0.05
STREAM_HOLDOUT_MAX = 10_000


def _standardiser(x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and spread of a disk-backed matrix, one pass in float64 (spreads
    floored as the scikit-learn heads floor them)."""
    total = torch.zeros(x.dim, dtype=torch.float64)
    sq = torch.zeros(x.dim, dtype=torch.float64)
    for batch in x.batches():
        b = batch.double()
        total += b.sum(0)
        sq += (b * b).sum(0)
    n = max(len(x), 1)
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(0).sqrt()
    std = torch.maximum(std, 1e-3 * max(float(std.median()), 1e-12) * torch.ones_like(std))
    return mean.float(), std.float()


@dataclass
class StreamPlan:
    """What a probe streamed from disk is fitted with: the held-out examples, the
    standardisation, and the penalty of its objective (see :func:`plan_streamed_probe`)."""

    held: np.ndarray
    mean: torch.Tensor
    std: torch.Tensor
    c: float
    n_train: int
    epochs: int = STREAM_EPOCHS
    lr: float = STREAM_LR
    batch: int = STREAM_BATCH

    def loss(self, layer: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective ``|W|^2 / 2 + C * sum(loss)`` divided by ``C * n_train``: the mean
        loss of the batch plus a matching share of the penalty (``x`` standardised)."""
        penalty = layer.weight.square().sum() / (2 * self.c * self.n_train)
        return torch.nn.functional.cross_entropy(layer(x), y) + penalty


def plan_streamed_probe(
    views: list[Any], y: np.ndarray, c: float = DEFAULT_C, seed: int = 0
) -> StreamPlan:
    """The probe for a training split too large for memory (``views``: disk-backed
    matrices, :class:`~headstart.features.store.LazyEmbeddings`, one per view) is the
    same multinomial logistic regression with the same penalty, fitted by minibatch Adam
    on standardised features read shard by shard (the training loop runs it).

    With this many examples the penalty matters little and cross-validating C costs many
    passes over the disk for no gain, so C stays :data:`DEFAULT_C`; a seeded
    :data:`STREAM_HOLDOUT` of the examples is held out and its accuracy (on the mean of the
    views, as at test time) is reported in place of the cross-validated one."""
    n = len(y)
    rng = np.random.default_rng(seed)
    n_hold = min(int(n * STREAM_HOLDOUT), STREAM_HOLDOUT_MAX) if n >= 100 else 0
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, n_hold, replace=False)] = True
    mean, std = _standardiser(views[0])
    n_train = max(int((~held).sum()) * len(views), 1)
    return StreamPlan(held, mean, std, float(c), n_train)


def streamed_probe_fit(
    layer: torch.nn.Linear, views: list[Any], y: np.ndarray, plan: StreamPlan
) -> ProbeFit:
    """The :class:`ProbeFit` of ``layer`` trained on standardised features: folded back to
    raw features, with its accuracy on the held-out examples."""
    y = np.asarray(y, dtype=np.int64)
    layer = layer.cpu()
    with torch.no_grad():
        weight = layer.weight / plan.std
        bias = layer.bias - weight @ plan.mean
    n_hold = int(plan.held.sum())
    info: dict[str, Any] = {
        "policy": f"C={plan.c:g}; minibatch Adam on standardised features streamed from disk "
        f"({plan.epochs} passes, batch {plan.batch}), accuracy on a held-out "
        f"{n_hold} examples",
        "holdout": n_hold,
    }
    if n_hold:
        hold_idx = np.flatnonzero(plan.held)
        x_hold = torch.stack([v.take(hold_idx) for v in views]).mean(0)
        with torch.no_grad():
            pred = (x_hold @ weight.T + bias).argmax(1).numpy()
        info["cv_accuracy_chosen"] = int(np.sum(pred == y[hold_idx])) / n_hold
    return ProbeFit(
        weight=weight.detach().float(),
        bias=bias.detach().float(),
        c=plan.c,
        scale=1.0,
        views=len(views),
        cv=info,
        oof_logits=None,
        streamed=True,
    )
