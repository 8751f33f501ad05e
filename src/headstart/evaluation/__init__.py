"""Evaluation: metrics and their tables, calibration, comparison statistics, HTML reports."""

from headstart.evaluation.calibration import (
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
)
from headstart.evaluation.metrics import (
    classification_metrics,
    confusion_table,
    metrics_table,
    print_metrics,
)
from headstart.evaluation.report import (
    embedding_map,
    read_history,
    read_predictions,
    write_fit_report,
)
from headstart.evaluation.stats import Cell, mcnemar, mean_ci, summarise, verdict

__all__ = [
    "Cell",
    "calibration_summary",
    "classification_metrics",
    "confusion_table",
    "embedding_map",
    "expected_calibration_error",
    "fit_temperature",
    "mcnemar",
    "mean_ci",
    "metrics_table",
    "print_metrics",
    "read_history",
    "read_predictions",
    "summarise",
    "verdict",
    "write_fit_report",
]
