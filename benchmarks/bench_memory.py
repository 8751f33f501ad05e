"""Peak memory of ``headstart fit`` as the dataset grows.

Generates a folder of small PNG images (a few hundred distinct 32x32 images in four
learnable classes, hard-linked to reach the wanted count), runs ``headstart fit`` on it in
a child process with a fresh embedding cache, and reads the child's peak resident set
size (``getrusage(RUSAGE_CHILDREN).ru_maxrss``; this script starts one child per size and
each size runs in its own parent, so the figure is that one child's peak).

    python benchmarks/bench_memory.py --sizes 30000 300000 --root /tmp/headstart-mem \
        --results benchmarks/memory_results.md

Each size is measured by a fresh parent (``--one N``), so the children of one size never
raise the peak reported for another.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "stripes", "cross")
DISTINCT = 100  # distinct images per class; the rest are hard links to them
SIZE = 32


def _draw(ci: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    c = SIZE / 2 + rng.uniform(-3, 3, 2)
    if ci == 0:
        mask = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (SIZE / 3.5) ** 2
    elif ci == 1:
        mask = (abs(yy - c[0]) < SIZE / 4) & (abs(xx - c[1]) < SIZE / 4)
    elif ci == 2:
        mask = (xx // 3) % 2 == 0
    else:
        mask = (abs(yy - c[0]) < 3) | (abs(xx - c[1]) < 3)
    img[mask] = rng.integers(150, 255, 3)
    return img


def make_folder(root: Path, n: int) -> Path:
    """``root/n<N>``: ``n`` images, ``n / len(CLASSES)`` per class (made once)."""
    folder = root / f"n{n}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    originals = root / "distinct"
    if not (originals / ".complete").is_file():
        shutil.rmtree(originals, ignore_errors=True)
        for ci, name in enumerate(CLASSES):
            (originals / name).mkdir(parents=True)
            for i in range(DISTINCT):
                Image.fromarray(_draw(ci, rng)).save(originals / name / f"{i}.png")
        (originals / ".complete").write_text("")
    per_class = n // len(CLASSES)
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            os.link(originals / name / f"{i % DISTINCT}.png", folder / name / f"{i:07d}.png")
    done.write_text("")
    return folder


def fit_command(folder: Path, out: Path, backbone: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "headstart",
        "fit",
        str(folder),
        "--out",
        str(out),
        "--overwrite",
        "--backbone",
        backbone,
        "--strategy",
        "linear-probe",
        "--image-size",
        "32",
        "--no-progress",
    ]


def measure_one(root: Path, n: int, backbone: str, disk_rows: int | None) -> dict[str, Any]:
    """Run the fit on ``n`` images in a child; its peak RSS (MB) and wall time."""
    folder = make_folder(root, n)
    tag = f"{n}" if disk_rows is None else f"{n}-disk{disk_rows}"
    cache = root / f"cache-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "HEADSTART_CACHE": str(cache)}
    if disk_rows is not None:
        env["HEADSTART_DISK_ROWS"] = str(disk_rows)
    cmd = fit_command(folder, root / f"run-{tag}", backbone)
    t0 = time.perf_counter()
    log = root / f"fit-{tag}.log"
    with log.open("w") as f:
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    metrics = json.loads((root / f"run-{tag}" / "metrics.json").read_text())
    test = metrics.get("test") or metrics.get("validation") or {}
    return {
        "images": n,
        "disk_rows": "default" if disk_rows is None else disk_rows,
        "peak_rss_mb": peak_kb / 1024,
        "wall_s": wall,
        "accuracy": float(test.get("accuracy", float("nan"))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000])
    ap.add_argument("--root", type=Path, default=Path("/tmp/headstart-mem"))
    ap.add_argument("--results", type=Path, default=None, help="markdown table to write")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--disk-rows", type=int, default=None, help="HEADSTART_DISK_ROWS for the fits")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    if args.one is not None:  # a fresh parent per size: RUSAGE_CHILDREN is this one child
        print(json.dumps(measure_one(args.root, args.one, args.backbone, args.disk_rows)))
        return
    rows = []
    backbone = ["--backbone", args.backbone]
    if args.disk_rows is not None:
        backbone += ["--disk-rows", str(args.disk_rows)]
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--root", str(args.root), "--one", str(n), *backbone],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.results:
        write_table(args.results, rows, sys.argv)


def write_table(path: Path, rows: list[dict[str, Any]], argv: list[str]) -> None:
    """A markdown table of ``rows``; the ratio is to the first row's peak."""
    base = rows[0]["peak_rss_mb"]
    lines = [
        "| images | HEADSTART_DISK_ROWS | peak RSS (MB) | wall (s) | ratio to the first row "
        "| test accuracy |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {int(r['images']):,} | {r.get('disk_rows', 'default')} | "
            f"{r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} | {r['peak_rss_mb'] / base:.2f} | "
            f"{r['accuracy']:.3f} |"
        )
    path.write_text("\n".join(lines) + "\n\nCommand: `" + " ".join(argv) + "`\n")


if __name__ == "__main__":
    main()
