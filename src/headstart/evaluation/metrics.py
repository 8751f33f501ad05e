"""Classification metrics (scikit-learn) and their table."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # over the classes present in the truth or the predictions: a class absent from
        # this set cannot be scored and must not count as F1 = 0
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": {
            c: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def metrics_table(metrics: dict[str, Any], title: str = "Test metrics") -> Table:
    table = Table(
        title=f"{title}: accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} (n={metrics['n']})"
    )
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, m in metrics["per_class"].items():
        table.add_row(
            c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"])
        )
    return table


def confusion_table(metrics: dict[str, Any]) -> Table:
    classes = metrics["classes"]
    table = Table(title="Confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for i in range(len(classes)):
        table.add_column(str(i), justify="right")
    for i, row in enumerate(metrics["confusion_matrix"]):
        table.add_row(f"{i} {classes[i]}", *[str(v) for v in row])
    return table


def print_metrics(
    metrics: dict[str, Any], console: Console | None = None, title: str = "Test metrics"
) -> None:
    console = console or Console()
    console.print(metrics_table(metrics, title))
    if len(metrics["classes"]) <= 20:
        console.print(confusion_table(metrics))
