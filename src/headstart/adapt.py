"""``headstart adapt``: train on a labelled source domain, adapt to an unlabelled target
domain with each method, and show the gain honestly.

Every method and the source-only baseline train on the same source splits for the same
epochs, once per seed; each run is an ordinary run folder under ``OUT/<seed>/<method>``
whose test set is the labelled target data. Beside the target accuracy (which needs
target labels), three criteria that need none say which method a user without target
labels would pick: the source validation accuracy, the mean entropy of the predictions on
the target, and their information maximisation score (the entropy of the mean target
prediction minus the mean entropy: confident and spread over the classes, so a model that
collapses onto one class does not win). The proxy A-distance between source and target
features, before (the pretrained backbone) and after adaptation, measures the domain gap.

Run again with the same ``--out``, finished runs are read back instead of trained again
and a run stopped mid-training resumes from its last epoch checkpoint; runs made with other
settings are refused (``--overwrite`` trains everything again).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table

from headstart.adaptation import entropy, proxy_a_distance, without_labels
from headstart.backbones import Backbone, create_backbone
from headstart.config import (
    ADAPT_METHODS,
    IMAGE_ONLY_ADAPT_METHODS,
    AdaptConfig,
    DataConfig,
    RunConfig,
)
from headstart.data import ImageSamples, list_image_files, resolve_texts
from headstart.data.dataset import data_fingerprint
from headstart.errors import ConfigError, DataError, RunFolderError
from headstart.features import compute_embeddings
from headstart.pipeline import (
    DEFAULT_BACKBONES,
    Samples,
    Splits,
    check_samples,
    fit,
    is_text_source,
    load_source,
    prepare_data,
    with_resolved_head,
)
from headstart.runfolder import Predictor, write_json
from headstart.training import resolve_device

SOURCE_ONLY = "source-only"
IMAGE_ONLY_METHODS = IMAGE_ONLY_ADAPT_METHODS
CRITERIA = {
    "source-val": "highest source validation accuracy",
    "target-entropy": "lowest mean prediction entropy on the target",
    "target-infomax": "highest entropy of the mean target prediction minus the mean entropy",
}


@dataclass
class AdaptResult:
    summary: dict[str, Any]
    runs: list[dict[str, Any]]


def load_target(spec: str, cfg: DataConfig) -> Samples:
    """The target domain, labelled or not: what :func:`load_source` reads, and also a folder
    of images without class subfolders, or a table without the label column (every label
    -1, unlabelled)."""
    path = Path(spec).expanduser()
    if is_text_source(spec):
        if not path.is_file():
            return load_source(spec, cfg)  # a bundled dataset, or the clear error
        unlabelled = resolve_texts(spec, cfg.text_cols, None)
        return unlabelled if cfg.label_col not in unlabelled.extra else load_source(spec, cfg)
    if path.is_dir() and not any(
        d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX" for d in path.iterdir()
    ):
        files = list_image_files(path)
        if not files:
            raise DataError(
                "a target folder of images (flat for unlabelled images, or one subfolder per "
                "class)",
                f"no image files in {path}",
                "check the path given with --target",
            )
        return ImageSamples(
            classes=[], labels=np.full(len(files), -1, dtype=np.int64), paths=files, name=str(path)
        )
    return load_source(spec, cfg)


def _target_data(
    spec: AdaptConfig, base: RunConfig, classes: list[str], progress: bool, console: Console
) -> tuple[Samples, Samples | None]:
    """(target samples for the methods, labelled target samples to score on or None).

    A target labelled with some of the source's classes is scored on them; a target whose
    folders (or labels) are not among the source's classes is read as unlabelled."""
    target = load_target(spec.target, base.data)
    labelled = bool((np.asarray(target.labels) >= 0).any())
    if labelled and target.classes != classes:
        if set(target.classes) <= set(classes):
            target = load_source(spec.target, base.data, classes=classes)
        else:
            console.print(
                f"[bold]target[/] its classes ({', '.join(target.classes)}) are not the "
                "source's: read as unlabelled",
                highlight=False,
            )
            target = dataclasses.replace(without_labels(target), classes=[])
    target = check_samples(target, base.data, progress, min_per_class=0)[0]
    evaluation: Samples | None = None
    if spec.target_eval:
        evaluation = load_source(spec.target_eval, base.data, classes=classes)
        evaluation = check_samples(evaluation, base.data, progress, min_per_class=0)[0]
    elif (np.asarray(target.labels) >= 0).all() and target.classes == classes:
        evaluation = target  # its labels score the result; the methods never see them
    return target, evaluation


def _features(backbone: Backbone, samples: Samples, batch: int, device: str) -> np.ndarray:
    return compute_embeddings(
        backbone, backbone.make_dataset(samples), batch, device, False
    ).numpy()


def _head_probs(backbone: Backbone, features: np.ndarray) -> torch.Tensor:
    """Class probabilities from pooled features: the head is all that runs after them."""
    head = backbone.head().eval()
    weight = next(head.parameters())
    with torch.no_grad():
        logits = head(torch.as_tensor(features).to(weight.device, weight.dtype)).float().cpu()
    return torch.softmax(logits, 1)


def methods_for(modality: str, methods: list[str], console: Console) -> list[str]:
    """The methods that apply to ``modality``: for text, ``all`` leaves out the image-only
    ones (with a note) and naming one is an error, before any training."""
    image_only = [m for m in methods if m in IMAGE_ONLY_METHODS]
    if modality == "image" or not image_only:
        return methods
    if set(methods) == set(ADAPT_METHODS):
        console.print(f"[bold]methods[/] {', '.join(image_only)} left out: images only")
        return [m for m in methods if m not in IMAGE_ONLY_METHODS]
    raise ConfigError(
        "adaptation methods that apply to text",
        f"{', '.join(image_only)} (images only: weak and strong image augmentations)",
        f"use {', '.join(m for m in ADAPT_METHODS if m not in IMAGE_ONLY_METHODS)} for text",
    )


#: settings a finished run may be read back under although they differ: they do not
#: change what was trained
_HARMLESS = {("train", "device"), ("train", "num_workers"), ("backbone", "allow_download"),
             ("eval", "batch_size")}  # fmt: skip
DATA_FILE = "adapt-data.json"


def _check_same_settings(run_dir: Path, cfg: RunConfig) -> None:
    """A run folder reused by a repeated ``adapt`` must have been made with its settings."""
    saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    cfg = with_resolved_head(cfg)  # as fit writes it
    differ = [
        f"{section}.{key}: {(saved.get(section) or {}).get(key)!r} -> {value!r}"
        for section, values in cfg.to_dict().items()
        for key, value in values.items()
        if (section, key) not in _HARMLESS and (saved.get(section) or {}).get(key) != value
    ]
    if differ:
        raise RunFolderError(
            f"the run in {run_dir} made with this adaptation's settings",
            f"one made with other settings ({'; '.join(differ)})",
            "pass --overwrite to train every run again, or another --out",
        )


def _check_same_data(out: Path, data: dict[str, str | None], overwrite: bool) -> None:
    """The source, target and target-eval data of an ``--out`` folder stay the same; a
    repeated ``adapt`` on other data is refused rather than mixed with the earlier runs."""
    path = out / DATA_FILE
    if path.is_file() and not overwrite:
        saved = json.loads(path.read_text())
        differ = [k for k in data if saved.get(k) != data[k]]
        if differ:
            raise RunFolderError(
                f"the same {', '.join(differ)} data as the runs already in {out}",
                f"other {', '.join(differ)} data (its content differs)",
                "pass --overwrite to train every run again, or another --out",
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, data)


def run_adapt(
    base: RunConfig,
    spec: AdaptConfig,
    out: str | Path,
    *,
    progress: bool = True,
    console: Console | None = None,
    overwrite: bool = False,
) -> AdaptResult:
    """Source-only and every method of ``spec`` over its seeds; writes ``OUT/adapt.json``."""
    console = console or Console()
    out = Path(out)
    start = time.perf_counter()
    device = resolve_device(base.train.device)
    data_cfg = dataclasses.replace(base.data, test_fraction=0.0, test=None)
    source = prepare_data(data_cfg, console, progress, small_data=False)
    target, evaluation = _target_data(spec, base, source.classes, progress, console)
    modality = "text" if hasattr(source.train, "texts") else "image"
    if ("text" if hasattr(target, "texts") else "image") != modality:
        raise DataError(
            f"target data of the source's kind ({modality})",
            f"{spec.target}: {'images' if modality == 'text' else 'texts'}",
            "adapt texts to texts and images to images",
        )
    spec = dataclasses.replace(spec, methods=methods_for(modality, spec.methods, console))
    _check_same_data(
        out,
        {
            "source": data_fingerprint(source.train) + data_fingerprint(source.val),
            "target": data_fingerprint(without_labels(target)),
            "target-eval": data_fingerprint(evaluation) if evaluation is not None else None,
        },
        overwrite,
    )
    if base.backbone.name == "auto":
        base = dataclasses.replace(
            base, backbone=dataclasses.replace(base.backbone, name=DEFAULT_BACKBONES[modality])
        )
    bs = base.eval.batch_size
    pretrained = create_backbone(
        base.backbone, len(source.classes), base.data.image_size, base.data.max_length
    )
    gap_before = proxy_a_distance(
        _features(pretrained, source.val if len(source.val) else source.train, bs, device),
        _features(pretrained, target, bs, device),
    )
    del pretrained
    console.print(
        f"[bold]domain gap[/] proxy A-distance with the pretrained backbone: {gap_before:.3f}"
    )
    runs: list[dict[str, Any]] = []
    quiet = Console(quiet=True)
    data = Splits(source.train, source.val, evaluation)
    for seed in range(base.train.seed, base.train.seed + spec.seeds):
        for method in (SOURCE_ONLY, *spec.methods):
            strategy = "lp-ft" if method == SOURCE_ONLY else method
            cfg = dataclasses.replace(
                base,
                data=data_cfg,
                strategy=dataclasses.replace(base.strategy, name=strategy),
                train=dataclasses.replace(base.train, seed=seed, patience=base.train.epochs),
            )
            run_dir = out / str(seed) / method
            t0 = time.perf_counter()
            if not overwrite and (run_dir / "metrics.json").is_file():
                _check_same_settings(run_dir, cfg)
                bb = Predictor.load(run_dir, device).backbone
                metrics = json.loads((run_dir / "metrics.json").read_text())
                state = "already finished"
            else:
                resume = not overwrite and (run_dir / "checkpoint" / "last.safetensors").is_file()
                if resume:
                    _check_same_settings(run_dir, cfg)
                result = fit(
                    cfg,
                    run_dir,
                    resume=resume,
                    overwrite=not resume,  # an unfinished run without a checkpoint: no loss
                    progress=progress,
                    console=quiet,
                    data=data,
                    target=None if method == SOURCE_ONLY else target,
                )
                bb, metrics = result.backbone, result.metrics
                state = "resumed and finished" if resume else "finished"
            bb.eval()
            target_features = _features(bb, without_labels(target), bs, device)
            probs = _head_probs(bb, target_features)  # one pass over the target, not two
            row: dict[str, Any] = {
                "seed": seed,
                "method": method,
                "seconds": float(metrics.get("seconds", time.perf_counter() - t0)),
                "source_val_accuracy": metrics["validation"]["accuracy"],
                "target_entropy": float(entropy(probs).mean()),
                "target_diversity": float(entropy(probs.mean(0, keepdim=True))[0]),
                "a_distance": proxy_a_distance(
                    _features(bb, source.val if len(source.val) else source.train, bs, device),
                    target_features,
                ),
            }
            if evaluation is not None:
                row["target_accuracy"] = metrics["test"]["accuracy"]
                row["target_macro_f1"] = metrics["test"]["macro_f1"]
            runs.append(row)
            shown = (
                f"target accuracy {row['target_accuracy']:.3f}, " if evaluation is not None else ""
            )
            console.print(
                f"  seed {seed} {method}: {shown}{state} ({row['seconds']:.0f} s)", highlight=False
            )
    summary = summarise(runs, gap_before, evaluation is not None)
    summary["seconds"] = time.perf_counter() - start
    summary["source"], summary["target"] = base.data.source, spec.target
    summary["target_eval"] = spec.target_eval or (spec.target if evaluation is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "adapt.json", {"summary": summary, "runs": runs})
    return AdaptResult(summary, runs)


def summarise(runs: list[dict[str, Any]], gap_before: float, labelled: bool) -> dict[str, Any]:
    """Mean and std per method; which method each criterion picks per seed, and what the
    picks score against the oracle (the best target accuracy of the seed)."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    keys = ["source_val_accuracy", "target_entropy", "target_diversity", "a_distance"]
    if labelled:
        keys += ["target_accuracy", "target_macro_f1"]
    table = {}
    for m in methods:
        mine = [r for r in runs if r["method"] == m]
        for r in mine:
            r["target_infomax"] = r["target_diversity"] - r["target_entropy"]
        table[m] = {
            k: {
                "mean": float(np.mean([r[k] for r in mine])),
                "std": float(np.std([r[k] for r in mine])),
            }
            for k in [*keys, "target_infomax"]
        }
    picks: dict[str, Any] = {}
    seeds = sorted({r["seed"] for r in runs})
    for criterion in (*CRITERIA, *(["oracle"] if labelled else [])):
        chosen = []
        for seed in seeds:
            mine = [r for r in runs if r["seed"] == seed]
            if criterion == "source-val":
                best = max(mine, key=lambda r: r["source_val_accuracy"])
            elif criterion == "target-entropy":
                best = min(mine, key=lambda r: r["target_entropy"])
            elif criterion == "target-infomax":
                best = max(mine, key=lambda r: r["target_infomax"])
            else:
                best = max(mine, key=lambda r: r["target_accuracy"])
            chosen.append(best)
        picks[criterion] = {
            "methods": [r["method"] for r in chosen],
            "target_accuracy": float(np.mean([r["target_accuracy"] for r in chosen]))
            if labelled
            else None,
        }
    return {"methods": table, "a_distance_before": gap_before, "picks": picks, "criteria": CRITERIA}


def print_adaptation(summary: dict[str, Any], console: Console) -> None:
    labelled = "target_accuracy" in next(iter(summary["methods"].values()))
    table = Table(title="Domain adaptation (mean ± std over seeds)")
    cols = ["method"]
    if labelled:
        cols += ["target accuracy", "target macro-F1"]
    cols += ["A-distance", "source val acc", "target entropy", "target infomax"]
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right")
    for m, v in summary["methods"].items():

        def pm(k: str, v: dict[str, Any] = v) -> str:
            return f"{v[k]['mean']:.3f} ± {v[k]['std']:.3f}"

        cells = [m]
        if labelled:
            cells += [pm("target_accuracy"), pm("target_macro_f1")]
        cells += [pm("a_distance"), pm("source_val_accuracy"), pm("target_entropy")]
        infomax = v.get("target_infomax")
        cells.append(f"{infomax['mean']:.3f} ± {infomax['std']:.3f}" if infomax else "-")
        table.add_row(*cells)
    console.print(table)
    console.print(
        "proxy A-distance before adaptation (pretrained backbone): "
        f"{summary['a_distance_before']:.3f}"
    )
    for name, pick in summary["picks"].items():
        what = CRITERIA.get(name, "the best target accuracy (needs target labels)")
        acc = (
            f": target accuracy {pick['target_accuracy']:.3f}"
            if pick["target_accuracy"] is not None
            else ""
        )
        console.print(f"  {name} ({what}) picks {', '.join(pick['methods'])}{acc}", highlight=False)
