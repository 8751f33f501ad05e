"""The demo's three numbers (scratch, linear-probe, lp-ft on Fashion-MNIST with 100 labels
per class), mean and std over seeds. Each seed draws its own labelled images.

    python benchmarks/bench_demo_accuracy.py [--seeds 0,1,2] [--out runs/bench-demo]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rich.console import Console

from headstart.workflows.demo import DEMO_STRATEGIES, run_demo


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-demo"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    quiet = Console(quiet=True)
    rows = {s: [] for s in DEMO_STRATEGIES}
    for seed in seeds:
        for r in run_demo(args.out / f"seed{seed}", seed=seed, progress=False, console=quiet):
            rows[r["strategy"]].append(r)
            print(
                f"seed {seed} {r['strategy']:>12}: accuracy {r['accuracy']:.4f}, "
                f"macro-F1 {r['macro_f1']:.4f}, {r['seconds']:.1f} s",
                flush=True,
            )
    print("\nstrategy      accuracy (mean ± std)   macro-F1 (mean ± std)   seconds (mean)")
    for s, rs in rows.items():
        acc = [r["accuracy"] for r in rs]
        f1 = [r["macro_f1"] for r in rs]
        print(
            f"{s:<12}  {statistics.mean(acc):.4f} ± {sd(acc):.4f}        "
            f"{statistics.mean(f1):.4f} ± {sd(f1):.4f}        "
            f"{statistics.mean(r['seconds'] for r in rs):.1f}"
        )


if __name__ == "__main__":
    main()
