"""``headstart evaluate``: a trained run on labelled images or texts: accuracy, macro-F1,
per-class figures and calibration with the run's temperature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from headstart.config import DataConfig
from headstart.data.loading import eval_source
from headstart.evaluation import calibration_summary, classification_metrics, print_metrics
from headstart.runfolder import load, write_json


def run_evaluate(
    run: Path,
    source: str,
    output: Path | None = None,
    text_cols: list[str] | None = None,
    label_col: str | None = None,
    skip_bad: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    console: Console | None = None,
) -> dict[str, Any]:
    """The metrics of run folder ``run`` on ``source`` (written to ``output`` if given)."""
    console = console or Console()
    model = load(run, device)
    data_cfg = DataConfig(
        skip_bad=skip_bad,
        text_cols=text_cols or model.cfg.data.text_cols,
        label_col=label_col or model.cfg.data.label_col,
    )
    samples = eval_source(source, model.classes, data_cfg, progress=True)
    logits = model.logits(samples, batch_size)
    metrics = classification_metrics(samples.labels, logits.argmax(1).numpy(), model.classes)
    metrics["calibration"] = {
        "temperature": model.temperature,
        **calibration_summary(logits, samples.labels, model.temperature),
    }
    print_metrics(metrics, console, title=f"Evaluation on {source}")
    cal = metrics["calibration"]
    console.print(
        f"calibration: ECE {cal['ece_before']:.4f} uncalibrated, {cal['ece_after']:.4f} with "
        f"the run's temperature {model.temperature:.3f}"
    )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_json(output, metrics)
        console.print(f"metrics written to {output}")
    return metrics
