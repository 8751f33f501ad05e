"""Prediction engines: how a run's model turns a dataset into logits.

Two engines share one batching loop and one preprocessing (the backbone's own
``make_dataset`` and ``collate_fn``, so both see identical inputs):

- ``torch``: the backbone itself under ``torch.inference_mode``, convnets in channels-last
  memory format, in float32. The rule is exact float32: bfloat16 autocast (this CPU has
  AMX-BF16) was faster in ``benchmarks/bench_inference.py`` (224 px images 16.5 s vs
  30.7 s, MiniLM texts 8.4 s vs 18.9 s) but changed 1.1-1.7% of the top-1 predictions of
  the three Fashion-MNIST runs, a visible change; a caller who accepts it can wrap
  ``predict`` in ``torch.autocast("cpu", dtype=torch.bfloat16)``;
- ``onnx``: onnxruntime on ``RUN/export/model.onnx`` (written by ``headstart export``), with
  all graph optimisations on and as many intra-op threads as torch uses. It is used only
  while the export is fresh: ``export.json`` records the sha256 of the ``model.safetensors``
  it was exported from, and a refitted run no longer matches it.

``auto`` picks ``onnx`` on the CPU for an image run with a fresh export (onnxruntime
importable), otherwise ``torch``: measured, onnxruntime was 2-5x faster than torch on the
convnets and slower on the MiniLM text encoder. Batches can be decoded by a small thread
pool while the model runs (:data:`DECODE_THREADS`, off by default: on 2 cores it was
slower); texts are batched by length, longest first, so little padding is computed, and
the logits come back in the order of the inputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.backbones import Backbone
from headstart.backbones.base import to_device
from headstart.backbones.weights import sha256_file
from headstart.errors import ConfigError, RunFolderError

ENGINES = ("auto", "onnx", "torch")
#: the folder ``headstart export`` writes inside a run folder by default
EXPORT_DIR = "export"
EXPORT_FORMAT_VERSION = 1
#: threads decoding the next batch's images while the model runs; 0: in turn, in the
#: calling thread. Measured on 2 cores (benchmarks/bench_inference.py) the pool was slower
#: (1,000 PNGs at 64 px: 2.65 s with 2 threads, 1.84 s in turn; at 224 px 30.7 s vs
#: 28.1 s): its threads take the cores the model's own threads use. Raise it on machines
#: with cores to spare.
DECODE_THREADS = 0
#: the modalities ``auto`` runs on onnxruntime: for text encoders the exported graph was
#: slower than torch (445 BBC News texts, MiniLM-L6: 28.7 s vs 18.9 s), for convnets much
#: faster (1,000 images at 224 px: 9.2 s vs 30.7 s)
ONNX_AUTO_MODALITIES = ("image",)


@dataclass
class ExportState:
    """What a run folder's export is: where it is, and whether it is fresh."""

    folder: Path
    #: model.onnx and export.json are there, and the recorded source matches the run
    fresh: bool
    #: why it cannot be used ("" when fresh)
    reason: str


def export_state(run_dir: Path, folder: Path | None = None) -> ExportState:
    """Whether ``folder`` (default ``RUN/export``) holds an export of the run's current
    ``model.safetensors``: the sha256 recorded in ``export.json`` must match the file."""
    folder = Path(folder) if folder is not None else Path(run_dir) / EXPORT_DIR
    model, info = folder / "model.onnx", folder / "export.json"
    if not model.is_file() or not info.is_file():
        return ExportState(folder, False, f"no model.onnx and export.json in {folder}")
    try:
        recorded = json.loads(info.read_text())["source_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return ExportState(folder, False, f"unreadable {info} ({type(e).__name__})")
    weights = Path(run_dir) / "model.safetensors"
    if not weights.is_file():
        return ExportState(folder, False, f"no model.safetensors in {run_dir}")
    if sha256_file(weights) != recorded:
        return ExportState(
            folder,
            False,
            f"a stale export in {folder}: the run's model.safetensors changed since it was "
            "exported (the run was refitted)",
        )
    return ExportState(folder, True, "")


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(
    engine: str, run_dir: Path | None, device: torch.device | str, modality: str = "image"
) -> str:
    """``onnx`` or ``torch`` for the ``engine`` asked for (auto, onnx, torch); ``onnx``
    without a fresh export, without onnxruntime or off the CPU is an error. ``auto`` is
    ``onnx`` for a run of :data:`ONNX_AUTO_MODALITIES` with a fresh export on the CPU."""
    if engine not in ENGINES:
        raise ConfigError(
            f"an engine among {', '.join(ENGINES)}", repr(engine), "pass --engine auto"
        )
    if engine == "torch":
        return "torch"
    device = torch.device(device)
    state = export_state(run_dir) if run_dir is not None else None
    usable = state is not None and state.fresh and device.type == "cpu"
    if engine == "auto":
        fast = modality in ONNX_AUTO_MODALITIES
        return "onnx" if usable and fast and onnxruntime_available() else "torch"
    if run_dir is None or state is None:
        raise RunFolderError(
            "a run folder with an ONNX export for --engine onnx",
            "a model not loaded from a run folder",
            "load the model with headstart.load(RUN, engine='onnx')",
        )
    if not state.fresh:
        raise RunFolderError(
            "a fresh ONNX export of the run for --engine onnx",
            state.reason,
            f"run `headstart export {run_dir}` (again), or pass --engine torch",
        )
    if device.type != "cpu":
        raise ConfigError(
            "the CPU for --engine onnx (the export runs on onnxruntime's CPU provider)",
            f"device {device}",
            "pass --device cpu, or --engine torch to predict on the GPU",
        )
    if not onnxruntime_available():
        raise ConfigError(
            "onnxruntime installed for --engine onnx",
            "no module named onnxruntime",
            "pip install 'headstart[export]' (or pip install onnxruntime), or pass --engine torch",
        )
    return "onnx"


# -- batching -------------------------------------------------------------------------------
def batches(
    ds: Any,
    collate: Callable[[list[Any]], Any] | None,
    batch_size: int,
    order: Sequence[int] | None = None,
    threads: int | None = None,
) -> Iterator[tuple[list[int], Any]]:
    """``(indices, batch input)`` over ``ds`` in ``order`` (default: as is); the items of the
    next batch are read by ``threads`` threads (default :data:`DECODE_THREADS`; 0 or 1: in
    this thread, in turn) while the caller works on the current one."""
    from torch.utils.data import default_collate

    threads = DECODE_THREADS if threads is None else threads
    join = collate or default_collate
    idx = list(order) if order is not None else list(range(len(ds)))
    chunks = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if not chunks:
        return
    if threads <= 1:
        for chunk in chunks:
            yield chunk, join([ds[i] for i in chunk])[0]
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="headstart-decode") as pool:

        def submit(chunk: list[int]) -> list[Future[Any]]:
            return [pool.submit(ds.__getitem__, i) for i in chunk]

        pending = submit(chunks[0])
        for n, chunk in enumerate(chunks):
            items = [f.result() for f in pending]
            if n + 1 < len(chunks):
                pending = submit(chunks[n + 1])  # decoded while the model runs on this one
            yield chunk, join(items)[0]


def _in_order(parts: list[tuple[list[int], torch.Tensor]], n: int) -> torch.Tensor:
    if not parts:
        return torch.zeros(0, 0)
    out = torch.empty(n, parts[0][1].shape[1], dtype=torch.float32)
    for idx, logits in parts:
        out[torch.as_tensor(idx)] = logits
    return out


def is_convnet(backbone: Backbone) -> bool:
    """An image backbone (channels-last memory suits its convolutions)."""
    return backbone.spec.modality == "image"


# -- the engines ----------------------------------------------------------------------------
class TorchEngine:
    """The backbone in float32 under ``inference_mode``; convnets channels-last."""

    name = "torch"

    def __init__(self, backbone: Backbone, device: torch.device | str) -> None:
        self.backbone = backbone
        self.device = torch.device(device)
        self.channels_last = is_convnet(backbone)

    def logits(self, ds: Any, batch_size: int) -> torch.Tensor:
        bb = self.backbone
        was = bb.training
        bb.eval()
        parts = []
        try:
            with torch.inference_mode():
                for idx, x in batches(ds, bb.collate_fn(), batch_size, bb.batch_order(ds)):
                    x = to_device(x, self.device)
                    if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    parts.append((idx, bb(x).float().cpu()))
        finally:
            bb.train(was)
        return _in_order(parts, len(ds))


class OnnxEngine:
    """onnxruntime on an exported ``model.onnx``; inputs as the backbone batches them."""

    name = "onnx"

    def __init__(self, backbone: Backbone, model_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.backbone = backbone
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_path), opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]

    def feed(self, x: Any) -> dict[str, np.ndarray]:
        """The session's inputs for one batch of the backbone's collate."""
        if isinstance(x, dict):
            return {k: x[k].numpy().astype(np.int64, copy=False) for k in self.inputs}
        return {self.inputs[0]: np.ascontiguousarray(x.numpy(), dtype=np.float32)}

    def run(self, x: Any) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["logits"], self.feed(x))[0]).float()

    def logits(self, ds: Any, batch_size: int) -> torch.Tensor:
        bb = self.backbone
        parts = [
            (idx, self.run(x))
            for idx, x in batches(ds, bb.collate_fn(), batch_size, bb.batch_order(ds))
        ]
        return _in_order(parts, len(ds))


def make_engine(
    name: str, backbone: Backbone, device: torch.device | str, run_dir: Path | None
) -> TorchEngine | OnnxEngine:
    """The engine ``name`` (``onnx`` or ``torch``, as :func:`choose_engine` returns)."""
    if name == "onnx" and run_dir is not None:
        return OnnxEngine(backbone, Path(run_dir) / EXPORT_DIR / "model.onnx")
    return TorchEngine(backbone, device)
