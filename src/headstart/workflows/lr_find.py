"""``headstart lr-find``: the learning-rate range test (Smith 2015; fastai's ``lr_find``)
of a strategy on a dataset, from the state its training loop would start from; a plot of
the loss against the rate and a suggested rate, which ``fit --lr auto`` finds the same
way before it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from headstart.config import RunConfig
from headstart.evaluation.report import lr_find_svg
from headstart.storage import atomic_write
from headstart.workflows.fit import range_test

PLOT_FILE = "lr_find.svg"


def run_lr_find(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """The sweep (``OUT/lr_find.json``) and its plot (``OUT/lr_find.svg``)."""
    console = console or Console()
    out = Path(out)
    result = range_test(cfg, out, overwrite=overwrite, progress=progress, console=console)
    test: dict[str, Any] = result.metrics["lr_find"]
    atomic_write(out / PLOT_FILE, lr_find_svg(test))
    return test


def print_lr_find(test: dict[str, Any], data: str, out: Path, console: Console) -> None:
    console.print(
        f"suggested learning rate [bold]{test['suggestion']:.3g}[/] ({test['method']}; "
        f"steepest descent at {test['steepest']:.3g}) after {test['steps']} steps "
        f"({test['stopped']})"
    )
    console.print(f"plot: {out / PLOT_FILE}; sweep: {out / 'lr_find.json'}")
    console.print(
        f"train with it: headstart fit {data} --lr {test['suggestion']:.3g} (or --lr auto, "
        "which runs the same test first)",
        highlight=False,
    )
