"""Domain adaptation from unlabelled target data: losses, schedules, the domain gap and
label-free model selection (SND, DEV) (the methods, as strategies of the training loop, are
in :mod:`headstart.strategies.adaptation`)."""

from headstart.adaptation.losses import (
    cdan_features,
    coral_loss,
    dann_coefficient,
    entropy,
    grad_reverse,
    mmd_loss,
    proxy_a_distance,
)
from headstart.adaptation.selection import (
    DEVResult,
    deep_embedded_validation,
    per_example_cross_entropy,
    soft_neighborhood_density,
)

__all__ = [
    "DEVResult",
    "cdan_features",
    "coral_loss",
    "dann_coefficient",
    "deep_embedded_validation",
    "entropy",
    "grad_reverse",
    "mmd_loss",
    "per_example_cross_entropy",
    "proxy_a_distance",
    "soft_neighborhood_density",
]
