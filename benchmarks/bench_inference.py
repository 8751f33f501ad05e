"""How fast does a trained run predict? headstart's engines against the plain loops people
write: a timm eager loop (images) and sentence-transformers ``encode`` (texts).

    python benchmarks/bench_inference.py                  # trains the runs it lacks, once
    python benchmarks/bench_inference.py --threads 2 --n 1000 --runs runs/bench_inference

Images: EfficientNet-Lite0 on Fashion-MNIST, 100 labelled images per class: ``lp-ft`` (3
epochs) and a linear probe on several layers' features with the mirrored view averaged in
(what headstart does by default for a frozen backbone) at 64 px, and a linear probe on the
final features at 224 px. Each run is exported (``headstart export``), then 1,000
Fashion-MNIST test images saved as PNG files are predicted by (a) a timm eager loop with the same
weights: PIL open, resize, normalise, batch 64, ``torch.no_grad()``, eval mode; (b)
``headstart.load(run, engine="torch").predict(files)``; (c) ``engine="onnx"``. For the
probe-features run the timm loop runs the same network once per image (the plain final-layer
model); headstart's model also runs the mirrored view and pools three layers, so it does
about twice the work.

Texts: all-MiniLM-L6-v2 on BBC News, a linear probe (several layers' features), 1,000
test texts: ``SentenceTransformer(the same model folder).encode`` at the same batch size
and max_length, against headstart's torch and onnx engines.

Everything runs in one process with ``--threads`` torch / onnxruntime threads; each figure
is the best of ``--repeat`` passes (after one warm-up batch). The ratios are the result;
absolute seconds depend on the machine. Top-1 agreement between the engines is printed.
bf16 autocast of the torch engine is measured too (time and top-1 agreement with fp32).
The table goes to benchmarks/inference_results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from headstart import engines, load
from headstart.config import (
    BackboneConfig,
    DataConfig,
    EvalConfig,
    ExportConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.engines import export_state
from headstart.workflows.export import run_export
from headstart.workflows.fit import fit

console = Console()
HERE = Path(__file__).parent

IMAGE_RUNS: dict[str, dict[str, Any]] = {
    "lp-ft 64 px": {"strategy": "lp-ft", "epochs": 3, "size": 64, "features": "auto"},
    "probe features 64 px": {
        "strategy": "linear-probe",
        "epochs": 1,
        "size": 64,
        "features": "auto",
    },
    "linear-probe 224 px": {
        "strategy": "linear-probe",
        "epochs": 1,
        "size": 224,
        "features": "final",
    },
}


def _fit_image(runs: Path, name: str, spec: dict[str, Any]) -> Path:
    out = runs / name.replace(" ", "-")
    if (out / "metrics.json").is_file():
        return out
    cfg = RunConfig(
        data=DataConfig(
            source="fashion-mnist", per_class=100, image_size=spec["size"], max_test=1000
        ),
        backbone=BackboneConfig(name="efficientnet_lite0", features=spec["features"]),
        strategy=StrategyConfig(name=spec["strategy"]),
        train=TrainConfig(epochs=spec["epochs"], batch_size=32),
    )
    fit(cfg, out, progress=False, overwrite=True, console=Console(quiet=True))
    return out


def _fit_text(runs: Path) -> Path:
    out = runs / "minilm-linear-probe"
    if (out / "metrics.json").is_file():
        return out
    cfg = RunConfig(
        data=DataConfig(source="bbc-news", per_class=32, max_test=1000),
        backbone=BackboneConfig(name="minilm-l6"),
        strategy=StrategyConfig(name="linear-probe"),
        train=TrainConfig(epochs=1),
        eval=EvalConfig(),
    )
    fit(cfg, out, progress=False, overwrite=True, console=Console(quiet=True))
    return out


def _export(run: Path) -> None:
    if not export_state(run).fresh:
        run_export(run, ExportConfig(), Console(quiet=True))


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


@contextlib.contextmanager
def _decode_threads(n: int) -> Iterator[None]:
    was = engines.DECODE_THREADS
    engines.DECODE_THREADS = n
    try:
        yield
    finally:
        engines.DECODE_THREADS = was


def _test_pngs(folder: Path, n: int) -> list[Path]:
    from headstart.data import resolve_images

    files = sorted(folder.glob("*.png"))
    if len(files) >= n:
        return files[:n]
    folder.mkdir(parents=True, exist_ok=True)
    samples = resolve_images("fashion-mnist:test")
    for i in range(n):
        samples.image(i).save(folder / f"{i:05d}.png")
    return sorted(folder.glob("*.png"))[:n]


def _timm_loop(run: Path, files: list[Path]) -> Callable[[], np.ndarray]:
    """The plain loop: the run's timm network with the same weights, eager, batch 64."""
    import timm
    from PIL import Image
    from torchvision import transforms

    model = load(run, device="cpu", engine="torch")
    bb = model.backbone
    net = getattr(bb, "inner", bb)
    kw = dict(net.spec.extra.get("create_kwargs", {}))
    k = net.model.get_classifier().out_features
    timm_model = timm.create_model(net.spec.arch, pretrained=False, num_classes=k, **kw)
    timm_model.load_state_dict(net.model.state_dict())
    timm_model.eval()
    s = bb.spec.input_size
    tf = transforms.Compose(
        [
            transforms.Resize((s, s), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(bb.spec.mean, bb.spec.std),
        ]
    )

    def run_loop() -> np.ndarray:
        preds = []
        with torch.no_grad():
            for i in range(0, len(files), 64):
                x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files[i : i + 64]])
                preds.append(timm_model(x).argmax(1))
        return torch.cat(preds).numpy()

    return run_loop


def _top1(rows: list[dict[str, Any]], classes: list[str]) -> np.ndarray:
    return np.array([classes.index(r["labels"][0]) for r in rows])


def _engines(run: Path, inputs: Any, repeat: int) -> dict[str, Any]:
    torch_m = load(run, device="cpu", engine="torch")
    onnx_m = load(run, device="cpu", engine="onnx")
    classes = torch_m.classes
    torch_m.predict(inputs[:64])  # warm-up
    onnx_m.predict(inputs[:64])
    t_torch, rows_t = _best(lambda: torch_m.predict(inputs), repeat)
    t_onnx, rows_o = _best(lambda: onnx_m.predict(inputs), repeat)
    with _decode_threads(2):  # the decode pool: the next batch read while the model runs
        t_pool, _ = _best(lambda: torch_m.predict(inputs), repeat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t_bf16, rows_b = _best(lambda: torch_m.predict(inputs), repeat)
    p_t, p_o, p_b = (_top1(r, classes) for r in (rows_t, rows_o, rows_b))
    return {
        "torch": t_torch,
        "onnx": t_onnx,
        "torch_decode_pool": t_pool,
        "torch_bf16": t_bf16,
        "agree_onnx": float(np.mean(p_t == p_o)),
        "agree_bf16": float(np.mean(p_t == p_b)),
        "pred_torch": p_t,
    }


def bench_images(runs: Path, n: int, repeat: int) -> list[dict[str, Any]]:
    files = _test_pngs(runs / "fashion-mnist-test-png", n)
    out = []
    for name, spec in IMAGE_RUNS.items():
        console.print(f"[bold]{name}[/]: fit (if missing), export, time")
        run = _fit_image(runs, name, spec)
        _export(run)
        t_timm, p_timm = _best(_timm_loop(run, files), repeat)
        r = _engines(run, files, repeat)
        same_net = spec["features"] == "final" or spec["strategy"] == "lp-ft"
        r.update(name=name, baseline="timm loop", base=t_timm, n=len(files))
        r["agree_base"] = float(np.mean(p_timm == r.pop("pred_torch"))) if same_net else None
        out.append(r)
    return out


def bench_text(runs: Path, n: int, repeat: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from headstart.backbones.catalog import entry_for
    from headstart.data import resolve_texts

    console.print("[bold]minilm-l6 linear probe[/]: fit (if missing), export, time")
    run = _fit_text(runs)
    _export(run)
    texts = list(resolve_texts("bbc-news:test", ["text"], "label").texts)[:n]
    model = load(run, device="cpu", engine="torch")
    folder = entry_for("minilm-l6").package_path()
    st = SentenceTransformer(str(folder), device="cpu")
    st.max_seq_length = int(model.backbone.spec.extra.get("max_length", 256))
    st.encode(texts[:64], batch_size=64)
    t_st, _ = _best(lambda: st.encode(texts, batch_size=64), repeat)
    r = _engines(run, texts, repeat)
    r.pop("pred_torch")
    r.update(name="minilm-l6 linear probe", baseline="sentence-transformers encode", base=t_st)
    r.update(n=len(texts), agree_base=None)
    return r


def report(rows: list[dict[str, Any]], threads: int, cmd: str) -> str:
    table = Table(title=f"Prediction speed, {threads} threads (ratio: baseline seconds / ours)")
    cols = ["run", "n", "baseline", "base s", "torch s", "onnx s", "torch x", "onnx x"]
    cols += ["onnx=torch top-1", "torch, 2 decode threads s", "bf16 s", "bf16=fp32 top-1"]
    for c in cols:
        table.add_column(c)
    lines = [
        "# Prediction speed: headstart's engines vs plain loops",
        "",
        f"`{cmd}` ({threads} threads, one process, best of the passes). Ratios > 1: "
        "headstart is faster than the baseline.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [
            r["name"],
            str(r["n"]),
            r["baseline"],
            f"{r['base']:.2f}",
            f"{r['torch']:.2f}",
            f"{r['onnx']:.2f}",
            f"{r['base'] / r['torch']:.2f}",
            f"{r['base'] / r['onnx']:.2f}",
            f"{100 * r['agree_onnx']:.1f}%",
            f"{r['torch_decode_pool']:.2f}",
            f"{r['torch_bf16']:.2f}",
            f"{100 * r['agree_bf16']:.1f}%",
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/bench_inference"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--results", type=Path, default=HERE / "inference_results.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.runs.mkdir(parents=True, exist_ok=True)
    rows = bench_images(args.runs, args.n, args.repeat)
    if not args.skip_text:
        rows.append(bench_text(args.runs, args.n, args.repeat))
    cmd = f"python benchmarks/bench_inference.py --threads {args.threads} --n {args.n}"
    text = report(rows, args.threads, cmd)
    args.results.write_text(text)
    console.print(f"written {args.results}")


if __name__ == "__main__":
    main()
