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

Source-only fine-tunes with lp-ft unless the base config names another fit strategy
(``--strategy``): a forgetting-aware one (``l2-sp``, ``ewc``, ``lwf``, ``bss``,
``progressive``) or a parameter-efficient one (``lora``, ``bitfit``). On images the ``ft-``
alignments are applied to that source-only model, so they inherit what it kept of the
backbone; the deep methods train as they always do. A parameter-efficient source-only run
keeps only its trained tensors, so it cannot be aligned again: the ``ft-`` alignments are
left out with a note (or refused when named).

The runs are one :mod:`headstart.workflows.sweep`: ``OUT/adapt.yaml`` binds the folder to the
settings every run shares and to the content of the source, target and target-eval data.
Run again with the same ``--out``, finished runs are read back instead of trained again
and a run stopped mid-training resumes from its last epoch checkpoint; other settings or
other data are refused (``--overwrite`` trains everything again).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from headstart.adaptation import (
    deep_embedded_validation,
    entropy,
    per_example_cross_entropy,
    proxy_a_distance,
    soft_neighborhood_density,
)
from headstart.adaptation.recommend import recommend
from headstart.backbones import Backbone, check_backbone, create_backbone
from headstart.backbones.catalog import DEFAULT_BACKBONES
from headstart.config import AdaptConfig, RunConfig
from headstart.data.dataset import data_fingerprint
from headstart.data.loading import (
    Samples,
    Splits,
    check_samples,
    load_source,
    load_target,
    prepare_data,
)
from headstart.device import resolve_device
from headstart.errors import ConfigError, DataError
from headstart.features import compute_embeddings
from headstart.runfolder import Predictor, can_resume, check_out_folder, write_json
from headstart.storage import locked
from headstart.strategies.adaptation import METHODS, without_labels
from headstart.strategies.alignment import ALIGNMENTS, read_source_side, swap_batchnorm
from headstart.strategies.base import build_strategy
from headstart.workflows.fit import fit
from headstart.workflows.sweep import REUSED, Sweep, SweepCell

SOURCE_ONLY = "source-only"
ALIGNMENT_NAMES = [a.name for a in ALIGNMENTS]
CRITERIA = {
    "source-val": "highest source validation accuracy",
    "target-entropy": "lowest mean prediction entropy on the target",
    "target-infomax": "highest entropy of the mean target prediction minus the mean entropy",
    "dev": "lowest deep embedded validation risk (importance-weighted source loss)",
    "snd": "highest soft neighbourhood density of the target predictions",
}
#: per criterion: the row's key and whether higher is better
_CRITERION_KEYS = {
    "source-val": ("source_val_accuracy", True),
    "target-entropy": ("target_entropy", False),
    "target-infomax": ("target_infomax", True),
    "dev": ("dev_risk", False),
    "snd": ("target_snd", True),
}


@dataclass
class AdaptResult:
    summary: dict[str, Any]
    runs: list[dict[str, Any]]


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
    target = check_samples(target, base.data, progress, min_per_class=0, labelled=False)[0]
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


def confident_methods() -> list[str]:
    """The methods that train on their own confident target predictions."""
    return [m for m in METHODS.names() if getattr(METHODS.get(m), "optimises_confidence", False)]


def cheapest_first(methods: list[str]) -> list[str]:
    """The closed-form alignments (seconds on cached features) before the methods that
    train, each group in the order given."""
    cheap = [m for m in methods if m in ALIGNMENT_NAMES]
    return cheap + [m for m in methods if m not in ALIGNMENT_NAMES]


def on_source_only(cfg: RunConfig, strategy: str, source_only: Path) -> RunConfig:
    """The run of ``strategy`` on the source-only run folder of the same seed (an ``ft-``
    alignment: lp-ft, then the alignment; the fine-tuning is the source-only run's)."""
    return dataclasses.replace(
        cfg,
        strategy=dataclasses.replace(cfg.strategy, name=strategy),
        backbone=dataclasses.replace(cfg.backbone, name=str(source_only)),
    )


def label_free_scores(
    model: Backbone,
    folder: Path,
    source: Splits,
    target: Samples,
    batch: int,
    device: str,
) -> dict[str, Any]:
    """What can be measured of a finished run without target labels: its source validation
    accuracy, the entropy, diversity and soft neighbourhood density of its target
    predictions, the deep embedded validation risk and the proxy A-distance. A
    feature-level run is scored on the source with its source side (its head before the
    target's statistics were folded in; for AdaBN, the source's BatchNorm statistics)."""
    side = read_source_side(folder)
    target_x = _features(model, without_labels(target), batch, device)
    target_p = _head_probs(model, target_x)  # one pass over the target, not two
    val = source.val if len(source.val) else source.train
    replaced = side.apply_batchnorm(model) if side is not None and side.batchnorm else None
    try:
        val_x = _features(model, val, batch, device)
        train_x = _features(model, source.train, batch, device)
    finally:
        if replaced is not None:
            swap_batchnorm(model, replaced)
    val_p = side.probs(val_x) if side is not None else _head_probs(model, val_x).numpy()
    y_val = np.asarray(val.labels)
    dev = deep_embedded_validation(
        train_x, target_x, val_x, per_example_cross_entropy(val_p, y_val), seed=0
    )
    return {
        "source_val_accuracy": float(np.mean(val_p.argmax(1) == y_val)),
        "target_entropy": float(entropy(target_p).mean()),
        "target_diversity": float(entropy(target_p.mean(0, keepdim=True))[0]),
        "target_snd": soft_neighborhood_density(target_p.numpy()),
        "dev_risk": dev.risk,
        "a_distance": proxy_a_distance(val_x, target_x),
    }


def methods_for(modality: str, methods: list[str], console: Console) -> list[str]:
    """The registered methods asked for (``all``: every one) that apply to ``modality``:
    for text, ``all`` leaves out the image-only ones (with a note) and naming one is an
    error, before any training. An unknown name is an error with a suggestion."""
    asked_all = methods == ["all"] or set(methods) == set(METHODS.names())
    if asked_all:
        methods = METHODS.names()
    image_only = [m for m in methods if getattr(METHODS.get(m), "image_only", False)]
    if modality == "image" or not image_only:
        return methods
    if asked_all:
        # on images the ft- alignments reuse the source-only run; a text run folder cannot
        # be trained from, so on text they would train lp-ft a second time: named only
        again = [m for m in methods if getattr(METHODS.get(m), "on_source_only", None)]
        again = [m for m in again if m not in image_only]
        console.print(
            f"[bold]methods[/] {', '.join(image_only)} left out: images only (image "
            "augmentations or BatchNorm layers); "
            f"{', '.join(again)} left out on text (each would fine-tune again: name them "
            "to run them)"
        )
        return [m for m in methods if m not in image_only and m not in again]
    text_ones = [m for m in METHODS.names() if not getattr(METHODS.get(m), "image_only", False)]
    raise ConfigError(
        "adaptation methods that apply to text",
        f"{', '.join(image_only)} (images only: image augmentations or BatchNorm layers)",
        f"use {', '.join(text_ones)} for text",
    )


#: settings recorded with an adaptation that may change between runs of it: they do not
#: change what is trained
MAY_CHANGE = (
    "train.device",
    "train.num_workers",
    "backbone.allow_download",
    "eval.batch_size",
    "train.tracker",
)
SETTINGS_FILE = "adapt.yaml"
RESULTS_FILE = "adapt.json"


#: how source-only fine-tunes unless the base config names a strategy
SOURCE_STRATEGY = "lp-ft"


def source_strategy(base: RunConfig) -> str:
    """The fit strategy of the source-only runs: the base config's (``auto``: lp-ft). A
    domain adaptation method there is an error: it would need the target, which
    source-only never sees."""
    name = base.strategy.name
    if name == "auto":
        return SOURCE_STRATEGY
    if name.partition(":")[0] in METHODS:
        raise ConfigError(
            "a fit strategy for the source-only runs (lp-ft, finetune, l2-sp, ewc, lwf, lora, ...)",
            f"--strategy {name}, a domain adaptation method",
            f"name it as a method instead: --method {name}",
        )
    build_strategy(base.strategy)  # an unknown name or a bad argument fails here
    return name


def run_config(base: RunConfig, method: str, seed: int) -> RunConfig:
    """The run of ``method`` (or source-only) with ``seed``: the same training budget for
    every method (``patience = epochs``: no early stopping)."""
    return dataclasses.replace(
        base,
        strategy=dataclasses.replace(
            base.strategy, name=source_strategy(base) if method == SOURCE_ONLY else method
        ),
        train=dataclasses.replace(base.train, seed=seed, patience=base.train.epochs),
    )


def _settings(base: RunConfig) -> dict[str, Any]:
    """What every run of an adaptation shares: its run config but the strategy and seed
    (a cell's), and nothing of the adaptation's own options (the methods and seeds name
    the cells; the target is bound by its content, not its path). The source-only
    strategy is kept when it is not the default lp-ft."""
    doc = run_config(base, SOURCE_ONLY, base.train.seed).to_dict()
    if doc["strategy"]["name"] == SOURCE_STRATEGY:
        del doc["strategy"]["name"]
    del doc["train"]["seed"]
    return doc


def without_realignment(
    methods: list[str], asked: list[str], base: RunConfig, console: Console
) -> list[str]:
    """``methods`` less the ``ft-`` alignments when source-only is parameter-efficient (its
    run folder keeps only the trained tensors, so it cannot be trained from): left out
    with a note when the user asked for ``all``, an error when named."""
    if not build_strategy(run_config(base, SOURCE_ONLY, 0).strategy).stores_trained_only:
        return methods
    again = [m for m in methods if getattr(METHODS.get(m), "on_source_only", None)]
    if not again:
        return methods
    name = source_strategy(base)
    if asked != ["all"]:
        raise ConfigError(
            "alignments that can build on the source-only model",
            f"{', '.join(again)} with --strategy {name}, whose run folder keeps only its "
            "trained tensors",
            f"use {', '.join(m.removeprefix('ft-') for m in again)} (on the pretrained "
            "features), or a source strategy that stores the whole model (lp-ft, ewc, ...)",
        )
    console.print(
        f"[bold]methods[/] {', '.join(again)} left out: source-only ({name}) keeps only "
        "its trained tensors, so it cannot be aligned again"
    )
    return [m for m in methods if m not in again]


@locked("adaptation")
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
    check_out_folder(out)
    check_backbone(base.backbone)  # a mistyped name must not cost a preflight
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
    methods = methods_for(modality, spec.methods, console)
    if modality == "image":
        methods = without_realignment(methods, spec.methods, base, console)
    spec = dataclasses.replace(spec, methods=methods)
    if base.backbone.name == "auto":
        base = dataclasses.replace(
            base, backbone=dataclasses.replace(base.backbone, name=DEFAULT_BACKBONES[modality])
        )
    runs_base = dataclasses.replace(base, data=data_cfg)
    quiet = Console(quiet=True)
    data = Splits(source.train, source.val, evaluation)
    trained: dict[str, Backbone] = {}  # a run's model, from its training to its scores
    resumed: set[str] = set()

    def train(name: str, method: str, seed: int, run_dir: Path) -> dict[str, Any]:
        # a run stopped mid-training resumes from its last epoch checkpoint; one stopped
        # before its first has nothing to lose and starts over
        resume = can_resume(run_dir)
        cfg = run_config(runs_base, method, seed)
        after = getattr(METHODS.get(method), "on_source_only", None) if method in METHODS else None
        if after and modality == "image":  # align the source-only model: no 2nd training
            # (a text run folder cannot be trained from: text runs lp-ft again, same seed)
            cfg = on_source_only(cfg, after, out / str(seed) / SOURCE_ONLY)
        result = fit(
            cfg,
            run_dir,
            resume=resume,
            overwrite=not resume,
            progress=progress,
            console=quiet,
            data=data,
            target=None if method == SOURCE_ONLY else target,
        )
        trained[name] = result.backbone
        if resume:
            resumed.add(name)
        return result.metrics

    cells_of = {
        f"{seed}/{method}": (method, seed)
        for seed in range(base.train.seed, base.train.seed + spec.seeds)
        for method in (SOURCE_ONLY, *cheapest_first(spec.methods))
    }
    sweep = Sweep.bind(
        out,
        [SweepCell(name, partial(train, name, m, s)) for name, (m, s) in cells_of.items()],
        _settings(runs_base),
        data={
            "source": data_fingerprint(source.train) + data_fingerprint(source.val),
            "target": data_fingerprint(without_labels(target)),
            "target-eval": data_fingerprint(evaluation) if evaluation is not None else None,
        },
        overwrite=overwrite,
        settings_file=SETTINGS_FILE,
        result_file="metrics.json",
        may_change=MAY_CHANGE,
        owned=(RESULTS_FILE,),
        kind="adaptation",
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
    if source_strategy(base) != SOURCE_STRATEGY:
        console.print(f"[bold]source-only[/] fine-tunes with {source_strategy(base)}")
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for outcome in sweep.run():
        method, seed = cells_of[outcome.name]
        metrics = outcome.result or {}
        if outcome.state == REUSED:
            bb = Predictor.load(outcome.folder, device).backbone
            state = "already finished"
        else:
            bb = trained.pop(outcome.name)
            state = "resumed and finished" if outcome.name in resumed else "finished"
        bb.eval()
        row = {
            "seed": seed,
            "method": method,
            "seconds": float(metrics.get("seconds", time.perf_counter() - t0)),
            **label_free_scores(bb, outcome.folder, source, target, bs, device),
        }
        if evaluation is not None:
            row["target_accuracy"] = metrics["test"]["accuracy"]
            row["target_macro_f1"] = metrics["test"]["macro_f1"]
        runs.append(row)
        shown = f"target accuracy {row['target_accuracy']:.3f}, " if evaluation is not None else ""
        console.print(
            f"  seed {seed} {method}: {shown}{state} ({row['seconds']:.0f} s)", highlight=False
        )
        t0 = time.perf_counter()
    summary = summarise(runs, gap_before, evaluation is not None)
    summary["seconds"] = time.perf_counter() - start
    summary["source"], summary["target"] = base.data.source, spec.target
    summary["source_strategy"] = source_strategy(base)
    summary["target_eval"] = spec.target_eval or (spec.target if evaluation is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULTS_FILE, {"summary": summary, "runs": runs})
    return AdaptResult(summary, runs)


def summarise(runs: list[dict[str, Any]], gap_before: float, labelled: bool) -> dict[str, Any]:
    """Mean and std per method; which method each criterion picks per seed, and what the
    picks score against the oracle (the best target accuracy of the seed)."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    keys = [
        "source_val_accuracy",
        "target_entropy",
        "target_diversity",
        "target_snd",
        "dev_risk",
        "a_distance",
    ]
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
            key, higher = _CRITERION_KEYS.get(criterion, ("target_accuracy", True))
            best = max(mine, key=lambda r: r[key] if higher else -r[key])
            chosen.append(best)
        picks[criterion] = {
            "methods": [r["method"] for r in chosen],
            "target_accuracy": float(np.mean([r["target_accuracy"] for r in chosen]))
            if labelled
            else None,
        }
    rec = recommend(runs, confident=confident_methods())
    if labelled:
        chosen = [r for r in runs if r["method"] == rec["method"]]
        base = [r for r in runs if r["method"] == SOURCE_ONLY]
        rec["target_accuracy"] = float(np.mean([r["target_accuracy"] for r in chosen]))
        rec["source_only_accuracy"] = float(np.mean([r["target_accuracy"] for r in base]))
    return {
        "methods": table,
        "a_distance_before": gap_before,
        "picks": picks,
        "criteria": CRITERIA,
        "recommendation": rec,
    }


def print_adaptation(summary: dict[str, Any], console: Console) -> None:
    labelled = "target_accuracy" in next(iter(summary["methods"].values()))
    table = Table(title="Domain adaptation (mean ± std over seeds)")
    cols = ["method"]
    if labelled:
        cols += ["target accuracy", "target macro-F1"]
    cols += ["A-distance", "source val acc", "target infomax", "SND", "DEV risk"]
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right")
    for m, v in summary["methods"].items():

        def pm(k: str, v: dict[str, Any] = v) -> str:
            return f"{v[k]['mean']:.3f} ± {v[k]['std']:.3f}"

        cells = [m]
        if labelled:
            cells += [pm("target_accuracy"), pm("target_macro_f1")]
        cells += [pm("a_distance"), pm("source_val_accuracy"), pm("target_infomax")]
        cells += [pm(k) if k in v else "-" for k in ("target_snd", "dev_risk")]
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
    rec = summary.get("recommendation")
    if rec:
        console.print(f"[bold]{rec['sentence']}[/]", highlight=False)
