"""Prototype heads: each class is the mean of its embeddings (Snell et al. 2017), and an
example belongs to the class whose prototype is nearest by cosine similarity.

The head is written as an ordinary linear layer, so a run folder, ``predict`` and export
need nothing new: with weights ``mu_c / (|mu_c| * tau * s)`` and no bias, the logits are
``cos(x, mu_c) * |x| / (tau * s)``. ``|x|`` is the same for every class, so the argmax is the
nearest prototype by cosine exactly; ``s`` (the mean embedding norm of the support set)
makes the logits about ``cos / tau`` for a typical example.
"""

from __future__ import annotations

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
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    scale = float(np.mean(np.linalg.norm(np.asarray(x, dtype=np.float64), axis=1)))
    weight = unit / (temperature * max(scale, 1e-12))
    return torch.tensor(weight, dtype=torch.float32), torch.zeros(num_classes)


def nearest_prototype(x: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """The index of the prototype nearest to each row of ``x`` by cosine similarity."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(prototypes, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((a @ b.T).argmax(1))
