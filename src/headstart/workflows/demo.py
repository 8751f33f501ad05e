"""The embedded defaults.

Images: EfficientNet-Lite0 (ImageNet) on Fashion-MNIST with 100 labels per class: three
runs on the same split and the same labelled images, ``scratch`` (random init, the
baseline), ``linear-probe`` (frozen backbone, cached embeddings) and ``lp-ft`` (probe,
then fine-tune everything), each evaluated on held-out Fashion-MNIST test images.

Texts: all-MiniLM-L6-v2 on BBC News with 20 labelled articles per class: ``linear-probe``
and ``finetune`` next to a TF-IDF + logistic regression baseline trained on the same
labels, evaluated on the held-out test articles.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from headstart.config import (
    SMALL_IMAGE_SIZE,
    BackboneConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.data import TextSamples
from headstart.data.loading import Splits, prepare_data
from headstart.evaluation import classification_metrics
from headstart.workflows.fit import fit

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
    image_size: int = SMALL_IMAGE_SIZE,
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
    strategies: tuple[str, ...] = DEMO_STRATEGIES,
) -> list[dict[str, Any]]:
    """Run the demo's strategies; return one row per strategy (accuracy, macro-F1, time)."""
    configs = [demo_config(n, per_class, test_size, epochs, image_size, seed) for n in strategies]
    return _run_all(configs, out, progress, console or Console())[0]


TEXT_DEMO_STRATEGIES = ("linear-probe", "finetune")


def text_demo_config(strategy: str, per_class: int, epochs: int, seed: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(
            source="bbc-news",
            test="bbc-news:test",
            per_class=per_class,
            max_length=256,
            split_seed=seed,
        ),
        backbone=BackboneConfig(name="minilm-l6"),
        strategy=StrategyConfig(name=strategy, head="logistic", backbone_lr_scale=0.05),
        train=TrainConfig(epochs=epochs, seed=seed, patience=epochs, batch_size=16),
    )


def tfidf_baseline(train: TextSamples, test: TextSamples) -> dict[str, float]:
    """TF-IDF + logistic regression on exactly the same labelled texts."""
    t0 = time.perf_counter()
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1),
        LogisticRegression(max_iter=2000, C=10.0),
    )
    model.fit(train.texts, train.labels)
    pred = model.predict(test.texts)
    m = classification_metrics(test.labels, pred, test.classes)
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "seconds": time.perf_counter() - t0,
    }


def run_text_demo(
    out: Path,
    per_class: int = 20,
    epochs: int = 5,
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
    strategies: tuple[str, ...] = TEXT_DEMO_STRATEGIES,
) -> list[dict[str, Any]]:
    """BBC News with few labels: each strategy, then TF-IDF + LR, on the same split."""
    configs = [text_demo_config(n, per_class, epochs, seed) for n in strategies]
    rows, data = _run_all(configs, out, progress, console or Console())
    if data is not None and isinstance(data.train, TextSamples):
        assert isinstance(data.test, TextSamples)
        base = tfidf_baseline(data.train, data.test)
        rows.append({"strategy": "tf-idf + logistic (baseline)", **base, "run_dir": "-"})
    return rows


def _run_all(
    configs: list[RunConfig], out: Path, progress: bool, console: Console
) -> tuple[list[dict[str, Any]], Splits | None]:
    """One run per config on one shared split; a row per run (accuracy, macro-F1, time)."""
    data = None
    rows = []
    for cfg in configs:
        name = cfg.strategy.name
        console.rule(f"[bold]{name}")
        if data is None:  # one split for every run
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
    return rows, data


def print_demo_table(
    rows: list[dict[str, Any]],
    console: Console,
    title: str = "Fashion-MNIST, EfficientNet-Lite0 (ImageNet): transfer vs scratch",
) -> None:
    table = Table(title=title)
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
