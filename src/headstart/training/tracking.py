"""Experiment trackers (``--tracker tensorboard|mlflow|trackio``) through Accelerate's
tracker API: the loop's Accelerator is built with ``log_with``, ``init_trackers`` stores
the run's config (flattened to ``section.field`` scalars), every epoch's history row is
``log``-ged at its epoch, and ``end_training`` closes the run. Only the main process
logs (Accelerate's trackers are main-process-only).

Where the records go unless the tracker is configured by the user: TensorBoard event files
under ``OUT/trackers/<run>``; MLflow's file store ``OUT/trackers/mlruns`` (unless
``MLFLOW_TRACKING_URI`` is set); trackio's local database under ``OUT/trackers/trackio``
(unless ``TRACKIO_DIR`` is set). Each tracker is an optional extra: ``pip install
'headstart[trackers]'``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError

#: the module each tracker needs
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio"}
PROJECT = "headstart"


@dataclass
class Tracking:
    """One run's tracker: which, the run's name, where its files go, what config it logs."""

    tracker: str
    run: str
    folder: Path
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_tracker(self.tracker)

    def accelerator_kwargs(self) -> dict[str, Any]:
        """What the Accelerator is built with."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return {"log_with": [self.tracker], "project_dir": str(self.folder)}

    def init_kwargs(self) -> tuple[str, dict[str, Any]]:
        """The project name and the tracker's own init arguments for ``init_trackers``;
        sets the tracker's storage to the run folder when the user has not chosen one."""
        if self.tracker == "mlflow":
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            if "MLFLOW_TRACKING_URI" not in os.environ:
                import mlflow

                mlflow.set_tracking_uri((self.folder / "mlruns").resolve().as_uri())
            return PROJECT, {"mlflow": {"run_name": self.run}}
        if self.tracker == "trackio":
            os.environ.setdefault("TRACKIO_DIR", str((self.folder / "trackio").resolve()))
            return PROJECT, {"trackio": {"name": self.run}}
        return self.run, {}  # tensorboard: event files under folder/run


def check_tracker(name: str) -> None:
    """A tracker headstart knows, whose package is installed."""
    if name not in MODULES:
        raise ConfigError(
            f"a tracker: {', '.join(MODULES)}", repr(name), "pass e.g. --tracker tensorboard"
        )
    if importlib.util.find_spec(MODULES[name]) is None:
        raise ConfigError(
            f"the {name} package for --tracker {name}",
            "it is not installed",
            "pip install 'headstart[trackers]' (or leave --tracker out)",
        )


def flat_config(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.001}}`` as ``{"train.lr": 0.001}``; lists as JSON text (the
    trackers take scalars only)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


def epoch_values(logs: dict[str, Any]) -> dict[str, float]:
    """The numbers of an epoch's history row a tracker can plot (no NaN: an epoch
    without validation data logs its training figures only)."""
    return {
        k: float(v)
        for k, v in logs.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
        and math.isfinite(float(v))
    }  # fmt: skip
