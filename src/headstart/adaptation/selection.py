"""Label-free model selection for domain adaptation: scores that rank trained candidates
(hyper-parameters, checkpoints, methods) without target labels, each written from its
paper (numpy, not differentiable):

- :func:`soft_neighborhood_density`: SND (Saito et al. 2021, "Tune it the Right Way:
  Unsupervised Validation of Domain Adaptation via Soft Neighborhood Density"), the mean
  entropy of each target example's soft neighbourhood in the space of the model's class
  probabilities. Higher is better: outputs that form dense clusters spread each
  example's similarity over many close neighbours.
- :func:`deep_embedded_validation`: DEV (You et al. 2019, "Towards Accurate Model
  Selection in Deep Unsupervised Domain Adaptation", ICML), the source-validation loss
  importance-weighted by the density ratio ``p_target(x) / p_source(x)`` of the features
  (estimated by a domain classifier), with a control variate that lowers its variance.
  Lower is better: it estimates the target risk.
- :func:`per_example_cross_entropy`: the per-row losses DEV weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headstart.errors import ConfigError

SND_TEMPERATURE = 0.05
SND_MAX_ROWS = 2000
DEV_PROB_CLIP = 1e-6


def _matrix(x: object, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ConfigError(
            f"{name} as a non-empty 2-D array (rows, columns)",
            f"{name} of shape {a.shape}",
            f"pass {name} with one row per example",
        )
    if not np.isfinite(a).all():
        raise ConfigError(
            f"finite values in {name}",
            f"{int((~np.isfinite(a)).sum())} NaN or infinite values in {name}",
            f"remove or repair the non-finite rows of {name}",
        )
    return a


def soft_neighborhood_density(
    probs: np.ndarray,
    temperature: float = SND_TEMPERATURE,
    max_rows: int = SND_MAX_ROWS,
    seed: int = 0,
) -> float:
    """SND of the (N, K) target class probabilities (softmax outputs); higher is better.

    Each row is L2-normalised; the cosine similarity of every pair of rows is divided by
    ``temperature`` and, for each row, turned into a softmax over the *other* N - 1 rows
    (the self-similarity is removed, not merely lowered); SND is the mean over rows of
    that distribution's entropy (nats). Computed in float64, the softmax after subtracting
    each row's maximum. With N - 1 neighbours SND lies in ``[0, log(N - 1)]``, so scores
    compare across candidates evaluated on the same target rows, not across row counts.

    The reference code of Saito et al. fills the diagonal with ``-1 / temperature``
    (cosine -1) instead; at ``temperature=0.05`` that leaves the self term a weight of at
    most ``exp(-40)`` of the nearest neighbour's, so the two agree to that precision.

    Above ``max_rows`` rows the score is computed on ``max_rows`` rows drawn without
    replacement by ``numpy.random.default_rng(seed).choice(N, max_rows, replace=False)``,
    so the (rows x rows) similarity matrix stays bounded (2000 rows: 32 MB) and the
    result is deterministic for a given ``seed``.

    Caveat (noted by the paper): outputs collapsed onto a single class are all identical,
    every neighbour is equally close and SND reaches its maximum ``log(N - 1)``; check
    that the predictions cover the classes before trusting a high score.
    """
    p = _matrix(probs, "probs")
    if not temperature > 0:
        raise ConfigError("temperature > 0", f"temperature={temperature!r}", "use the paper's 0.05")
    if max_rows < 2:
        raise ConfigError("max_rows >= 2", f"max_rows={max_rows!r}", "use the default 2000")
    if len(p) < 2:
        raise ConfigError(
            "at least 2 rows of probabilities (each row needs a neighbour)",
            f"probs of shape {p.shape}",
            "score on more target examples",
        )
    if len(p) > max_rows:
        p = p[np.random.default_rng(seed).choice(len(p), max_rows, replace=False)]
    u = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    z = (u @ u.T) / temperature
    np.fill_diagonal(z, -np.inf)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)  # the diagonal is exp(-inf) = 0
    q = e / e.sum(axis=1, keepdims=True)
    logq = np.log(np.where(q > 0, q, 1.0))  # 0 * log 0 = 0
    return float(-(q * logq).sum(axis=1).mean())


def per_example_cross_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``-log p[i, labels[i]]`` for each row (nats), the probability clipped below at
    1e-12 so that a confident mistake costs at most ``log(1e12)`` ~ 27.6."""
    p = _matrix(probs, "probs")
    y = np.asarray(labels)
    if y.shape != (len(p),):
        raise ConfigError(
            f"labels of shape ({len(p)},), one per row of probs {p.shape}",
            f"labels of shape {y.shape}",
            "pass one integer class index per example",
        )
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ConfigError(
            f"integer labels in [0, {p.shape[1]})",
            f"labels of dtype {y.dtype} in [{y.min()}, {y.max()}]",
            "encode the labels as class indices of the probability columns",
        )
    picked = p[np.arange(len(p)), y]
    out: np.ndarray = -np.log(np.clip(picked, 1e-12, None))
    return out


@dataclass(frozen=True, eq=False)
class DEVResult:
    """The outcome of :func:`deep_embedded_validation`.

    ``risk``: the DEV estimate of the target risk (lower is better); ``weights``: the
    density ratio of each source-validation row (read-only); ``eta``: the control-variate
    coefficient; ``plain``: the importance-weighted mean loss without the control variate.
    """

    risk: float
    weights: np.ndarray
    eta: float
    plain: float


def deep_embedded_validation(
    source_train_features: np.ndarray,
    target_features: np.ndarray,
    source_val_features: np.ndarray,
    source_val_losses: np.ndarray,
    seed: int = 0,
) -> DEVResult:
    """DEV (You et al. 2019): the target risk estimated from labelled source-validation
    rows, importance-weighted by ``w(x) = p_target(x) / p_source(x)``; lower is better.

    1. A domain classifier (scikit-learn ``LogisticRegression``, C=1, on features
       standardised with the mean and scale of the pooled source-train and target rows)
       learns source-train rows (label 0) against target rows (label 1). It is fitted with
       ``class_weight="balanced"``: every row is used (nothing is discarded, unlike
       equal-size subsampling, and the result does not depend on which rows a draw
       keeps), and each domain carries half of the total weight, so the classifier's
       effective prior is 1/2 for each domain. Bayes' rule then gives
       ``p_t(x) / p_s(x) = [p(t|x) / p(s|x)] * [P(s) / P(t)]`` with ``P(s) / P(t) = 1``:
       the odds are the density ratio as they stand. (Unweighted, the prior factor would
       be ``n_source_train / n_target``, the paper's ``N_s / N_t``.)
    2. ``p(t|x)`` of each source-validation row is clipped to ``[1e-6, 1 - 1e-6]`` so that
       the odds stay finite (``w`` in ``[~1e-6, ~1e6]``); the weights are not otherwise
       clipped or normalised, as in the paper.
    3. ``L = w * loss``; the control variate ``eta = -Cov(L, w) / Var(w)`` (both with the
       same normalisation; 0 when the weights are constant, ``Var(w) <= 1e-12 *
       mean(w^2)``), and ``risk = mean(L) + eta * mean(w) - eta``: since ``E[w] = 1``
       under the source distribution, the term ``eta * (mean(w) - 1)`` has expectation 0
       and cancels the part of ``mean(L)``'s noise that follows the weights.

    ``seed`` is the classifier's ``random_state`` (the lbfgs solver used is
    deterministic, so it matters only to solvers that shuffle). The losses are per row,
    e.g. :func:`per_example_cross_entropy` of the candidate model on the validation rows;
    the features are those of the same candidate (the paper uses its embedding).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    src = _matrix(source_train_features, "source_train_features")
    tgt = _matrix(target_features, "target_features")
    val = _matrix(source_val_features, "source_val_features")
    for name, a in (("target_features", tgt), ("source_val_features", val)):
        if a.shape[1] != src.shape[1]:
            raise ConfigError(
                f"{name} with as many columns as source_train_features {src.shape}",
                f"{name} of shape {a.shape}",
                "embed every split with the same model and layer",
            )
    loss = np.asarray(source_val_losses, dtype=np.float64)
    if loss.shape != (len(val),):
        raise ConfigError(
            f"source_val_losses of shape ({len(val)},), one loss per row of "
            f"source_val_features {val.shape}",
            f"source_val_losses of shape {loss.shape}",
            "pass the per-example losses of the source-validation rows, in the same order",
        )
    if not np.isfinite(loss).all():
        raise ConfigError(
            "finite source_val_losses",
            f"{int((~np.isfinite(loss)).sum())} NaN or infinite losses",
            "clip the probabilities before taking logs (per_example_cross_entropy does)",
        )

    x = np.vstack([src, tgt])
    y = np.r_[np.zeros(len(src)), np.ones(len(tgt))]
    scaler = StandardScaler().fit(x)
    with threadpool_limits(limits=1, user_api="blas"):
        clf = LogisticRegression(
            C=1.0, class_weight="balanced", max_iter=2000, random_state=seed
        ).fit(scaler.transform(x), y)
        p_target = clf.predict_proba(scaler.transform(val))[:, 1]
    p_target = np.clip(p_target, DEV_PROB_CLIP, 1.0 - DEV_PROB_CLIP)
    w = p_target / (1.0 - p_target)

    weighted = w * loss
    var_w = float(np.var(w))
    if var_w <= 1e-12 * float(np.mean(w * w)):
        eta = 0.0
    else:
        cov = float(np.mean((weighted - weighted.mean()) * (w - w.mean())))
        eta = -cov / var_w
    plain = float(weighted.mean())
    risk = plain + eta * float(w.mean()) - eta
    w.setflags(write=False)
    return DEVResult(risk=risk, weights=w, eta=eta, plain=plain)
