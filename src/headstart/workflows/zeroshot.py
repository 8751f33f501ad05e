"""``headstart zeroshot``: classify without labelled examples, from class names (text
encoders, CLIP) or through an ImageNet head (ConSE); optional refinement on the data."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from headstart.backbones import Backbone, create_backbone
from headstart.config import (
    BackboneConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    ZeroShotConfig,
    match_descriptions,
)
from headstart.data import ImageSamples, TextSamples, stratified_split
from headstart.data.loading import load_target
from headstart.device import resolve_device
from headstart.errors import BackboneError, ConfigError, RunFolderError
from headstart.evaluation import classification_metrics, print_metrics
from headstart.features import EmbeddingCache, embed_samples
from headstart.fewshot.zeroshot import (
    CONSE_TOP,
    DEFAULT_IMAGE_TEMPLATES,
    DEFAULT_TEXT_TEMPLATES,
    ZEROSHOT,
    ClipZeroShot,
    ZeroShotResult,
    conse_embeddings,
    embed_texts,
    imagenet_class_names,
    is_clip_folder,
    label_directions,
    refine_directions,
)
from headstart.heads.prototypes import cosine_head, unit
from headstart.runfolder import (
    check_out_folder,
    clear_outputs,
    earlier_outputs,
    input_names,
    save_config,
    save_model,
    write_json,
)
from headstart.storage import locked, write_csv


@locked("zero-shot")
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
    check_out_folder(out)
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
    head = vision.source_head()
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
    names = input_names(samples)
    table: list[list[str]] = [["input", "predicted", "cosine", *(f"cosine_{c}" for c in labels)]]
    for name, row in zip(names, scores, strict=True):
        k = int(row.argmax())
        table.append([name, labels[k], f"{row[k]:.4f}", *(f"{v:.4f}" for v in row)])
    write_csv(path, table)


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
