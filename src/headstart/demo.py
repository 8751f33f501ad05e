"""The embedded default: EfficientNet-Lite0 (ImageNet) on Fashion-MNIST with few labels.

Three runs on the same split and the same labelled images: ``scratch`` (random init,
the baseline), ``linear-probe`` (frozen backbone, cached embeddings) and ``lp-ft``
(probe, then fine-tune everything), each evaluated on held-out Fashion-MNIST test images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.pipeline import fit, prepare_data

DEMO_STRATEGIES = ("scratch", "linear-probe", "lp-ft")


def demo_config(
    strategy: str, per_class: int, test_size: int, epochs: int, image_size: int, seed: int
) -> RunConfig:
    return RunConfig(
        data=DataConfig(
            source="fashion-mnist",
            test="fashion-mnist:test",
            per_class=per_class,
            max_test=test_size,
            image_size=image_size,
            split_seed=seed,
        ),
        backbone=BackboneConfig(name="efficientnet_lite0"),
        strategy=StrategyConfig(name=strategy, head="logistic"),
        train=TrainConfig(epochs=epochs, seed=seed, patience=epochs),
    )


def run_demo(
    out: Path,
    per_class: int = 100,
    test_size: int = 2000,
    epochs: int = 6,
    image_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
    strategies: tuple[str, ...] = DEMO_STRATEGIES,
) -> list[dict[str, Any]]:
    """Run the demo's strategies; return one row per strategy (accuracy, macro-F1, time)."""
    console = console or Console()
    data = None
    rows = []
    for name in strategies:
        cfg = demo_config(name, per_class, test_size, epochs, image_size, seed)
        console.rule(f"[bold]{name}")
        if data is None:  # one split for all three runs
            data = prepare_data(cfg.data, console, progress)
        result = fit(cfg, out / name, overwrite=True, progress=progress, console=console, data=data)
        test = result.metrics["test"]
        rows.append(
            {
                "strategy": name,
                "accuracy": test["accuracy"],
                "macro_f1": test["macro_f1"],
                "seconds": result.seconds,
                "run_dir": str(result.run_dir),
            }
        )
    return rows


def print_demo_table(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="Fashion-MNIST, EfficientNet-Lite0 (ImageNet): transfer vs scratch")
    for col in ("strategy", "test accuracy", "test macro-F1", "wall time (s)", "run folder"):
        table.add_column(col, justify="left" if col in ("strategy", "run folder") else "right")
    for r in rows:
        table.add_row(
            r["strategy"],
            f"{r['accuracy']:.4f}",
            f"{r['macro_f1']:.4f}",
            f"{r['seconds']:.1f}",
            r["run_dir"],
        )
    console.print(table)
