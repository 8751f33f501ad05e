"""The run folder: everything a run produced, and loading it back for prediction.

Layout: ``model.safetensors``, ``config.yaml`` (the run config plus the backbone spec),
``labels.json``, ``calibration.json`` (the temperature), ``metrics.json``,
``history.jsonl``, ``predictions.safetensors``, ``report.html`` and ``checkpoint/``. Only
safetensors, JSON and YAML are written or read; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file

from headstart import storage
from headstart.backbones import Backbone, BackboneSpec, backbone_from_spec
from headstart.config import RunConfig
from headstart.data import (
    ImageSamples,
    TextSamples,
    from_arrays,
    from_texts,
    list_image_files,
    preflight,
    preflight_text,
    read_text_table,
)
from headstart.data.loading import (
    TEXT_SUFFIXES,
)
from headstart.device import resolve_device
from headstart.engines import OnnxEngine, TorchEngine, choose_engine, make_engine
from headstart.errors import DataError, HeadstartError, RunFolderError
from headstart.evaluation.report import embedding_map, read_history, write_fit_report
from headstart.evaluation.run import (
    EvalOutputs,
)
from headstart.features.store import LazyEmbeddings
from headstart.paths import is_dir, is_file
from headstart.storage import check_out_folder, write_safetensors

FORMAT_VERSION = 1


def _strict(obj: Any) -> Any:
    """NaN and infinities as null: what ``json.dumps`` would write for them is not JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (non-finite numbers as null), written atomically."""
    storage.write_json(path, _strict(obj))


def save_config(run_dir: Path, cfg: RunConfig, spec: BackboneSpec, classes: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {**cfg.to_dict(), "spec": spec.to_dict()}
    storage.write_yaml(run_dir / "config.yaml", doc)
    write_json(run_dir / "labels.json", {"format_version": FORMAT_VERSION, "classes": classes})


#: ``model.safetensors`` metadata of a run that keeps only the tensors that trained
TRAINED_ONLY = "trained-only"


def save_model(run_dir: Path, backbone: Backbone) -> None:
    """The model's weights; for a parameter-efficient run only the tensors that trained
    (``backbone.stored_state``) and the base weights' name and sha256."""
    meta = {"format": "pt", "headstart": str(FORMAT_VERSION)}
    stored = backbone.stored_state
    if stored is not None and backbone.spec.weights_sha256:
        meta.update(
            stores=TRAINED_ONLY,
            base_weights=backbone.spec.weights,
            base_sha256=backbone.spec.weights_sha256,
        )
        state = {k: v.contiguous() for k, v in stored.items()}
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    write_safetensors(state, run_dir / "model.safetensors", meta)


def _base_with_trained(
    cfg: RunConfig, spec: BackboneSpec, classes: list[str], weights: Path, meta: dict[str, str]
) -> Backbone:
    """The backbone of a run that stored only its trained tensors: the base model from
    its pretrained weights (the sha256 must be the run's), then the tensors put back by
    the run's strategy (adapters merged)."""
    from headstart.backbones import create_backbone
    from headstart.errors import BackboneError
    from headstart.strategies import build_strategy

    expected = f"the base weights {meta.get('base_weights')} (sha256 {meta.get('base_sha256')})"
    why = (
        "the run folder keeps only the tensors its strategy trained; make those weights "
        "available again (the package, or --weights FILE when it was trained with one)"
    )
    try:
        base = create_backbone(
            dataclasses.replace(cfg.backbone, pretrained=True),
            len(classes),
            spec.input_size if spec.modality == "image" else None,  # the size it ran at
            cfg.data.max_length,
        )
    except BackboneError as e:
        raise RunFolderError(expected, f"they cannot be loaded: {e}", why) from e
    if base.spec.weights_sha256 != meta.get("base_sha256"):
        raise RunFolderError(
            expected,
            f"{base.spec.weights} with sha256 {base.spec.weights_sha256}",
            why,
        )
    try:
        build_strategy(cfg.strategy).restore_model(base, load_file(str(weights)))
    except HeadstartError as e:
        raise RunFolderError(
            f"the tensors of a {cfg.strategy.name} run that fit its base model",
            str(e),
            "re-run `headstart fit`; the file may be from another run",
        ) from e
    return base


def _metadata(weights: Path) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it cannot be read: the load that
    follows says why)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # a truncated file: the full load reports it
        return {}


def read_temperature(run_dir: Path) -> float:
    """The temperature in ``calibration.json`` (1.0, i.e. uncalibrated, without one)."""
    path = run_dir / "calibration.json"
    if not path.is_file():
        return 1.0
    try:
        t = float(json.loads(path.read_text())["temperature"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RunFolderError(
            'calibration.json holding {"temperature": <a positive number>}',
            f"unreadable {path} ({type(e).__name__}: {e})",
            "delete the file to predict uncalibrated, or re-run `headstart fit`",
        ) from e
    if not t > 0:
        raise RunFolderError(
            "a positive temperature in calibration.json",
            repr(t),
            "delete the file to predict uncalibrated, or re-run `headstart fit`",
        )
    return t


#: what any headstart command writes into an output folder (cleared on --overwrite)
RUN_OUTPUTS = (
    "checkpoint",
    "model.safetensors",
    "metrics.json",
    "history.jsonl",
    "calibration.json",
    "predictions.safetensors",
    "report.html",
    "config.yaml",
    "labels.json",
    "tokenizer",
    "vectors",
    "export",
    "zeroshot.json",
    "predictions.csv",
    "model-removed.json",
)
#: what a finished run needs only to predict (or to resume): removed from sweep cells
#: whose model is not kept (``--keep-models``); their metrics, history and test
#: predictions stay, which is all their reports read
MODEL_FILES = ("model.safetensors", "checkpoint", "tokenizer", "vectors", "export")
#: written by a cell whose model was removed, naming why (read by :func:`load`)
MODEL_REMOVED = RUN_OUTPUTS[-1]


def earlier_outputs(out: Path) -> list[str]:
    """The names of ``RUN_OUTPUTS`` present in ``out``."""
    return [n for n in RUN_OUTPUTS if (out / n).exists()]


def clear_outputs(out: Path) -> None:
    """Remove what an earlier run wrote into ``out`` (nothing else in the folder)."""
    for name in earlier_outputs(out):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_checkpoint(run_dir: Path) -> int:
    """Remove the training checkpoint of a finished run; returns the bytes freed."""
    folder = run_dir / "checkpoint"
    if not folder.is_dir():
        return 0
    freed = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return freed


def remove_model(run_dir: Path, reason: str) -> int:
    """Keep only what a finished run's reports read: remove :data:`MODEL_FILES` and say
    why in :data:`MODEL_REMOVED`; returns the bytes freed."""
    freed = 0
    for name in MODEL_FILES:
        path = run_dir / name
        if path.is_file():
            freed += path.stat().st_size
        elif path.is_dir():
            freed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        _remove(path)
    write_json(run_dir / MODEL_REMOVED, {"reason": reason})
    return freed


def _require(run_dir: Path, name: str) -> Path:
    p = run_dir / name
    removed = run_dir / MODEL_REMOVED
    if not p.is_file() and name == "model.safetensors" and removed.is_file():
        try:
            reason = str(json.loads(removed.read_text())["reason"])
        except (json.JSONDecodeError, KeyError, TypeError):
            reason = "to save space"
        raise RunFolderError(
            "a run folder with its model.safetensors",
            f"a finished run in {run_dir} whose model was removed ({reason})",
            "run the comparison again with --keep-models all (its other cells are reused), "
            "or `headstart fit` this cell's settings on their own",
        )
    if not p.is_file():
        raise RunFolderError(
            f"a run folder with {name}",
            f"no {name} in {run_dir}" + ("" if run_dir.is_dir() else " (no such folder)"),
            "pass the --out folder of a finished `headstart fit` run",
        )
    return p


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and every image file under a given folder (sorted, hidden skipped).
    A table of texts, or a string that names no file, is an error: these are images."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser() if is_file(item) or is_dir(item) else Path(item)
        if p.suffix.lower() in TEXT_SUFFIXES and is_file(p):
            raise DataError(
                "image files or folders of images (this run's backbone takes images)",
                f"the table of texts {p}",
                "predict or evaluate texts with a run trained on texts (a text backbone such "
                "as minilm-l6)",
            )
        if is_dir(p):
            found = list_image_files(p)
            if not found:
                raise DataError("image files in the folder", f"none in {p}", "check the path")
            files.extend(found)
        elif is_file(p):
            files.append(p)
        else:
            shown = str(item) if len(str(item)) <= 80 else str(item)[:77] + "..."
            raise DataError(
                "an image file or a folder (this run's backbone takes images)",
                f"{shown!r}, which names no file or folder",
                "check the path; texts need a run trained on texts",
            )
    return files


class Predictor:
    """A trained model loaded from a run folder.

    ``engine``: ``auto`` (onnxruntime for an image run with a fresh ``headstart export`` on
    the CPU, else torch), ``onnx`` or ``torch``; :attr:`engine` says which runs
    (see :mod:`headstart.engines`). Both read the same preprocessed batches and return
    logits, turned into probabilities by the same temperature softmax."""

    def __init__(
        self,
        backbone: Backbone,
        classes: list[str],
        cfg: RunConfig,
        device: str = "auto",
        temperature: float = 1.0,
        engine: str = "auto",
        run_dir: str | Path | None = None,
    ) -> None:
        self.backbone = backbone
        self.classes = classes
        self.cfg = cfg
        #: temperature scaling fitted on the validation split: probabilities are
        #: softmax(logits / temperature); predicted classes do not change
        self.temperature = temperature
        self.device = resolve_device(device)
        self.backbone.to(self.device).eval()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        #: the engine that computes the logits: "onnx" or "torch"
        self.engine = choose_engine(engine, self.run_dir, self.device, backbone.spec.modality)
        self._engine: TorchEngine | OnnxEngine = make_engine(
            self.engine, self.backbone, self.device, self.run_dir
        )
        self.last_skipped: list[tuple[str, str]] = []

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", engine: str = "auto") -> Predictor:
        run_dir = Path(run_dir)
        config_file = _require(run_dir, "config.yaml")
        try:
            doc = yaml.safe_load(config_file.read_text())
            labels = json.loads(_require(run_dir, "labels.json").read_text())
            spec = BackboneSpec.from_dict(doc["spec"])
            classes = list(labels["classes"])
            cfg = RunConfig.from_dict({k: v for k, v in doc.items() if k != "spec"})
        except (yaml.YAMLError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise RunFolderError(
                "config.yaml with a backbone spec and labels.json with the classes",
                f"unreadable run files in {run_dir} ({type(e).__name__}: {e})",
                "re-run `headstart fit` to write the run folder again",
            ) from e
        if labels.get("format_version", 0) > FORMAT_VERSION:
            raise RunFolderError(
                f"a run folder of format {FORMAT_VERSION} or older",
                f"format {labels['format_version']}",
                "upgrade headstart",
            )
        weights = _require(run_dir, "model.safetensors")
        meta = _metadata(weights)
        if meta.get("stores") == TRAINED_ONLY:
            backbone = _base_with_trained(cfg, spec, classes, weights, meta)
            return cls(backbone, classes, cfg, device, read_temperature(run_dir), engine, run_dir)
        backbone = backbone_from_spec(spec, len(classes), run_dir)
        try:
            backbone.load_state_dict(load_file(str(weights)))
        except Exception as e:  # truncated file, or weights of another architecture
            raise RunFolderError(
                f"model.safetensors matching {spec.arch} with {len(classes)} classes",
                f"{type(e).__name__}: {str(e).splitlines()[0]}",
                "re-run `headstart fit`; the file may be truncated or from another run",
            ) from e
        return cls(backbone, classes, cfg, device, read_temperature(run_dir), engine, run_dir)

    def samples(
        self, inputs: Any, skip_bad: bool = False, text_cols: list[str] | None = None
    ) -> ImageSamples | TextSamples:
        """What to predict. Images: file paths, folders, one array or PIL image, a batch
        array (N, H, W[, C]), a list of arrays or PIL images (any sizes). Texts: one string,
        a list of strings, or a table file (.csv .tsv .jsonl .parquet) read with
        ``text_cols`` (default: the training run's text columns)."""
        if isinstance(inputs, (ImageSamples, TextSamples)):
            return inputs
        if self.backbone.spec.modality == "text":
            return self._text_samples(inputs, skip_bad, text_cols)
        if torch.is_tensor(inputs):
            inputs = inputs.numpy()
        if isinstance(inputs, Image.Image):
            inputs = [inputs]
        if isinstance(inputs, np.ndarray):
            if inputs.ndim == 3 and inputs.shape[-1] in (3, 4) and min(inputs.shape[:2]) > 4:
                inputs = inputs[None]  # one H x W x C image, not H grey images
            return from_arrays(inputs)
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        items = list(inputs)
        if items and all(isinstance(i, (Image.Image, np.ndarray)) for i in items):
            return from_arrays(np.stack([self._squash(i) for i in items]))
        files = collect_images(items)
        s = ImageSamples(classes=[], labels=np.full(len(files), -1), paths=files, name="inputs")
        samples, report = preflight(s, skip_bad=skip_bad, progress=False, min_per_class=0)
        self.last_skipped = report.bad
        return samples

    def _text_samples(
        self, inputs: Any, skip_bad: bool, text_cols: list[str] | None
    ) -> TextSamples:
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        inputs = list(inputs)
        items = [str(i) for i in inputs]
        tables = [i for i in items if Path(i).suffix.lower() in TEXT_SUFFIXES and is_file(i)]
        # an existing file that is not a table, or a folder, is no text: most likely images
        paths = [
            i
            for i, raw in zip(items, inputs, strict=True)
            if i not in tables and (isinstance(raw, Path) or is_file(i) or is_dir(i))
        ]
        if paths:
            raise DataError(
                "texts, or one table file of texts "
                f"({', '.join(TEXT_SUFFIXES)}), for this run's text backbone",
                f"{len(paths)} path(s) of other files or folders, e.g. {paths[0]!r}",
                "pass the texts themselves or a table with a text column; images need a run "
                "trained on images",
            )
        if tables and len(tables) == len(items) == 1:
            cols = text_cols or self.cfg.data.text_cols
            samples = read_text_table(tables[0], cols, label_col=None)
        elif tables:
            raise DataError(
                "one table file, or texts",
                f"{len(items)} inputs, {len(tables)} of them tables",
                "predict one table at a time (or pass the texts themselves)",
            )
        else:
            samples = from_texts(items)
        samples, report = preflight_text(samples, skip_bad=skip_bad, min_per_class=0)
        self.last_skipped = report.bad
        return samples

    def _squash(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One image of any size as RGB at the input size, resized exactly as the
        evaluation transform would (bilinear, no crop), so images of mixed sizes batch."""
        if isinstance(image, np.ndarray):
            a = image
            if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
                a = np.moveaxis(a, 0, -1)  # channel-first
            image = from_arrays(a[None]).image(0)
        size = self.backbone.spec.input_size
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized)

    def logits(self, samples: ImageSamples | TextSamples, batch_size: int = 64) -> torch.Tensor:
        """Logits (N, classes) of ``samples``, in their order, from :attr:`engine`."""
        return self._engine.logits(self.backbone.make_dataset(samples), batch_size)

    def proba(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities: softmax(logits / temperature)."""
        return torch.softmax(logits / self.temperature, 1)

    def predict_proba(self, inputs: Any, batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities (temperature scaling), one row per input."""
        return self.proba(self.logits(self.samples(inputs), batch_size)).numpy()

    def predict(
        self,
        inputs: Any,
        top_k: int = 1,
        batch_size: int = 64,
        skip_bad: bool = False,
        text_cols: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One dict per input: its name, the top-k labels and their probabilities."""
        samples = self.samples(inputs, skip_bad, text_cols)
        proba = self.proba(self.logits(samples, batch_size))
        k = min(top_k, len(self.classes))
        top_p, top_i = proba.topk(k, dim=1)
        names = input_names(samples)
        return [
            {
                "input": names[n],
                "labels": [self.classes[int(i)] for i in top_i[n]],
                "probabilities": [float(p) for p in top_p[n]],
            }
            for n in range(len(samples))
        ]


def input_names(samples: ImageSamples | TextSamples) -> list[str]:
    """How each input is named in predictions: its file, its row, or its text."""
    if isinstance(samples, TextSamples):
        if samples.rows is not None:
            return [f"{samples.name}:row {r}" for r in samples.rows]
        return [t if len(t) <= 80 else t[:77] + "..." for t in samples.texts]
    if samples.paths is not None:
        return [str(p) for p in samples.paths]
    return [f"#{i}" for i in range(len(samples))]


def load(run_dir: str | Path, device: str = "auto", engine: str = "auto") -> Predictor:
    """Load a run folder for prediction: ``headstart.load("runs/x").predict(files)``.
    ``engine``: auto, onnx or torch (:class:`Predictor`)."""
    return Predictor.load(run_dir, device, engine)


def save_results(
    out: Path,
    cfg: RunConfig,
    backbone: Backbone,
    metrics: dict[str, Any],
    outputs: EvalOutputs,
    console: Console,
) -> None:
    """The model, calibration, predictions and report of a run; metrics.json last."""
    write_json(out / "calibration.json", {"temperature": outputs.temperature})
    save_model(out, backbone)
    save_predictions(out, outputs)
    try:
        write_fit_report(
            out, cfg.to_dict(), metrics, read_history(out / "history.jsonl"), outputs.samples
        )
    except Exception as e:  # a figure must never cost a trained model
        console.print(f"[yellow]warning[/] report.html not written ({type(e).__name__}: {e})")
    write_json(out / "metrics.json", metrics)  # last: its presence marks a finished run
    console.print(f"[bold green]run folder[/] {out} ({metrics['seconds']:.1f} s)")


def save_predictions(out: Path, ev: EvalOutputs) -> None:
    """The shown split's logits, labels, embeddings map input and source agreement, so a
    report can be drawn again without the model (safetensors, not pickle)."""
    tensors = {
        "logits": ev.logits.float().contiguous(),
        "labels": torch.as_tensor(np.asarray(ev.samples.labels), dtype=torch.long),
        "map": embedding_map(
            ev.embeddings if isinstance(ev.embeddings, LazyEmbeddings) else ev.embeddings.numpy()
        ).astype(np.float32),
    }
    if ev.source_agreement is not None:
        tensors["source_agreement"] = torch.as_tensor(ev.source_agreement.astype(np.uint8))
    write_safetensors(
        {k: torch.as_tensor(v).contiguous() for k, v in tensors.items()},
        out / "predictions.safetensors",
        {"split": ev.split, "temperature": repr(ev.temperature)},
    )


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    check_out_folder(out)
    if resume:
        read_run_config(out)
        return
    if (out / "config.yaml").is_file():
        if not overwrite:
            raise RunFolderError(
                "a new or empty --out folder",
                f"an earlier run in {out}",
                "pass --resume to continue it, --overwrite to replace it, or another --out",
            )
        clear_outputs(out)


#: settings a resumed run may change: where and how fast it runs, and what it keeps, not
#: what it computes
MAY_CHANGE_ON_RESUME = (
    "train.device",
    "train.num_workers",
    "train.keep_checkpoint",
    "train.tracker",
)
#: values that ask headstart to choose; the run's config holds what was chosen
_CHOOSE = (None, "auto")


def read_run_config(run_dir: Path) -> RunConfig:
    """The config a run wrote into ``run_dir`` when it started, read strictly: a missing,
    empty, unparsable or incomplete ``config.yaml`` is a :class:`RunFolderError`, never a
    default config (which would train on the current folder)."""
    path = run_dir / "config.yaml"
    fix = (
        "this run cannot be continued; start it again with the same command and --overwrite "
        "instead of --resume (or pass another --out)"
    )
    if not path.is_file():
        raise RunFolderError(
            "a run folder to resume",
            f"no config.yaml in {run_dir}" + ("" if run_dir.is_dir() else " (no such folder)"),
            "drop --resume to start a new run, or pass the folder of an earlier run",
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise RunFolderError(
            "the config.yaml the run wrote when it started",
            f"an empty {path} ({path.stat().st_size} bytes)",
            fix,
        )
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RunFolderError("a readable config.yaml", f"{path}: {e}", fix) from e
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not data.get("source") or "spec" not in doc:
        raise RunFolderError(
            "a run's config.yaml with its data source and backbone spec",
            f"{path} without them (incomplete or not written by `headstart fit`)",
            fix,
        )
    try:
        return RunConfig.from_dict({k: v for k, v in doc.items() if k != "spec"})
    except HeadstartError as e:
        raise RunFolderError("a valid run config.yaml", f"{path}: {e}", fix) from e


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(doc) if isinstance(doc, tuple) else doc}


def _same_source(a: Any, b: Any) -> bool:
    try:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def resume_differences(saved: RunConfig, given: RunConfig) -> list[str]:
    """The settings in which ``given`` differs from the run's ``saved`` config, as
    ``"key: the run has X, given Y"``; values that ask headstart to choose (``auto``,
    unset) and :data:`MAY_CHANGE_ON_RESUME` never differ."""
    old, new = _flat(saved.to_dict()), _flat(given.to_dict())
    diffs = []
    for key, was in old.items():
        now = new.get(key)
        if key in MAY_CHANGE_ON_RESUME or now in _CHOOSE or now == was:
            continue
        if key == "data.source" and _same_source(was, now):
            continue
        diffs.append(f"{key}: the run has {was!r}, given {now!r}")
    return diffs


def resumed_config(run_dir: Path, given: RunConfig) -> RunConfig:
    """The config to resume the run in ``run_dir`` with: the run's own, with what may
    change on resume taken from ``given``; other differences are refused, each named."""
    saved = read_run_config(run_dir)
    diffs = resume_differences(saved, given)
    if diffs:
        raise RunFolderError(
            f"the settings of the run being resumed in {run_dir}",
            f"{len(diffs)} different: " + "; ".join(diffs),
            "drop those options to continue the run as it was started, or start a new run "
            "(another --out, or --overwrite)",
        )
    train = dataclasses.replace(
        saved.train,
        device=given.train.device,
        num_workers=given.train.num_workers,
        keep_checkpoint=given.train.keep_checkpoint,
    )
    return dataclasses.replace(saved, train=train)


def is_finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` finished: ``metrics.json``, written last, is there."""
    return (run_dir / "metrics.json").is_file()


def can_resume(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` stopped mid-training and can go on: an epoch
    checkpoint and a readable config. A run without them has little to lose and starts
    over."""
    if not (run_dir / "checkpoint" / "last.safetensors").is_file():
        return False
    try:
        read_run_config(run_dir)
    except RunFolderError:
        return False
    return True
