"""Domain adaptation from unlabelled target data: losses, schedules and the domain gap."""

from headstart.adaptation.losses import (
    cdan_features,
    coral_loss,
    dann_coefficient,
    entropy,
    grad_reverse,
    mmd_loss,
    proxy_a_distance,
)
from headstart.adaptation.methods import METHODS, AdaptationMethod, TargetStream, without_labels

__all__ = [
    "METHODS",
    "AdaptationMethod",
    "TargetStream",
    "cdan_features",
    "coral_loss",
    "dann_coefficient",
    "entropy",
    "grad_reverse",
    "mmd_loss",
    "proxy_a_distance",
    "without_labels",
]
