"""Run-folder sizes before and after lean run folders.

1. The demo's lp-ft run (EfficientNet-Lite0, Fashion-MNIST, 100 labels per class, 64 px,
   6 epochs, 2,000 test images) written with ``--keep-checkpoint`` (what every run kept
   before) and with the default (the checkpoint removed when the run finishes).
2. A comparison (linear-probe, lp-ft, finetune x 10 and 50 per class x 2 seeds, 2 epochs)
   with every checkpoint and model kept (as before), with ``--keep-models all``, and then
   the same command with the default ``--keep-models best`` (every cell reused; only the
   models are removed).

    python benchmarks/bench_runfolder_size.py [--out /tmp/hs-size]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from rich.console import Console

from headstart.config import CompareConfig
from headstart.workflows.compare import run_compare
from headstart.workflows.demo import demo_config
from headstart.workflows.fit import fit


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/hs-size"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    quiet = Console(quiet=True)
    rows = []
    cfg = demo_config("lp-ft", 100, 2000, 6, 64, 0)
    for keep in (True, False):
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, keep_checkpoint=keep))
        out = args.out / ("lp-ft-kept" if keep else "lp-ft")
        fit(c, out, progress=False, console=quiet)
        rows.append((f"lp-ft run, checkpoint {'kept' if keep else 'removed'}", size_mb(out)))
    base = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, epochs=2, patience=2, keep_checkpoint=False)
    )
    old = dataclasses.replace(base, train=dataclasses.replace(base.train, keep_checkpoint=True))
    runs = (
        (old, "all", "compare-old", "every model and checkpoint kept (as before)"),
        (base, "all", "compare", "--keep-models all"),
        (base, "best", "compare", "--keep-models best (the default)"),
    )
    for cfg_, keep, folder, what in runs:
        spec = CompareConfig(
            strategies=["linear-probe", "lp-ft", "finetune"],
            budgets=[10, 50],
            seeds=2,
            baseline="linear-probe",
            keep_models=keep,
        )
        run_compare(cfg_, spec, args.out / folder, progress=False, console=quiet)
        rows.append((f"comparison (12 cells), {what}", size_mb(args.out / folder)))
    print("| folder | MB |\n|---|---|")
    for name, mb in rows:
        print(f"| {name} | {mb:.1f} |")


if __name__ == "__main__":
    main()
