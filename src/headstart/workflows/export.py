"""``headstart export``: a run's model as one ONNX file that predicts without headstart.

Written into ``RUN/export`` (or ``--out``):

- ``model.onnx``: the whole backbone as it predicts, ``model(inputs) -> logits``: for the
  default small-data run the probe features (several layers pooled, unit-scaled, the
  mirrored view averaged in) and the head; for a text encoder its pooling and head.
  Weights are inside the file;
- ``preprocess.json``: what a consumer needs to feed it: the input names, shapes and
  dtypes, the classes, the calibration temperature (probabilities are
  ``softmax(logits / temperature)``), and for images the resize, mean, std and channel
  order of the evaluation transform, for texts the tokenizer (copied to ``tokenizer/``),
  ``max_length``, padding and truncation;
- ``export.json`` (written last): the parity figures, the int8 figures, the versions, the
  sha256 of ``model.onnx`` and of the run's ``model.safetensors`` it was exported from, by
  which ``headstart predict`` tells a fresh export from a stale one.

The parity check compares the ONNX logits with the run's own (torch) logits on a fixed
sample of the run's test split, recreated from ``config.yaml`` as ``fit`` split it; it
fails when the largest absolute difference exceeds ``tolerance * max(1, largest |torch
logit|)``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import platform
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import default_collate

from headstart.backbones import Backbone
from headstart.backbones.hf_text import HFTextBackbone
from headstart.backbones.multilayer import ProbeFeaturesBackbone
from headstart.backbones.vision import TimmBackbone
from headstart.backbones.weights import sha256_file
from headstart.config import ExportConfig
from headstart.data import from_arrays, from_texts
from headstart.data.loading import Samples, Splits, prepare_data
from headstart.engines import (
    EXPORT_DIR,
    EXPORT_FORMAT_VERSION,
    OnnxEngine,
    TorchEngine,
    batches,
    onnxruntime_available,
)
from headstart.errors import BackboneError, ConfigError, DataError, HeadstartError
from headstart.runfolder import Predictor, load, write_json
from headstart.storage import atomic_write, check_out_folder
from headstart.strategies import build_strategy

#: what the parity check and the int8 figures read of each split (fixed: repeatable)
SAMPLE_SEED = 0
ONNX_OPSET = 18
SUPPORTED = (
    "timm image backbones (e.g. efficientnet_lite0, toy-efficientnet) and Hugging Face text "
    "encoders (e.g. minilm-l6, toy-bert), plain or with probe features (the default "
    "small-data run)"
)


# -- what is exported -----------------------------------------------------------------------
class _ImageModel(nn.Module):
    """``pixel_values`` (N, 3, H, W) float32 -> logits (N, classes)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values)


class _TextModel(nn.Module):
    """``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the encoder reads
    them), int64 (N, T) -> logits (N, classes): the encoder, its pooling and the head."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return self.backbone(batch)


def innermost(backbone: Backbone) -> Backbone:
    inner = backbone
    while isinstance(inner, ProbeFeaturesBackbone):
        inner = inner.inner
    return inner


def check_exportable(backbone: Backbone) -> None:
    """A clear error for a backbone that cannot be exported to ONNX."""
    inner = innermost(backbone)
    plain = isinstance(backbone, (TimmBackbone, HFTextBackbone))
    wrapped = isinstance(backbone, ProbeFeaturesBackbone) and isinstance(
        inner, (TimmBackbone, HFTextBackbone)
    )
    if plain or wrapped:
        return
    kind = str(inner.spec.extra.get("kind", type(inner).__name__))
    why = {
        "onnx": "already a frozen ONNX graph (its encoder), which predict runs as is",
        "vectors": "word vectors, whose tokenizer is Python code no ONNX consumer can run",
    }.get(kind, f"a {type(backbone).__name__}")
    raise BackboneError(
        f"a run whose backbone can be exported to ONNX: {SUPPORTED}",
        f"{backbone.spec.name} ({why})",
        "export a run trained on one of those backbones (fit again with --backbone "
        "efficientnet_lite0 or minilm-l6), or predict this run with `headstart predict` "
        "(torch)",
    )


def text_input_names(backbone: Backbone) -> list[str]:
    """The batch keys the exported text model takes, in order."""
    inner = innermost(backbone)
    keys = list(backbone.dummy_batch())
    used = {"input_ids", "attention_mask"} | set(getattr(inner, "_inputs", ()))
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in keys and k in used]


def _example(backbone: Backbone) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str]]:
    """The module to export, an example input and the input names."""
    if backbone.spec.modality == "image":
        size = backbone.spec.input_size
        return _ImageModel(backbone), (torch.rand(2, 3, size, size),), ["pixel_values"]
    names = text_input_names(backbone)
    # texts of unequal length: the traced example has padding, as real batches do
    ds = backbone.make_dataset(from_texts(["a quick brown fox jumps over it", "a dog"], [0, 1]))
    collate = backbone.collate_fn() or default_collate
    batch = collate([ds[0], ds[1]])[0]
    return _TextModel(backbone), tuple(batch[k] for k in names), names


def _to_onnx(backbone: Backbone, folder: Path) -> tuple[Path, str, str]:
    """Export to ``folder/model.onnx``; returns the path, the exporter and why it was used."""
    module, args, names = _example(backbone)
    module.eval()
    path = folder / "model.onnx"
    text = backbone.spec.modality == "text"
    axes: dict[str, dict[int, str]] = {
        n: ({0: "batch", 1: "sequence"} if text else {0: "batch"}) for n in names
    }
    axes["logits"] = {0: "batch"}
    reason = ""
    if isinstance(backbone, ProbeFeaturesBackbone):
        # probe features take each layer's output with a forward hook, and the hook of the
        # deepest layer stops the forward pass by raising; torch.export (the dynamo
        # exporter) cannot capture a forward cut short by an exception ("Unexpected key
        # ...bn2"), so the TorchScript tracer records the operations that actually ran
        reason = "probe features stop the forward pass from a hook, which torch.export cannot trace"
    else:
        batch = torch.export.Dim("batch", min=1)
        seq = torch.export.Dim("sequence", min=1)
        shapes = {n: {0: batch, 1: seq} if text else {0: batch} for n in names}
        try:
            with _quiet():
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    input_names=names,
                    output_names=["logits"],
                    dynamo=True,
                    dynamic_shapes=shapes,
                    external_data=False,
                    opset_version=ONNX_OPSET,
                    verbose=False,
                    report=False,
                )
            return path, "dynamo", "torch.export (the default exporter)"
        except Exception as e:  # an operation torch.export cannot capture: try the tracer
            summary = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
            reason = f"the dynamo exporter failed ({type(e).__name__}: {summary[-1][:300]})"
            path.unlink(missing_ok=True)
    with _quiet():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamo=False,
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
        )
    return path, "torchscript", reason


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress lines, tracer warnings and onnxruntime's
    quantisation advice (logged on the root logger) for one call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


# -- preprocess.json ------------------------------------------------------------------------
def _image_preprocess(backbone: Backbone) -> dict[str, Any]:
    """Read off the evaluation transform ``backbone.make_dataset`` applies."""
    ds = backbone.make_dataset(from_arrays(np.zeros((1, 8, 8), np.uint8)))
    tf = ds.transform
    steps = list(getattr(tf, "transforms", [tf]))
    resize: dict[str, Any] | None = None
    crop = None
    mean, std = list(backbone.spec.mean), list(backbone.spec.std)
    for step in steps:
        kind = type(step).__name__
        if kind == "Resize":
            sizes = step.size if isinstance(step.size, (list, tuple)) else [step.size]
            interp = getattr(step.interpolation, "value", str(step.interpolation))
            resize = {
                "size": [int(s) for s in sizes],
                "interpolation": str(interp),
                "antialias": bool(getattr(step, "antialias", True)),
                "rule": "the whole image resized to exactly height x width (aspect ratio not "
                "kept, nothing cropped)"
                if len(sizes) == 2
                else "the shorter side resized to size, aspect ratio kept",
            }
        elif kind == "CenterCrop":
            crop = [int(s) for s in step.size]
        elif kind == "Normalize":
            mean = [float(m) for m in step.mean]
            std = [float(s) for s in step.std]
    size = backbone.spec.input_size
    return {
        "input_size": [size, size],
        "resize": resize,
        "center_crop": crop,
        "color": "8-bit RGB: EXIF orientation applied, grey, palette and CMYK converted to "
        "RGB, transparency composited onto white",
        "channel_order": "RGB",
        "layout": "NCHW",
        "scale": "pixel / 255, then (x - mean) / std per channel",
        "mean": mean,
        "std": std,
        "views_in_model": list(backbone.views),
        "transform": repr(tf),
    }


def _text_preprocess(backbone: Backbone, model: Predictor) -> dict[str, Any]:
    inner = innermost(backbone)
    tok = getattr(inner, "tokenizer", None)
    pad_id = getattr(tok, "pad_token_id", None)
    return {
        "tokenizer": "tokenizer",
        "tokenizer_class": type(tok).__name__,
        "max_length": int(getattr(inner, "max_length", backbone.spec.input_size)),
        "truncation": {
            "max_length": int(getattr(inner, "max_length", backbone.spec.input_size)),
            "side": str(getattr(tok, "truncation_side", "right")),
            "special_tokens": "added by the tokenizer and counted in max_length",
        },
        "padding": {
            "to": "the longest text of the batch",
            "side": str(getattr(tok, "padding_side", "right")),
            "pad_token_id": int(pad_id) if pad_id is not None else 0,
            "attention_mask": "1 for a token, 0 for padding",
            "token_type_ids": "0 (single texts)",
        },
        "pooling": str(backbone.spec.extra.get("pooling", "mean")),
        "text_columns": list(model.cfg.data.text_cols or []),
        "text_columns_joined_with": " ",
    }


def preprocess_doc(model: Predictor, names: list[str]) -> dict[str, Any]:
    bb = model.backbone
    text = bb.spec.modality == "text"
    inputs = [
        {
            "name": n,
            "dtype": "int64" if text else "float32",
            "shape": ["batch", "sequence"]
            if text
            else ["batch", 3, bb.spec.input_size, bb.spec.input_size],
        }
        for n in names
    ]
    doc: dict[str, Any] = {
        "format_version": EXPORT_FORMAT_VERSION,
        "modality": bb.spec.modality,
        "backbone": bb.spec.name,
        "inputs": inputs,
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(model.classes)]},
        "classes": list(model.classes),
        "temperature": model.temperature,
        "probabilities": "softmax(logits / temperature)",
    }
    doc[bb.spec.modality] = _text_preprocess(bb, model) if text else _image_preprocess(bb)
    return doc


# -- the run's data -------------------------------------------------------------------------
def run_data(model: Predictor, run: Path) -> Splits:
    """The run's splits, recreated from its config.yaml exactly as ``fit`` made them."""
    cfg = model.cfg
    quiet = Console(quiet=True)
    try:
        few_shot = build_strategy(cfg.strategy).few_shot
        return prepare_data(cfg.data, quiet, progress=False, few_shot=few_shot)
    except (HeadstartError, OSError) as e:
        raise DataError(
            f"the run's data, {cfg.data.source!r} (from {run / 'config.yaml'}), to check the "
            "export against the run's model",
            f"it cannot be read ({type(e).__name__}: {e})",
            "put the data back where the run was trained, or pass --no-parity to export "
            "without the check (and without --quantize, whose accuracy figures need it)",
        ) from e


def fixed_sample(samples: Samples, n: int) -> Samples:
    """Up to ``n`` examples drawn with a fixed seed, in their original order."""
    if len(samples) <= n:
        return samples
    rng = np.random.default_rng(SAMPLE_SEED)
    return samples.subset(np.sort(rng.choice(len(samples), n, replace=False)))


def _held_out(data: Splits) -> tuple[str, Samples]:
    if data.test is not None and len(data.test):
        return "test", data.test
    if len(data.val):
        return "validation", data.val
    return "train", data.train


def parity(
    model: Predictor, onnx_path: Path, samples: Samples, tolerance: float, batch_size: int
) -> dict[str, Any]:
    """Torch logits (as ``predict`` computes them) against onnxruntime's on ``samples``."""
    ds = model.backbone.make_dataset(samples)
    ref = TorchEngine(model.backbone, torch.device("cpu")).logits(ds, batch_size)
    got = OnnxEngine(model.backbone, onnx_path).logits(ds, batch_size)
    diff = float((ref - got).abs().max()) if len(ref) else 0.0
    scale = max(1.0, float(ref.abs().max()) if len(ref) else 1.0)
    return {
        "n": len(samples),
        "max_abs_diff": diff,
        "logit_scale": scale,
        "tolerance": tolerance,
        "allowed": tolerance * scale,
        "top1_agreement": float((ref.argmax(1) == got.argmax(1)).float().mean())
        if len(ref)
        else 1.0,
        "rule": "max |onnx - torch| <= tolerance * max(1, max |torch logit|)",
    }


# -- int8 -----------------------------------------------------------------------------------
def quantize(
    model: Predictor, fp32: Path, int8: Path, data: Splits, cfg: ExportConfig, console: Console
) -> dict[str, Any]:
    """Write ``int8`` from ``fp32`` and compare both on the whole held-out split."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    bb = model.backbone
    t0 = time.perf_counter()
    if bb.spec.modality == "text":
        method = "dynamic (int8 weights of MatMul/Gemm, activations quantised at run time)"
        with _quiet():
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    else:
        method = (
            f"static QDQ, per-channel int8 weights, activations calibrated on "
            f"{min(cfg.calibration_samples, len(data.train))} training images"
        )
        calib_samples = fixed_sample(data.train, cfg.calibration_samples)
        feeds: Iterator[dict[str, np.ndarray]] = (
            OnnxEngine(bb, fp32).feed(x)
            for _, x in batches(bb.make_dataset(calib_samples), bb.collate_fn(), 32)
        )

        class Reader(CalibrationDataReader):
            """The calibration images, preprocessed as predict does, read once."""

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(feeds, None)

        with _quiet():
            quantize_static(
                str(fp32),
                str(int8),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    seconds = time.perf_counter() - t0
    split, held = _held_out(data)
    ds = bb.make_dataset(held)
    y = torch.as_tensor(np.asarray(held.labels))
    p32 = OnnxEngine(bb, fp32).logits(ds, cfg.batch_size).argmax(1)
    p8 = OnnxEngine(bb, int8).logits(ds, cfg.batch_size).argmax(1)
    acc32, acc8 = float((p32 == y).float().mean()), float((p8 == y).float().mean())
    agree = float((p32 == p8).float().mean())
    console.print(
        f"[bold]int8[/] {method}: {split} accuracy {acc32:.4f} (fp32 ONNX) -> {acc8:.4f} "
        f"(int8), change {acc8 - acc32:+.4f}; top-1 agreement {agree:.4f} on {len(held)} "
        f"inputs; {int8.stat().st_size / 1e6:.1f} MB vs {fp32.stat().st_size / 1e6:.1f} MB"
    )
    return {
        "file": int8.name,
        "method": method,
        "split": split,
        "n": len(held),
        "accuracy_fp32": acc32,
        "accuracy_int8": acc8,
        "accuracy_change": acc8 - acc32,
        "top1_agreement": agree,
        "bytes_fp32": fp32.stat().st_size,
        "bytes_int8": int8.stat().st_size,
        "sha256": sha256_file(int8),
        "seconds": seconds,
    }


# -- the command ----------------------------------------------------------------------------
def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript") if _version(m) is None]
    if not onnxruntime_available():
        missing.append("onnxruntime")
    if missing:
        raise ConfigError(
            "onnx, onnxscript and onnxruntime installed to export",
            f"missing: {', '.join(missing)}",
            "pip install 'headstart[export]' (or pip install onnx onnxscript onnxruntime)",
        )


def run_export(run: Path, cfg: ExportConfig, console: Console | None = None) -> dict[str, Any]:
    """Export run folder ``run`` as ONNX (see the module doc); returns export.json's dict."""
    console = console or Console()
    run = Path(run)
    _require_onnx()
    model = load(run, device="cpu", engine="torch")
    bb = model.backbone
    check_exportable(bb)
    if cfg.quantize != "none" and not cfg.parity:
        raise ConfigError(
            "the run's data for --quantize int8 (its accuracy figures are measured on it)",
            "--no-parity, which skips reading the data",
            "drop --no-parity, or drop --quantize",
        )
    out = Path(cfg.out).expanduser() if cfg.out else run / EXPORT_DIR
    check_out_folder(out)
    data = run_data(model, run) if cfg.parity else None
    source_sha = sha256_file(run / "model.safetensors")
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").unlink(missing_ok=True)  # an export without it is not used
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-export-") as tmp:
        path, exporter, why = _to_onnx(bb, Path(tmp))
        atomic_write(out / "model.onnx", path.read_bytes())
    seconds = time.perf_counter() - t0
    onnx_path = out / "model.onnx"
    names = [i.name for i in OnnxEngine(bb, onnx_path).session.get_inputs()]
    console.print(
        f"[bold]exported[/] {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB, {exporter} "
        f"exporter, {seconds:.1f} s)"
    )
    write_json(out / "preprocess.json", preprocess_doc(model, names))
    if bb.spec.modality == "text":
        innermost(bb).save_assets(out)  # the tokenizer, as out/tokenizer
    doc: dict[str, Any] = {
        "format_version": EXPORT_FORMAT_VERSION,
        "run": str(run.resolve()),
        "format": cfg.format,
        "exporter": exporter,
        "exporter_note": why,
        "opset": ONNX_OPSET,
        "seconds": seconds,
        "sha256": sha256_file(onnx_path),
        "source": "model.safetensors",
        "source_sha256": source_sha,
        "versions": {
            k: _version(k) for k in ("headstart", "torch", "onnx", "onnxscript", "onnxruntime")
        },
        "python": platform.python_version(),
        "parity": None,
        "quantization": None,
    }
    if data is None:
        console.print("[yellow]parity not checked[/] (--no-parity)")
    else:
        split, held = _held_out(data)
        check = parity(
            model, onnx_path, fixed_sample(held, cfg.parity_samples), cfg.tolerance, cfg.batch_size
        )
        check["split"] = split
        doc["parity"] = check
        console.print(
            f"[bold]parity[/] max |ONNX - torch| logit difference {check['max_abs_diff']:.2e} "
            f"on {check['n']} {split} inputs (allowed {check['allowed']:.2e}); top-1 agreement "
            f"{check['top1_agreement']:.4f}"
        )
        if check["max_abs_diff"] > check["allowed"]:
            raise BackboneError(
                f"ONNX logits within {check['allowed']:.2e} of the run's model "
                f"(--tolerance {cfg.tolerance:g} times the logit scale {check['logit_scale']:.3g})",
                f"a largest difference of {check['max_abs_diff']:.3e} on {check['n']} {split} "
                "inputs",
                "report it with the run's backbone name; a looser --tolerance accepts it, "
                "`headstart predict --engine torch` predicts without the export",
            )
        if cfg.quantize == "int8":
            doc["quantization"] = quantize(
                model, onnx_path, out / "model.int8.onnx", data, cfg, console
            )
    write_json(out / "export.json", doc)  # last: with it the export is complete
    console.print(f"[bold green]export[/] {out}")
    return doc
