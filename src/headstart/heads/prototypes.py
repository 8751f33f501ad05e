"""Prototype heads: each class is the mean of its embeddings (Snell et al. 2017), and an
example belongs to the class whose prototype is nearest by cosine similarity.

The head is written as an ordinary linear layer, so a run folder, ``predict`` and export
need nothing new: with weights ``mu_c / (|mu_c| * tau * s)`` and no bias, the logits are
``cos(x, mu_c) * |x| / (tau * s)``. ``|x|`` is the same for every class, so the argmax is the
nearest prototype by cosine exactly; ``s`` (the mean embedding norm of the support set)
makes the logits about ``cos / tau`` for a typical example.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from headstart.errors import DataError

#: the cosine temperature of the logits
TEMPERATURE = 0.1


def class_means(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, D) mean embedding of each class; every class needs one example."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    counts = np.bincount(y, minlength=num_classes)[:num_classes]
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise DataError(
            "at least one labelled example of every class for its prototype",
            f"none of class index(es) {', '.join(map(str, missing))}",
            "add an example of each class (one is enough)",
        )
    sums = np.zeros((num_classes, x.shape[1]))
    np.add.at(sums, y, x)
    return sums / counts[:, None]


def prototype_head(
    x: np.ndarray, y: np.ndarray, num_classes: int, temperature: float = TEMPERATURE
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the linear layer equal, in argmax, to the nearest prototype by
    cosine similarity."""
    means = class_means(x, y, num_classes)
    return cosine_head(means, _mean_norm(x), temperature)


def cosine_head(
    directions: np.ndarray, input_norm: float, temperature: float = TEMPERATURE
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a linear layer whose argmax is the row of ``directions`` nearest
    by cosine, with logits about ``cos / temperature`` for inputs of norm ``input_norm``."""
    weight = unit(directions) / (temperature * max(input_norm, 1e-12))
    return torch.tensor(weight, dtype=torch.float32), torch.zeros(len(weight))


def _mean_norm(x: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(np.asarray(x, dtype=np.float64), axis=1)))


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float64; zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_prototype(x: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """The index of the prototype nearest to each row of ``x`` by cosine similarity."""
    return np.asarray((unit(x) @ unit(prototypes).T).argmax(1))


def leave_one_out_predictions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For each example, the nearest prototype by cosine when its own class mean is taken
    without it (examples alone in their class keep their own mean: their answer is
    meaningless and should not be scored)."""
    y = np.asarray(y)
    x = np.asarray(x, dtype=np.float64)
    k = int(y.max()) + 1
    counts = np.bincount(y, minlength=k)
    means = class_means(x, y, k) if (counts > 0).all() else _means_where_present(x, y, k)
    cos = unit(x) @ unit(means).T
    own = (means[y] * counts[y, None] - x) / np.maximum(counts[y] - 1, 1)[:, None]
    alone = counts[y] < 2
    own[alone] = means[y][alone]
    cos[np.arange(len(y)), y] = np.sum(unit(x) * unit(own), axis=1)
    return np.asarray(cos.argmax(1))


def _means_where_present(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, y, x)
    return sums / np.maximum(np.bincount(y, minlength=k), 1)[:, None]


def streamed_prototype_head(
    x: Any, y: np.ndarray, num_classes: int, temperature: float = TEMPERATURE
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`prototype_head` of a disk-backed matrix ``x``
    (:class:`~headstart.features.store.LazyEmbeddings`), summed batch by batch."""
    y = np.asarray(y)
    counts = np.bincount(y, minlength=num_classes)[:num_classes]
    if (counts == 0).any():  # the error class_means gives
        class_means(np.zeros((len(y), 1)), y, num_classes)
    sums = np.zeros((num_classes, x.dim))
    norm_total, lo = 0.0, 0
    for batch in x.batches():
        b = batch.double().numpy()
        np.add.at(sums, y[lo : lo + len(b)], b)
        norm_total += float(np.linalg.norm(b, axis=1).sum())
        lo += len(b)
    return cosine_head(sums / counts[:, None], norm_total / max(len(y), 1), temperature)
