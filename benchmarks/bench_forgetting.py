"""Forgetting-aware and parameter-efficient fine-tuning: accuracy, macro-F1, what is kept
of the source task, trainable parameters, train seconds, peak memory and run-folder size.

Each run is a separate ``headstart fit`` process (its peak resident memory read from the
operating system when it ends), on:

- Fashion-MNIST, 100 labels per class, EfficientNet-Lite0 at 64 px, 6 epochs, 2,000 test
  images (forgetting: ImageNet top-1 agreement);
- BBC News, 20 labels per class, MiniLM-L6, articles cut at 128 tokens (forgetting:
  similarity retention);
- drug-review sentiment, 50 labels per class, MiniLM-L6 (the same); from all 979 reviews
  (seeded test split), since the training file holds only 54 neutral reviews.

    python benchmarks/bench_forgetting.py [--seeds 0,1,2] [--datasets fashion,bbc,drug]
        [--strategies finetune,lp-ft,...] [--out runs/bench_forgetting]

Finished runs are read back (run the command again to go on):
``benchmarks/forgetting_runs.jsonl`` collects one line per run and
``benchmarks/forgetting_results.md`` the tables (mean ± std over seeds), written from every
finished run. Runs go seed by seed, so a stopped benchmark leaves whole seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DATASETS = {
    "fashion": (
        "Fashion-MNIST, 100 per class, EfficientNet-Lite0 64 px, 6 epochs",
        ["fashion-mnist", "--per-class", "100", "--image-size", "64", "--epochs", "6",
         "--max-test", "2000", "--backbone", "efficientnet_lite0"],
    ),
    "bbc": (
        "BBC News, 20 per class, MiniLM-L6, 128 tokens",
        ["bbc-news", "--per-class", "20", "--backbone", "minilm-l6", "--max-length", "128"],
    ),
    "drug": (
        "drug-review sentiment, 50 per class, MiniLM-L6",
        ["drug-reviews:all", "--per-class", "50", "--backbone", "minilm-l6"],
    ),
}  # fmt: skip
STRATEGIES = ["finetune", "lp-ft", "l2-sp", "ewc", "lwf", "bss", "progressive", "lora", "bitfit"]
HERE = Path(__file__).parent


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def run_one(out: Path, args: list[str], threads: int) -> tuple[int, float, float]:
    """Run ``headstart fit`` in its own process on ``threads`` CPU threads: exit code,
    seconds, peak RSS in MB."""
    t0 = time.perf_counter()
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "headstart", "fit", *args, "--out", str(out), "--overwrite",
         "--no-progress"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss / 1024


def record(out: Path, dataset: str, strategy: str, seed: int, peak: float) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    params = m.get("params", {})
    trained = params.get("train") or params.get("probe") or {}
    f = m.get("forgetting", {})
    return {
        "dataset": dataset,
        "strategy": strategy,
        "seed": seed,
        "accuracy": m["test"]["accuracy"],
        "macro_f1": m["test"]["macro_f1"],
        "kept": f.get("kept", f.get("top1_agreement")) if f.get("applicable") else None,
        "measure": f.get("measure"),
        "trainable": trained.get("trainable"),
        "total": trained.get("total"),
        "train_seconds": m.get("train_seconds"),
        "peak_mb": peak,
        "folder_mb": size_mb(out),
        "model_mb": (out / "model.safetensors").stat().st_size / 2**20,
        "strategy_summary": params.get("strategy"),
    }


def _ms(values: list[float], fmt: str) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    return f"{np.mean(v):{fmt}} ± {np.std(v):{fmt}}" if len(v) > 1 else f"{v[0]:{fmt}}"


def write_tables(rows: list[dict], path: Path, command: str) -> None:
    lines = [
        "# Forgetting-aware and parameter-efficient fine-tuning",
        "",
        f"`{command}` (2 CPU cores, two runs at a time on one thread each; each run a "
        "separate process; mean ± std over the seeds listed). kept: ImageNet top-1 "
        "agreement of the source head (images) or similarity "
        "retention, the Spearman correlation of the original and trained encoder's cosine "
        "similarities over a fixed sample of test-text pairs (text); 1.0 = nothing "
        "forgotten. Peak memory: the process's peak resident set. Folder: the run folder "
        "as left (model, predictions, report).",
        "",
    ]
    for key, (title, _) in DATASETS.items():
        mine = [r for r in rows if r["dataset"] == key]
        if not mine:
            continue
        lines += [f"## {title}", "", "| strategy | seeds | accuracy | macro-F1 | kept | "
                  "trainable params | trainable % | train s | peak MB | model MB | folder MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for s in dict.fromkeys(r["strategy"] for r in mine):
            rs = [r for r in mine if r["strategy"] == s]
            frac = [100 * r["trainable"] / r["total"] for r in rs if r["trainable"]]
            lines.append(
                f"| {s} | {len(rs)} | {_ms([r['accuracy'] for r in rs], '.4f')} | "
                f"{_ms([r['macro_f1'] for r in rs], '.4f')} | "
                f"{_ms([r['kept'] for r in rs], '.3f')} | "
                f"{int(np.mean([r['trainable'] for r in rs])):,} | {_ms(frac, '.2f')} | "
                f"{_ms([r['train_seconds'] for r in rs], '.0f')} | "
                f"{_ms([r['peak_mb'] for r in rs], '.0f')} | "
                f"{_ms([r['model_mb'] for r in rs], '.2f')} | "
                f"{_ms([r['folder_mb'] for r in rs], '.1f')} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_forgetting"))
    ap.add_argument("--results", type=Path, default=HERE / "forgetting_results.md")
    ap.add_argument("--runs", type=Path, default=HERE / "forgetting_runs.jsonl")
    ap.add_argument(
        "--jobs", type=int, default=2,
        help="runs at a time, each on (CPU cores / jobs) threads: on few cores two "
        "one-thread runs get through more than one two-thread run",
    )  # fmt: skip
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.runs
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    done = {(r["dataset"], r["strategy"], r["seed"]) for r in rows}
    command = "python benchmarks/bench_forgetting.py"
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    cells = [
        (key, strategy, seed)
        for seed in [int(s) for s in args.seeds.split(",")]
        for key in args.datasets.split(",")
        for strategy in args.strategies.split(",")
        if (key, strategy, seed) not in done
    ]
    lock = threading.Lock()

    def cell(key: str, strategy: str, seed: int) -> None:
        out = args.out / key / f"{strategy}-{seed}"
        out.parent.mkdir(parents=True, exist_ok=True)
        base = DATASETS[key][1]
        code, seconds, peak = run_one(
            out, [*base, "--strategy", strategy, "--seed", str(seed)], threads
        )
        if code != 0:
            print(f"{key} {strategy} seed {seed}: failed ({code}), see {out}.log", flush=True)
            return
        row = {**record(out, key, strategy, seed, peak), "threads": threads}
        with lock:
            rows.append(row)
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            write_tables(rows, args.results, command)
        print(
            f"{key} {strategy} seed {seed}: accuracy {row['accuracy']:.4f}, kept "
            f"{row['kept']}, {seconds:.0f} s, peak {peak:.0f} MB",
            flush=True,
        )

    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(cell, *c) for c in cells]:
            f.result()


if __name__ == "__main__":
    main()
