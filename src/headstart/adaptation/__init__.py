"""Domain adaptation from unlabelled target data: losses, schedules and the domain gap (the
methods, as strategies of the training loop, are in :mod:`headstart.strategies.adaptation`)."""

from headstart.adaptation.losses import (
    cdan_features,
    coral_loss,
    dann_coefficient,
    entropy,
    grad_reverse,
    mmd_loss,
    proxy_a_distance,
)

__all__ = [
    "cdan_features",
    "coral_loss",
    "dann_coefficient",
    "entropy",
    "grad_reverse",
    "mmd_loss",
    "proxy_a_distance",
]
