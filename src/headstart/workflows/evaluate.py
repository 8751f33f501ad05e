"""``headstart evaluate``: a trained run on labelled images or texts: accuracy, macro-F1,
per-class figures and calibration with the run's temperature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from headstart.config import DataConfig
from headstart.data import TextSamples
from headstart.data.loading import eval_source, is_text_source
from headstart.errors import DataError
from headstart.evaluation import calibration_summary, classification_metrics, print_metrics
from headstart.runfolder import check_out_folder, load, write_json


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
    engine: str = "auto",
) -> dict[str, Any]:
    """The metrics of run folder ``run`` on ``source`` (written to ``output`` if given)."""
    console = console or Console()
    if output is not None:
        check_out_folder(output.parent, "--output's folder")
    model = load(run, device, engine)
    console.print(f"[bold]engine[/] {model.engine}")
    modality = model.backbone.spec.modality
    _check_modality(modality, "text" if is_text_source(source) else "image", source)
    data_cfg = DataConfig(
        skip_bad=skip_bad,
        text_cols=text_cols or model.cfg.data.text_cols,
        label_col=label_col or model.cfg.data.label_col,
    )
    samples = eval_source(source, model.classes, data_cfg, progress=True)
    _check_modality(modality, "text" if isinstance(samples, TextSamples) else "image", source)
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


def _check_modality(model: str, data: str, source: str) -> None:
    """A run evaluates data of its own kind: an image run images, a text run texts."""
    if model == data:
        return
    wanted = (
        "a table of texts (.csv .tsv .jsonl .parquet) or a bundled text dataset"
        if model == "text"
        else "a folder of images (one subfolder per class) or a bundled image dataset"
    )
    raise DataError(
        f"{wanted}: the run was trained on {model}s",
        f"{source}, which holds {data}s",
        f"evaluate a run trained on {data}s on it, or pass {model} data",
    )
