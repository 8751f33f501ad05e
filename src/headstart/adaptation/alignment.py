"""Closed-form alignment of frozen features between a source and a target domain (numpy).

Both maps are fitted on unlabelled features of each domain and need no training:

- :func:`standardize_domains`: each domain standardised by its own mean and spread (per
  dimension). A linear head fitted on the standardised source features is applied to the
  target features standardised by the target's statistics. The first- and second-moment
  form of "per-domain normalisation"; it is what a BatchNorm layer re-estimated on the
  target (AdaBN, Li et al. 2016) does to the last layer only.
- :func:`coral_map`: CORAL (Sun, Feng & Saenko 2016, "Return of Frustratingly Easy Domain
  Adaptation"): the source features whitened with their own covariance and re-coloured
  with the target's, ``(x_s - mu_s) (C_s + l I)^(-1/2) (C_t + l I)^(1/2) + mu_t``; a head
  fitted on the mapped source features applies to the target features as they are. The
  paper adds the identity (``l = 1``) to covariances of standardised features; here ``l``
  is ``ridge`` times the mean feature variance, the same thing at any feature scale. The
  means are matched too (the paper's features were centred). With fewer examples than
  dimensions the covariances are low-rank and the ridge keeps the map well-posed; the
  matrix square roots come from one eigendecomposition each.

A map is an :class:`AffineMap` ``x -> x @ weight + bias`` (``weight`` a vector for a
per-dimension map), so a linear head ``W, b`` fitted in the mapped space folds into a
linear head on the raw features: ``W weight^T``, ``b + W bias``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headstart.errors import ConfigError

#: a dimension whose spread is below this fraction of the mean spread is left unscaled
MIN_SPREAD = 1e-6
#: CORAL's ridge, as a multiple of the mean feature variance (the paper: 1 on
#: standardised features)
CORAL_RIDGE = 1.0


@dataclass(frozen=True)
class AffineMap:
    """``x -> x @ weight + bias``; ``weight`` of shape (D,) is a per-dimension scale."""

    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.weight.ndim == 1:
            return x * self.weight + self.bias
        return x @ self.weight + self.bias

    def fold(self, head_weight: np.ndarray, head_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The linear head on raw features equal to ``(W, b)`` applied after this map."""
        w = np.asarray(head_weight, dtype=np.float64)
        folded = w * self.weight[None, :] if self.weight.ndim == 1 else w @ self.weight.T
        return folded, np.asarray(head_bias, dtype=np.float64) + w @ self.bias


def _check(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(source, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if s.ndim != 2 or t.ndim != 2 or s.shape[1] != t.shape[1] or len(s) < 2 or len(t) < 2:
        raise ConfigError(
            "source and target features as (N, D) arrays of the same width, 2 rows or more",
            f"source {s.shape}, target {t.shape}",
            "embed both domains with the same backbone",
        )
    return s, t


def _spread(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    floor = MIN_SPREAD * max(float(sd.mean()), 1e-12)
    return np.where(sd > floor, sd, 1.0)


def standardize_domains(source: np.ndarray, target: np.ndarray) -> tuple[AffineMap, AffineMap]:
    """(source map, target map): each domain to zero mean and unit spread per dimension,
    with its own statistics."""
    s, t = _check(source, target)
    sd_s, sd_t = _spread(s), _spread(t)
    return (
        AffineMap(1.0 / sd_s, -s.mean(0) / sd_s),
        AffineMap(1.0 / sd_t, -t.mean(0) / sd_t),
    )


def _sym_power(c: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(c)
    values = np.clip(values, 1e-12, None)
    return (vectors * values**power) @ vectors.T


def coral_map(source: np.ndarray, target: np.ndarray, ridge: float = CORAL_RIDGE) -> AffineMap:
    """The CORAL map of source features onto the target's mean and covariance."""
    from threadpoolctl import threadpool_limits

    s, t = _check(source, target)
    mu_s, mu_t = s.mean(0), t.mean(0)
    # one BLAS thread: beside torch's threads a multi-threaded BLAS runs many times slower
    with threadpool_limits(limits=1, user_api="blas"):
        c_s = np.cov(s, rowvar=False)
        c_t = np.cov(t, rowvar=False)
        lam = ridge * float(np.mean(np.r_[np.diag(c_s), np.diag(c_t)]))
        lam = max(lam, 1e-12)
        eye = np.eye(s.shape[1])
        a = _sym_power(c_s + lam * eye, -0.5) @ _sym_power(c_t + lam * eye, 0.5)
    return AffineMap(a, mu_t - mu_s @ a)
