"""Callbacks of the training loop. Every hook does nothing by default."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from headstart.storage import append_line


@dataclass
class TrainState:
    """The loop's own state: saved in checkpoints, handed to callbacks."""

    epoch: int = -1  # last finished epoch
    step: int = 0
    best_score: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    stop: bool = False
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def json_line(row: dict[str, Any]) -> str:
    """Strict JSON (NaN, which strict parsers reject, becomes null)."""
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


class Callback:
    def on_train_begin(self, state: TrainState, total_epochs: int, steps_per_epoch: int) -> None:
        """Before the first epoch (also after resuming)."""

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        """After every batch."""

    def on_epoch_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        """After validation; ``logs`` is the epoch's history row."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last epoch or an early stop."""


class EarlyStopping(Callback):
    """Stops when the monitored score has not improved for ``patience`` epochs."""

    def __init__(self, patience: int, monitor: str = "val_macro_f1", min_delta: float = 1e-4):
        self.patience = patience
        self.monitor = monitor
        self.min_delta = min_delta

    def on_epoch_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        score = float(logs[self.monitor])
        if math.isnan(score):  # nothing to monitor (no validation data): keep the last epoch
            state.best_epoch, logs["best"] = state.epoch, True
            return
        if score > state.best_score + self.min_delta:
            state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            logs["best"] = True
        else:
            state.bad_epochs += 1
            logs["best"] = False
            if state.bad_epochs >= self.patience:
                state.stop = True


class HistoryWriter(Callback):
    """Appends one JSON line per epoch to ``history.jsonl``."""

    def __init__(self, path: Path, phase: str):
        self.path = path
        self.phase = phase

    def on_epoch_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        append_line(self.path, json_line({"phase": self.phase, **logs}))


class ProgressBar(Callback):
    """A rich progress bar over all steps, showing the loss and the validation score."""

    def __init__(self, description: str, console: Console | None = None):
        self.description = description
        self.console = console
        self._progress: Progress | None = None
        self._task: Any = None
        self._loss = 0.0
        self._metric = ""

    def on_train_begin(self, state: TrainState, total_epochs: int, steps_per_epoch: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description,
            total=total_epochs * steps_per_epoch,
            completed=(state.epoch + 1) * steps_per_epoch,
            info="",
        )

    def _update(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=f"loss {self._loss:.3f}{self._metric}")

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        self._loss = 0.9 * self._loss + 0.1 * loss if self._loss else loss
        if self._progress is not None:
            self._progress.advance(self._task)
        self._update()

    def on_epoch_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        self._metric = f" | epoch {state.epoch + 1} val F1 {logs['val_macro_f1']:.3f}"
        self._update()

    def on_train_end(self, state: TrainState) -> None:
        if self._progress is not None:
            self._progress.stop()
