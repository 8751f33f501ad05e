"""The training loop, its callbacks, optimiser and checkpoints."""

from headstart.device import resolve_device
from headstart.training.callbacks import (
    Callback,
    EarlyStopping,
    HistoryWriter,
    ProgressBar,
    TrainState,
)
from headstart.training.trainer import Trainer, count_params

__all__ = [
    "Callback",
    "EarlyStopping",
    "HistoryWriter",
    "ProgressBar",
    "TrainState",
    "Trainer",
    "count_params",
    "resolve_device",
]
