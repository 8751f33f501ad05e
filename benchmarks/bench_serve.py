"""Load test of ``headstart serve``: throughput and latency with and without batching.

A run folder is served by ``headstart serve`` in a subprocess on a loopback port, once
with ``--max-batch 1`` (no batching) and once with ``--max-batch 32``; for each, 1, 8 and
32 concurrent clients send single-image requests (multipart upload of a PNG), a bounded
number in all, and the requests/s and the p50 / p99 latency are measured on the client.
The server's own counters (``/info``) give the forward passes it ran.

The full run serves EfficientNet-Lite0 (efficientnet_lite0) fitted on Fashion-MNIST (20
labels per class, linear probe, 64 px); ``--quick`` serves a toy backbone fitted on
synthetic images. The clients and the server share the machine's CPU cores, so figures
are for comparison between settings on one machine, not a capacity plan.

    python benchmarks/bench_serve.py [--quick] [--requests 96] [--rounds 3] [--threads 1]
        [--out benchmarks/serve_results.md]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

CLIENTS = (1, 8, 32)
BATCHES = (1, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def _load(
    url: str, images: list[bytes], clients: int, requests: int, top_k: int = 3
) -> dict[str, Any]:
    """``requests`` single-image predictions from ``clients`` concurrent clients."""
    latencies: list[float] = []
    codes: list[int] = []
    next_request = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:

        async def client() -> None:
            for i in next_request:
                files = [("files", (f"{i}.png", images[i % len(images)], "image/png"))]
                t0 = time.perf_counter()
                r = await http.post(f"{url}?top_k={top_k}", files=files)
                latencies.append(time.perf_counter() - t0)
                codes.append(r.status_code)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(codes),
        "ok": sum(c == 200 for c in codes),
        "codes": sorted(set(codes)),
        "seconds": seconds,
        "rps": len(codes) / seconds,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
    }


def load_test(
    url: str, images: list[bytes], clients: int, requests: int, top_k: int = 3
) -> dict[str, Any]:
    """Send ``requests`` predictions to ``url`` (a predict route) from ``clients``
    concurrent clients; requests/s, p50 and p99 latency (ms) and the status codes."""
    return asyncio.run(_load(url, images, clients, requests, top_k))


class Served:
    """``headstart serve RUN`` in a subprocess, until closed."""

    def __init__(self, run: Path, max_batch: int, threads: int, wait_ms: float = 5.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "headstart", "serve", str(run), "--port", str(self.port)]
        cmd += ["--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms), "--device", "cpu"]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.log: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: self.log.extend(stdout), daemon=True).start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("headstart serve exited:\n" + "".join(self.log))
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.close()
        raise RuntimeError("headstart serve did not start:\n" + "".join(self.log))

    def served(self) -> dict[str, int]:
        models = httpx.get(f"{self.url}/info").json()["models"]
        return dict(next(iter(models.values()))["served"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def quick_run(root: Path) -> tuple[Path, list[bytes], str]:
    """A toy backbone fitted on synthetic shapes in seconds."""
    from PIL import Image

    from headstart.config import BackboneConfig, DataConfig, RunConfig, TrainConfig
    from headstart.workflows.fit import fit

    rng = np.random.default_rng(0)
    images = []
    for c in range(3):
        (root / "images" / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(10):
            a = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
            a[c * 10 : c * 10 + 10] = 220
            img = Image.fromarray(a)
            img.save(root / "images" / f"c{c}" / f"{i}.png")
            images.append(_png(img))
    cfg = RunConfig(
        data=DataConfig(source=str(root / "images")),
        backbone=BackboneConfig(name="toy-efficientnet"),
        train=TrainConfig(epochs=1, batch_size=8, device="cpu"),
    )
    fit(cfg, root / "run", progress=False)
    return root / "run", images, "toy-efficientnet, synthetic 32 px shapes, 3 classes"


def full_run(root: Path) -> tuple[Path, list[bytes], str]:
    """EfficientNet-Lite0, linear probe on 20 Fashion-MNIST labels per class, at 64 px."""
    from headstart.data import load_bundled

    cmd = [sys.executable, "-m", "headstart", "fit", "fashion-mnist", "--backbone"]
    cmd += ["efficientnet_lite0", "--strategy", "linear-probe", "--per-class", "20"]
    cmd += ["--image-size", "64", "--max-test", "500", "--device", "cpu", "--no-progress"]
    cmd += ["--out", str(root / "run")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    test = load_bundled("fashion-mnist", "test")
    images = [_png(test.image(i)) for i in range(64)]
    what = "efficientnet_lite0, linear probe, Fashion-MNIST 20 labels/class, 64 px, 10 classes"
    return root / "run", images, what


def bench(
    run: Path, images: list[bytes], requests: int, threads: int, rounds: int = 3, warmup: int = 8
) -> list[dict[str, Any]]:
    """Both servers up at once; for each number of clients, ``rounds`` rounds that
    alternate between them (the machine's load drifts), each setting's median reported."""
    servers = {b: Served(run, b, threads) for b in BATCHES}
    rows = []
    try:
        for server in servers.values():
            load_test(f"{server.url}/predict", images, 4, warmup)  # first calls allocate
        for clients in CLIENTS:
            results: dict[int, list[dict[str, Any]]] = {b: [] for b in BATCHES}
            for _ in range(rounds):
                for max_batch, server in servers.items():
                    before = server.served()
                    r = load_test(f"{server.url}/predict", images, clients, requests)
                    after = server.served()
                    r["batches"] = after["batches"] - before["batches"]
                    r["inputs"] = after["inputs"] - before["inputs"]
                    results[max_batch].append(r)
            for max_batch, rs in results.items():
                row = {
                    "max_batch": max_batch,
                    "clients": clients,
                    "rounds": len(rs),
                    "requests": sum(r["requests"] for r in rs),
                    "ok": sum(r["ok"] for r in rs),
                    "codes": sorted({c for r in rs for c in r["codes"]}),
                    "batches": sum(r["batches"] for r in rs),
                    "mean_batch": sum(r["inputs"] for r in rs)
                    / max(sum(r["batches"] for r in rs), 1),
                }
                for key in ("rps", "p50_ms", "p99_ms"):
                    row[key] = statistics.median(r[key] for r in rs)
                rows.append(row)
                print(
                    f"max-batch {max_batch:>2}  clients {clients:>2}: {row['rps']:7.1f} req/s"
                    f"  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
                    f"  inputs per pass {row['mean_batch']:.1f}  ok {row['ok']}/{row['requests']}",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.close()
    return rows


def write_markdown(
    rows: list[dict[str, Any]], what: str, command: str, threads: int, out: Path
) -> None:
    lines = [
        "# `headstart serve`: throughput and latency, with and without batching",
        "",
        f"Model: {what}. Each request is one PNG image (multipart upload), top-3 labels.",
        f"Server: `headstart serve RUN --max-batch B --batch-wait-ms 5 --device cpu`, "
        f"OMP_NUM_THREADS={threads}; clients: httpx (asyncio) in one process on the same "
        f"machine, over loopback. Machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        "(shared by the clients and the server). Latency measured on the client.",
        "",
        f"Command: `{command}`",
        "",
        "Each setting ran in rounds (see the command) of the given number of requests, "
        "alternating between the two servers (both up at once) since the machine's load "
        "drifts; req/s, p50 and p99 are the medians of the rounds.",
        "",
        "| max-batch | clients | requests | ok | req/s | p50 ms | p99 ms | forward passes "
        "| inputs per pass |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['max_batch']} | {r['clients']} | {r['requests']} | {r['ok']} | "
            f"{r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['batches']} | "
            f"{r['mean_batch']:.1f} |"
        )
    by = {(r["max_batch"], r["clients"]): r for r in rows}
    lines += ["", "Throughput with batching (max-batch 32) over without (max-batch 1):", ""]
    for c in CLIENTS:
        a, b = by.get((1, c)), by.get((32, c))
        if a and b:
            lines.append(f"- {c} client(s): {b['rps'] / a['rps']:.2f}x")
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a toy model instead of Lite0")
    p.add_argument("--requests", type=int, default=96, help="requests per setting")
    p.add_argument("--rounds", type=int, default=3, help="rounds per setting (medians)")
    p.add_argument("--threads", type=int, default=1, help="the server's OMP_NUM_THREADS")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("serve_results.md"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run, images, what = (quick_run if args.quick else full_run)(Path(tmp))
        print(f"fitted {what} in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = bench(run, images, args.requests, args.threads, args.rounds)
    flags = ["--quick"] if args.quick else []
    flags += [f"--requests {args.requests}", f"--rounds {args.rounds}", f"--threads {args.threads}"]
    command = " ".join(["python benchmarks/bench_serve.py", *flags])
    write_markdown(rows, what, command, args.threads, args.out)
    print(f"wrote {args.out}")
    fails = [r for r in rows if r["ok"] != r["requests"]]
    if fails:
        print(f"{len(fails)} setting(s) had failed requests: {[r['codes'] for r in fails]}")
        sys.exit(1)
    print("median req/s:", statistics.median(r["rps"] for r in rows))


if __name__ == "__main__":
    main()
