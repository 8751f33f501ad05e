"""Embedding cache: a second linear-probe run on the same data with another head.

Goal: the second run costs at most 5% of the first run's wall time. Both runs happen in
this process, with a fresh cache folder, at the backbone's native input size.

    python benchmarks/bench_cache.py [--per-class 100] [--test-size 2000] [--image-size 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console

from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig
from headstart.features import EmbeddingCache
from headstart.workflows.fit import fit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(Path(tmp) / "cache")
        times = []
        for i, (head, c) in enumerate((("logistic", 1.0), ("logistic", 0.1), ("svm", 1.0))):
            cfg = RunConfig(
                data=DataConfig(
                    source="fashion-mnist",
                    test="fashion-mnist:test",
                    per_class=args.per_class,
                    max_test=args.test_size,
                    image_size=args.image_size,
                ),
                backbone=BackboneConfig(name="efficientnet_lite0"),
                strategy=StrategyConfig(name="linear-probe", head=head, head_c=c),
            )
            t0 = time.perf_counter()
            r = fit(cfg, Path(tmp) / f"run{i}", progress=False, console=quiet, cache=cache)
            times.append(time.perf_counter() - t0)
            print(
                f"run {i + 1}: head={head} C={c}: {times[-1]:.2f} s, test accuracy "
                f"{r.metrics['test']['accuracy']:.4f}, cache {r.metrics['cache']}"
            )
    for i in (1, 2):
        ratio = times[i] / times[0]
        print(
            f"run {i + 1} / run 1 wall time: {ratio:.3%} (goal <= 5%): "
            f"{'PASS' if ratio <= 0.05 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
