"""Evaluation: metrics and their tables."""

from headstart.evaluation.metrics import (
    classification_metrics,
    confusion_table,
    metrics_table,
    print_metrics,
)

__all__ = ["classification_metrics", "confusion_table", "metrics_table", "print_metrics"]
