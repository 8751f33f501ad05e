"""``headstart predict``: the top-k labels of images or texts with a trained run, shown as
a table or written to CSV or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from headstart.errors import HeadstartError
from headstart.runfolder import check_out_folder, load
from headstart.storage import write_csv, write_json


def run_predict(
    run: Path,
    inputs: list[str],
    top_k: int = 1,
    output: Path | None = None,
    batch_size: int = 64,
    text_cols: list[str] | None = None,
    skip_bad: bool = False,
    device: str = "auto",
    console: Console | None = None,
    engine: str = "auto",
) -> list[dict[str, Any]]:
    """Predictions of run folder ``run`` for ``inputs`` (files, folders, texts or a table)."""
    console = console or Console()
    if top_k < 1:
        raise HeadstartError("--top-k of at least 1", str(top_k), "pass --top-k 1 or more")
    if output is not None and output.suffix not in (".csv", ".json"):
        raise HeadstartError("--output ending in .csv or .json", output.name, "rename the file")
    if output is not None:
        check_out_folder(output.parent, "--output's folder")
    model = load(run, device, engine)
    console.print(f"[bold]engine[/] {model.engine}")
    rows = model.predict(
        inputs, top_k=top_k, batch_size=batch_size, skip_bad=skip_bad, text_cols=text_cols
    )
    for path, reason in model.last_skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}", highlight=False)
    if output is None:
        _print(rows, run, top_k, console)
    else:
        _write(rows, output)
        console.print(f"{len(rows)} predictions written to {output}")
    return rows


def _print(rows: list[dict[str, Any]], run: Path, top_k: int, console: Console) -> None:
    table = Table(title=f"Predictions ({run})")
    table.add_column("input")
    for i in range(min(top_k, len(rows[0]["labels"]) if rows else top_k)):
        table.add_column(f"#{i + 1}")
    for r in rows:
        table.add_row(
            r["input"],
            *[f"{lab} ({p:.3f})" for lab, p in zip(r["labels"], r["probabilities"], strict=True)],
        )
    console.print(table)


def _write(rows: list[dict[str, Any]], output: Path) -> None:
    if output.suffix == ".json":
        write_json(output, rows)
        return
    k = len(rows[0]["labels"]) if rows else 0
    table = [["input", *[c for i in range(k) for c in (f"label_{i + 1}", f"prob_{i + 1}")]]]
    for r in rows:
        pairs = zip(r["labels"], r["probabilities"], strict=True)
        table.append([r["input"], *[v for lab, p in pairs for v in (lab, f"{p:.6f}")]])
    write_csv(output, table)
