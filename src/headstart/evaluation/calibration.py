"""Calibration: temperature scaling (Guo et al., 2017) and expected calibration error.

Temperature scaling divides every logit by one scalar T > 0 fitted on the validation
split by minimising the negative log-likelihood. It leaves the predicted class (the
argmax) unchanged and only makes the probabilities honest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar

#: T is kept in this range: a handful of validation examples must not give T -> 0 or inf
T_MIN, T_MAX = 0.05, 20.0
N_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor | np.ndarray) -> float:
    """The temperature that minimises the NLL of ``softmax(logits / T)`` on ``labels``.

    Found by a bounded search over log T (convex in 1/T, so one minimum); 1.0 when
    there is nothing to fit on, or when every example is classified correctly (then T is
    not identifiable: the NLL only falls as T shrinks)."""
    logits = torch.as_tensor(logits, dtype=torch.float64).detach().cpu()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(y) == 0 or logits.ndim != 2 or logits.shape[1] < 2:
        return 1.0
    if bool((logits.argmax(1) == y).all()):
        # no validation error: the NLL falls for ever as T -> 0, so the data cannot say
        # how sure the model should be; sharpening it to the bound would be overconfidence
        return 1.0
    y_np = y.numpy()
    z = logits.numpy()

    def nll(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        scaled = scaled - scaled.max(1, keepdims=True)
        log_p = scaled - np.log(np.exp(scaled).sum(1, keepdims=True))
        return float(-log_p[np.arange(len(y_np)), y_np].mean())

    # convex in 1/T: a bounded scalar search on log T finds the one minimum (no optimiser
    # state, and no second gradient loop beside the training loop's)
    found = minimize_scalar(
        nll, bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded", options={"xatol": 1e-6}
    )
    log_t = found.x
    t = float(np.exp(log_t))
    if not np.isfinite(t):
        return 1.0
    return float(np.clip(t, T_MIN, T_MAX))


def softmax(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return torch.softmax(z, dim=1).numpy()


def reliability(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> dict[str, list[float]]:
    """Confidence (max probability) binned into ``n_bins`` equal-width bins: per bin the
    mean confidence, the accuracy and the count (empty bins have count 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, 0.0)
        acc = np.where(count > 0, acc_sum / count, 0.0)
    return {
        "edges": edges.tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": acc.tolist(),
        "count": count.astype(int).tolist(),
    }


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width bins."""
    if len(labels) == 0:
        return float("nan")
    r = reliability(probs, labels, n_bins)
    count = np.asarray(r["count"], dtype=np.float64)
    gap = np.abs(np.asarray(r["accuracy"]) - np.asarray(r["confidence"]))
    return float((count * gap).sum() / count.sum())


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.asarray(probs)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean()) if len(labels) else float("nan")


def calibration_summary(
    logits: torch.Tensor, labels: np.ndarray, temperature: float
) -> dict[str, Any]:
    """ECE and NLL before and after temperature scaling, with both reliability curves."""
    before, after = softmax(logits), softmax(logits, temperature)
    return {
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
        "nll_before": nll(before, labels),
        "nll_after": nll(after, labels),
        "reliability_before": reliability(before, labels),
        "reliability_after": reliability(after, labels),
    }
