"""One run, end to end: data -> preflight -> split -> backbone -> strategy -> trainer ->
evaluation -> run folder. The CLI and the estimator both call :func:`fit`."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from headstart.backbones import Backbone, create_backbone
from headstart.backbones.multilayer import ProbeFeaturesBackbone
from headstart.backbones.vision import TimmBackbone
from headstart.backbones.zoo import sha256_state
from headstart.config import DataConfig, RunConfig
from headstart.data import (
    BUNDLED_TEXT_DATASETS,
    ImageSamples,
    PreflightReport,
    TextSamples,
    data_fingerprint,
    native_image_size,
    per_class_subsample,
    preflight,
    preflight_text,
    resolve_images,
    resolve_texts,
    scan_image_folder,
    stratified_split,
    up_to_per_class,
)
from headstart.errors import BackboneError, ConfigError, DataError, RunFolderError
from headstart.evaluation import (
    calibration_summary,
    classification_metrics,
    embedding_map,
    fit_temperature,
    print_metrics,
    read_history,
    write_fit_report,
)
from headstart.features import (
    EmbeddingCache,
    cache_key,
    calibrate_batchnorm,
    compute_embeddings,
)
from headstart.fewshot.contrastive import ContrastiveConfig
from headstart.heads import HEADS, fit_sklearn_head, prototype_head
from headstart.heads.probe import ProbeFit, fit_probe
from headstart.heads.prototypes import leave_one_out_predictions
from headstart.runfolder import (
    TEXT_SUFFIXES,
    clear_outputs,
    save_config,
    save_model,
    write_json,
)
from headstart.strategies import ParamGroup, Strategy, StrategyContext, apply_freeze, build_strategy
from headstart.strategies.auto import Choice, choose, is_auto
from headstart.strategies.base import AUTO_HEAD
from headstart.training import (
    HistoryWriter,
    ProgressBar,
    Trainer,
    count_params,
    resolve_device,
)
from headstart.training.callbacks import json_line
from headstart.training.checkpoint import write_safetensors
from headstart.training.procedures import contrastive_finetune
from headstart.training.trainer import seed_everything

#: what a data source yields; both kinds share classes, labels, subset() and len()
Samples = ImageSamples | TextSamples


@dataclass
class Splits:
    train: Samples
    val: Samples
    test: Samples | None
    #: how the labelled data was used (the small-data validation policy), for metrics.json
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.train.classes


@dataclass
class FitResult:
    run_dir: Path
    backbone: Backbone
    classes: list[str]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def is_text_source(spec: str) -> bool:
    """A bundled text dataset (``name`` or ``name:split``) or a table file."""
    return spec.partition(":")[0] in BUNDLED_TEXT_DATASETS or (
        Path(spec).suffix.lower() in TEXT_SUFFIXES
    )


def load_source(spec: str, cfg: DataConfig, classes: list[str] | None = None) -> Samples:
    """Images (a folder or bundled name) or texts (a table file or bundled name)."""
    if is_text_source(spec):
        return resolve_texts(spec, cfg.text_cols, cfg.label_col, classes=classes)
    path = Path(spec).expanduser()
    if classes is not None and path.is_dir():
        return scan_image_folder(path, classes=classes)
    return resolve_images(spec)


def check_samples(
    samples: Samples, cfg: DataConfig, progress: bool, min_per_class: int = 2
) -> tuple[Samples, PreflightReport]:
    """The preflight of the samples' modality (every bad file or text listed, or skipped)."""
    if isinstance(samples, TextSamples):
        return preflight_text(samples, cfg.skip_bad, min_per_class=min_per_class)
    return preflight(samples, cfg.skip_bad, cfg.max_pixels, min_per_class, progress)


def _eval_source(spec: str, classes: list[str], cfg: DataConfig, progress: bool) -> Samples:
    samples = load_source(spec, cfg, classes)
    if samples.classes != classes:
        raise DataError(
            f"the training classes {classes}",
            f"{samples.classes} in {spec}",
            "evaluate on data with the same class names",
        )
    return check_samples(samples, cfg, progress, min_per_class=0)[0]


def prepare_data(
    cfg: DataConfig,
    console: Console,
    progress: bool = True,
    source: Samples | None = None,
    few_shot: bool = False,
    small_data: bool = True,
) -> Splits:
    """Load, check and split the data as the config says.

    ``few_shot`` (a few-shot strategy): one example per class is enough, and when a class
    has fewer than ``FEW_SHOT_HOLDOUT`` examples no labelled example is held out of
    training (give --val / --test data, or read the leave-one-out estimate)."""
    if source is None:
        source = load_source(cfg.source, cfg)
    source, report = check_samples(source, cfg, progress, min_per_class=1 if few_shot else 2)
    console.print(f"[bold]data[/] {source.name}: {report.summary()}")
    for path, reason in report.bad:
        console.print(f"  [yellow]skipped[/] {path}: {reason}", highlight=False)
    val_f = 0.0 if cfg.val else cfg.val_fraction
    test_f = 0.0 if cfg.test else cfg.test_fraction
    smallest = int(np.bincount(np.asarray(source.labels)).min()) if len(source) else 0
    if few_shot and smallest < FEW_SHOT_HOLDOUT and (val_f or test_f):
        val_f = test_f = 0.0
        console.print(
            f"[bold]few-shot[/]: a class has only {smallest} example(s), so every labelled "
            "example trains and none is held out; pass --val / --test data for held-out "
            "figures"
        )
    policy: dict[str, Any] = {"validation": "given (--val)" if cfg.val else "held out"}
    if small_data and not cfg.val and val_f:
        per_class = min(cfg.per_class or smallest, smallest)
        expected = (
            per_class * val_f / max(1.0 - val_f - test_f, 1e-9)
            if cfg.per_class
            else (smallest * val_f)
        )
        if expected < MIN_VAL_PER_CLASS:
            val_f = 0.0
            policy["validation"] = (
                f"none held out: it would have had about {expected:.1f} examples per class "
                f"(fewer than {MIN_VAL_PER_CLASS}); every labelled example trains, training "
                "runs its fixed number of epochs, the probe's regularisation is "
                "cross-validated and calibration uses out-of-fold predictions"
            )
            console.print(
                f"[bold]small data[/]: a validation split would hold about {expected:.1f} "
                f"examples per class (fewer than {MIN_VAL_PER_CLASS}), too few to decide on; "
                "none is held out: every labelled example trains, no early stopping, and "
                "decisions use cross-validation on the training examples"
            )
    tr, va, te = stratified_split(source.labels, val_f, test_f, seed=cfg.split_seed)
    train = source.subset(tr)
    val = _eval_source(cfg.val, source.classes, cfg, progress) if cfg.val else source.subset(va)
    test = (
        _eval_source(cfg.test, source.classes, cfg, progress)
        if cfg.test
        else source.subset(te)
        if len(te)
        else None
    )
    if cfg.per_class:
        # a label budget: per_class training images, and validation in proportion
        label_seed = cfg.split_seed if cfg.label_seed is None else cfg.label_seed
        idx = per_class_subsample(
            train.labels, cfg.per_class, seed=label_seed, classes=train.classes
        )  # counts are of the training part, after validation and test are held out
        train = train.subset(idx)
        if not cfg.val and len(val):
            n_val = max(1, round(cfg.per_class * val_f / (1.0 - val_f - test_f)))
            val = val.subset(up_to_per_class(val.labels, n_val, label_seed))
    if cfg.max_test and test is not None and len(test) > cfg.max_test:
        _, _, keep = stratified_split(
            test.labels, 0.0, cfg.max_test / len(test), seed=cfg.split_seed
        )
        test = test.subset(keep)
    console.print(
        f"[bold]split[/] train {len(train)}, validation {len(val)}, "
        f"test {len(test) if test is not None else 0}, classes {len(source.classes)}"
    )
    return Splits(train, val, test, policy)


def _log_truncation(console: Console, dataset: Any, backbone: Backbone) -> None:
    n = getattr(dataset, "n_truncated", 0)
    if n:
        console.print(
            f"[yellow]truncated[/] {n} of {len(dataset)} texts to "
            f"{backbone.spec.input_size} tokens (--max-length to change)"
        )


def _log_params(console: Console, model: nn.Module, phase: str) -> dict[str, int]:
    trainable, total = count_params(model)
    console.print(
        f"[bold]{phase}[/]: trainable params {trainable:,} of {total:,} "
        f"({100 * trainable / max(total, 1):.2f}%)"
    )
    return {"trainable": trainable, "total": total}


class _Embedder:
    """Embeddings of the frozen backbone for each split, through the content cache."""

    def __init__(
        self,
        backbone: Backbone,
        cfg: RunConfig,
        cache: EmbeddingCache,
        device: str,
        progress: bool,
        console: Console,
    ) -> None:
        self.backbone, self.cfg, self.cache = backbone, cfg, cache
        self.device, self.progress, self.console = device, progress, console

    def __call__(self, samples: Samples, what: str) -> torch.Tensor:
        """The evaluation embeddings: the mean of the backbone's views."""
        if len(self.backbone.views) > 1:
            return torch.stack(self.views(samples, what)).mean(0)
        key = cache_key(self.backbone, data_fingerprint(samples))
        return self.cache.get_or_compute(key, lambda: self._compute(samples, what))

    def views(self, samples: Samples, what: str) -> list[torch.Tensor]:
        """The embeddings of each of the backbone's views (one: the plain embeddings)."""
        if len(self.backbone.views) == 1:
            return [self(samples, what)]
        fingerprint = data_fingerprint(samples)

        def compute(view: str) -> Callable[[], torch.Tensor]:
            return lambda: self._embed(
                self.backbone.make_dataset(samples), f"{what} ({view})", view
            )

        return [
            self.cache.get_or_compute(
                cache_key(self.backbone, fingerprint, layer=f"view={v}"), compute(v)
            )
            for v in self.backbone.views
        ]

    def _compute(self, samples: Samples, what: str) -> torch.Tensor:
        dataset = self.backbone.make_dataset(samples)
        _log_truncation(self.console, dataset, self.backbone)
        return self._embed(dataset, what)

    def uncached(self, samples: Samples, what: str) -> torch.Tensor:
        """Embeddings of the backbone as it is now (trained: its weights are not the ones
        the cache key names), views averaged."""
        ds = self.backbone.make_dataset(samples)
        if len(self.backbone.views) == 1:
            return self._embed(ds, what)
        return torch.stack([self._embed(ds, what, v) for v in self.backbone.views]).mean(0)

    def _embed(self, dataset: Any, what: str, view: str | None = None) -> torch.Tensor:
        return compute_embeddings(
            self.backbone,
            dataset,
            self.cfg.eval.batch_size,
            self.device,
            self.progress,
            f"embedding {what}",
            self.cfg.train.num_workers,
            view,
        )


def _fit_head(
    cfg: RunConfig,
    backbone: Backbone,
    emb: _Embedder,
    data: Splits,
    console: Console,
    head_name: str,
    fitted: ProbeFit | None = None,
) -> tuple[list[dict[str, Any]], ProbeFit | None]:
    """Fit the head on embeddings of the frozen backbone and put it into the backbone. The
    ``linear`` head is the probe of :func:`fit_probe` (``fitted``: one already fitted on
    these embeddings by ``--strategy auto``); it is returned."""
    y_tr = np.asarray(data.train.labels)
    k = len(data.classes)
    if head_name == PROTOTYPE_HEAD:
        x_tr = emb(data.train, "train")
        w, b = prototype_head(x_tr.numpy(), y_tr, k)
        backbone.load_head(w, b)
        console.print(f"[bold]head[/] prototypes: class means of {len(x_tr)} embeddings")
        return [], None
    if HEADS.get(head_name) is not None:
        x_tr = emb(data.train, "train")
        w, b = fit_sklearn_head(head_name, x_tr.numpy(), y_tr, k, cfg.strategy.head_c)
        backbone.load_head(w, b)
        console.print(f"[bold]head[/] {head_name} fitted on {len(x_tr)} cached embeddings")
        return [], None
    if fitted is None:
        fitted = fit_view_probe(backbone, emb, data, cfg.train.seed, console)
    backbone.load_head(fitted.weight, fitted.bias)
    console.print(
        f"[bold]head[/] logistic regression fitted to convergence on {len(y_tr)} embeddings"
        + (f" x {fitted.views} views" if fitted.views > 1 else "")
        + f", C={fitted.c:g} ({fitted.cv['policy']})"
    )
    return [], fitted


def fit_view_probe(
    backbone: Backbone, emb: _Embedder, data: Splits, seed: int, console: Console
) -> ProbeFit:
    """The probe on the training embeddings of each of the backbone's views. Flipped views
    are kept only where cross-validation does not speak against them: when the classes
    differ by left and right (arrows, some letters), a mirrored view is another class, and
    the probe without it is better by more than one standard error; then the backbone
    drops the view (and records that in its spec)."""
    y = np.asarray(data.train.labels)
    k = len(data.classes)
    views = [v.numpy() for v in emb.views(data.train, "train")]
    probe = fit_probe(views, y, k, seed=seed)
    if len(views) == 1 or probe.oof_logits is None:
        return probe
    plain = fit_probe(views[:1], y, k, seed=seed)
    with_views, without = probe.cv["cv_accuracy_chosen"], plain.cv["cv_accuracy_chosen"]
    se = float(np.sqrt(max(without * (1 - without), 1e-12) / len(y)))
    if isinstance(backbone, ProbeFeaturesBackbone) and without > with_views + se:
        backbone.set_tta("none")
        console.print(
            f"[bold]views[/] mirrored views dropped: cross-validated accuracy {without:.3f} "
            f"without them, {with_views:.3f} with"
        )
        return plain
    return probe


def _probe_row(probe: ProbeFit) -> dict[str, Any]:
    """The probe's line in history.jsonl: what it was fitted with (it has no epochs)."""
    return {
        "c": probe.c,
        "views": probe.views,
        "cv_accuracy": probe.cv.get("cv_accuracy_chosen"),
        "policy": probe.cv["policy"],
    }


def _choose_strategy(
    cfg: RunConfig,
    backbone: Backbone,
    emb: _Embedder,
    data: Splits,
    modality: str,
    console: Console,
) -> tuple[RunConfig, Strategy, Backbone, Choice, ProbeFit | None]:
    """``--strategy auto``: the probe's cross-validated accuracy and the class means'
    leave-one-out accuracy on the training examples decide (see strategies.auto)."""
    y = np.asarray(data.train.labels)
    k = len(data.classes)
    counts = np.bincount(y, minlength=k)
    per_class = int(counts.min())
    probe: ProbeFit | None = fit_view_probe(backbone, emb, data, cfg.train.seed, console)
    assert probe is not None
    probe_cv = probe.cv.get("cv_accuracy_chosen")
    proto_loo = None
    if per_class >= 2:
        pred = leave_one_out_predictions(emb(data.train, "train").numpy(), y)
        proto_loo = float(np.mean(pred == y))
    choice = choose(per_class, modality, backbone.trainable_body, probe_cv, proto_loo)
    asked_head = cfg.strategy.head
    if choice.strategy == "prototypes" and asked_head not in (AUTO_HEAD, PROTOTYPE_HEAD, "linear"):
        choice.strategy = "linear-probe"  # the head asked for is kept
        choice.reason += f"; linear-probe instead, to fit the --head {asked_head} asked for"
    console.print(f"[bold]auto[/] chose {choice.strategy}: {choice.reason}")
    head = asked_head if asked_head != "linear" or choice.strategy != "prototypes" else AUTO_HEAD
    cfg = with_resolved_head(
        dataclasses.replace(
            cfg, strategy=dataclasses.replace(cfg.strategy, name=choice.strategy, head=head)
        )
    )
    strategy = build_strategy(cfg.strategy)
    if strategy.trains_body and isinstance(backbone, ProbeFeaturesBackbone):
        backbone = backbone.inner  # fine-tuning trains the plain backbone
        probe = None
    if cfg.strategy.head != "linear":
        probe = None
    return cfg, strategy, backbone, choice, probe


#: images whose shorter side is below this many pixels are small: the input size is
#: taken from them instead of the backbone's (28 px digits need no 224 px input)
SMALL_IMAGE = 112
#: the smallest input size chosen for small images
MIN_INPUT_SIZE = 64


def _auto_image_size(cfg: RunConfig, data: Splits, modality: str, console: Console) -> RunConfig:
    """With no --image-size and small images: twice their size, in steps of 32 px, at least
    :data:`MIN_INPUT_SIZE` (8 px digits: 64 px matched 96 px and beat 224 px by 1-6 points
    with a probe on EfficientNet-Lite0, at a twelfth of the cost)."""
    if modality != "image" or cfg.data.image_size is not None:
        return cfg
    if Path(cfg.backbone.name).expanduser().is_dir():  # a run folder keeps its own size
        return cfg
    native = native_image_size(data.train)
    if native is None or native >= SMALL_IMAGE:
        return cfg
    size = max(MIN_INPUT_SIZE, 32 * math.ceil(2 * native / 32))
    console.print(
        f"[bold]image size[/] {size} px: the images are about {native} px "
        "(small images gain nothing from a 224 px input; --image-size to choose)"
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=size))


def _uses_probe_features(
    cfg: RunConfig, strategy: Strategy, backbone: Backbone, modality: str
) -> bool:
    """Several layers (and, for images, mirrored views) for a frozen, pretrained backbone."""
    asked = cfg.backbone.features
    if asked == "final" or not strategy.frozen_features or not strategy.uses_pretrained:
        return False
    if asked == "auto" and backbone.spec.weights_sha256 is None:
        return False
    try:
        return len(backbone.layer_modules()) >= 2
    except BackboneError:
        return False


def _tta(cfg: RunConfig, modality: str) -> str:
    if cfg.data.tta == "auto":
        return "hflip" if modality == "image" else "none"
    return cfg.data.tta


def fit(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
    data: Splits | None = None,
    cache: EmbeddingCache | None = None,
    target: Samples | None = None,
) -> FitResult:
    """Train and evaluate one run; write the run folder ``out``. ``target``: unlabelled
    target-domain samples for a domain adaptation strategy (their labels, if any, are
    removed before the strategy sees them)."""
    t_start = time.perf_counter()
    console = console or Console()
    out = Path(out)
    _check_out(out, resume, overwrite)
    # every check that needs no data first: a typo must not cost a preflight
    strategy = build_strategy(cfg.strategy)
    strategy.check_inputs(target)  # the clear error, before any data
    cfg = with_resolved_head(cfg)  # the config written says which head was fitted
    head_name = cfg.strategy.head
    HEADS.get(head_name)
    device = resolve_device(cfg.train.device)
    data = data or prepare_data(cfg.data, console, progress, few_shot=strategy.few_shot)
    k = len(data.classes)
    modality = "text" if isinstance(data.train, TextSamples) else "image"
    if cfg.backbone.name == "auto":
        cfg = dataclasses.replace(
            cfg, backbone=dataclasses.replace(cfg.backbone, name=DEFAULT_BACKBONES[modality])
        )
    cfg = _auto_image_size(cfg, data, modality, console)
    seed_everything(cfg.train)
    bcfg = dataclasses.replace(
        cfg.backbone, pretrained=cfg.backbone.pretrained and strategy.uses_pretrained
    )
    backbone = create_backbone(bcfg, k, cfg.data.image_size, cfg.data.max_length)
    if _uses_probe_features(cfg, strategy, backbone, modality):
        backbone = ProbeFeaturesBackbone(backbone, k, tta=_tta(cfg, modality))
    cache = cache or EmbeddingCache()
    hits0, misses0 = cache.hits, cache.misses
    emb = _Embedder(backbone, cfg, cache, device, progress, console)
    probe: ProbeFit | None = None
    choice = None
    if is_auto(strategy):
        cfg, strategy, backbone, choice, probe = _choose_strategy(
            cfg, backbone, emb, data, modality, console
        )
        emb = _Embedder(backbone, cfg, cache, device, progress, console)
        head_name = cfg.strategy.head
    spec = backbone.spec
    _check_fit(backbone, modality, strategy)
    console.print(f"[bold]backbone[/] {spec.name} ({spec.arch}), weights: {spec.weights}")
    if isinstance(backbone, ProbeFeaturesBackbone):
        console.print(
            f"[bold]features[/] pooled after {', '.join(backbone.layers)} (unit-scaled, "
            f"concatenated, {spec.feature_dim} wide); views averaged: "
            f"{', '.join(backbone.views)}"
        )
    save_config(out, cfg, spec, data.classes)
    backbone.save_assets(out)
    # resuming needs a training checkpoint; without one (e.g. a crash during the probe)
    # the run starts over, which costs little since embeddings are cached
    resume = resume and (out / "checkpoint" / "last.safetensors").is_file()
    if not resume:
        (out / "history.jsonl").write_text("")
    history: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    if choice is not None:
        params["auto"] = choice.to_dict()

    source_before = _source_features(backbone, strategy, emb, data)
    t_train = time.perf_counter()
    run = RunState(
        cfg, strategy, backbone, data, emb, out, resume, progress, console, params, target
    )
    for n, phase in enumerate(strategy.phases):
        if resume and phase == "probe" and "train" in strategy.phases[n:]:
            console.print("[bold]resume[/]: the probe finished before the checkpoint; skipping it")
            continue
        PHASE_RUNNERS[phase](run, probe)
        probe = run.probe
    history += run.history
    train_seconds = time.perf_counter() - t_train

    oof = probe.oof_logits if probe is not None and not strategy.loop_trains else None
    metrics, outputs = _evaluate(
        cfg, strategy, backbone, emb, data, device, console, progress, source_before, oof
    )
    metrics["policy"] = {
        **data.policy,
        "early_stopping": "on validation macro-F1"
        if len(data.val)
        else "off: no validation data, the last epoch is kept (a fixed budget)",
    }
    if head_name == PROTOTYPE_HEAD and strategy.frozen_features:
        metrics["leave_one_out"] = _leave_one_out(emb(data.train, "train"), data, console)
    metrics.update(
        strategy=strategy.describe(),
        backbone=spec.name,
        weights=spec.weights,
        params=params,
        seconds=time.perf_counter() - t_start,
        train_seconds=train_seconds,
        cache={"hits": cache.hits - hits0, "misses": cache.misses - misses0},
    )
    save_results(out, cfg, backbone, metrics, outputs, console)
    return FitResult(out, backbone, data.classes, metrics, history, metrics["seconds"])


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


DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm-l6"}
#: a few-shot strategy holds no labelled example out when a class has fewer than this
FEW_SHOT_HOLDOUT = 10
#: no validation split is held out when it would have fewer examples per class than this.
#: With k classes and fewer than 10 per class, the standard error of a validation
#: accuracy near 0.8 is above sqrt(0.16 / (10 k)) (0.04 for 10 classes, 0.09 for 2):
#: larger than the differences between epochs, heads or temperatures it would decide
#: (an early-stopped probe read "best validation macro-F1 1.0000" off 2 examples per class)
MIN_VAL_PER_CLASS = 10
PROTOTYPE_HEAD = "prototype"


def with_resolved_head(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its head named as fitted: ``auto`` (or a strategy's own head) resolved
    by the strategy; a conflicting head is a ConfigError."""
    head = build_strategy(cfg.strategy).head_name()
    if head == cfg.strategy.head:
        return cfg
    return dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, head=head))


def _leave_one_out(x: torch.Tensor, data: Splits, console: Console) -> dict[str, Any]:
    """Nearest-prototype accuracy of each training example against prototypes made without
    it: an honest estimate when nothing was held out. Examples alone in their class cannot
    be scored (without them the class has no prototype) and are counted apart."""
    y = np.asarray(data.train.labels)
    result: dict[str, Any] = {"n": 0, "unscored_singletons": len(y)}
    counts = np.bincount(y, minlength=len(data.classes))
    scored = np.flatnonzero(counts[y] >= 2)
    if len(scored):
        result = {"n": len(scored), "unscored_singletons": len(y) - len(scored)}
        result["accuracy"] = float(
            np.mean(leave_one_out_predictions(x.numpy(), y)[scored] == y[scored])
        )
        console.print(
            f"[bold]leave-one-out[/] nearest-prototype accuracy {result['accuracy']:.4f} on "
            f"{len(scored)} training examples"
        )
    else:
        console.print(
            "[bold]leave-one-out[/] not possible: every class has a single example (one-shot); "
            "pass --test data to measure accuracy"
        )
    return result


#: below this many validation examples the fitted temperature is flagged as unreliable
FEW_FOR_CALIBRATION = 50


def _shown_split(data: Splits) -> tuple[str, Samples]:
    """The split the report and the forgetting check use: test, else validation, else
    (with no held-out data at all) the training data, named as such."""
    if data.test is not None and len(data.test):
        return "test", data.test
    if len(data.val):
        return "validation", data.val
    return "train", data.train


def _source_features(
    backbone: Backbone, strategy: Strategy, emb: _Embedder, data: Splits
) -> torch.Tensor | None:
    """Embeddings of the shown split by the original pretrained backbone (cached), for the
    forgetting check; None when the backbone came without a source-task head."""
    if isinstance(backbone, ProbeFeaturesBackbone):  # the source head reads the final layer
        emb = _Embedder(backbone.inner, emb.cfg, emb.cache, emb.device, False, emb.console)
        backbone = backbone.inner
    if not isinstance(backbone, TimmBackbone) or _source_head(backbone) is None:
        return None
    if not strategy.uses_pretrained:
        return None
    name, samples = _shown_split(data)
    return emb(samples, name)


def _check_fit(backbone: Backbone, modality: str, strategy: Strategy) -> None:
    """The backbone can read this data and train the way the strategy asks."""
    if backbone.spec.modality != modality:
        raise ConfigError(
            f"a {modality} backbone for {modality} data",
            f"{backbone.spec.name}, a {backbone.spec.modality} backbone",
            f"pass --backbone {DEFAULT_BACKBONES[modality]} (or another {modality} backbone; "
            "`headstart backbones` lists them)",
        )
    strategy.check_backbone(backbone, modality)


def strategy_groups_probe(backbone: Backbone) -> list[ParamGroup]:
    """Every group frozen but the head: the layout of a linear probe."""
    groups = backbone.layer_groups()
    return [ParamGroup(g.name, g.params, i == len(groups) - 1) for i, g in enumerate(groups)]


@dataclass
class RunState:
    """What the phases of one run share: the settings, the model and the data, and what
    the phases leave for evaluation (the probe, history lines, parameters)."""

    cfg: RunConfig
    strategy: Strategy
    backbone: Backbone
    data: Splits
    emb: _Embedder
    out: Path
    resume: bool
    progress: bool
    console: Console
    params: dict[str, Any]
    target: Samples | None = None
    probe: ProbeFit | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _contrastive_phase(run: RunState, probe: ProbeFit | None) -> None:
    """SetFit's first phase: the body trained on sampled pairs of the training texts. The
    spec's weight digest then names the tuned weights, so cached embeddings of the
    pretrained body are never served for them."""
    cfg, backbone, console = run.cfg, run.backbone, run.console
    ccfg = ContrastiveConfig(seed=cfg.train.seed)
    dataset = backbone.make_dataset(run.data.train)
    _log_truncation(console, dataset, backbone)
    done = contrastive_finetune(backbone, dataset, ccfg, run.emb.device, run.progress, console)
    backbone.spec.weights_sha256 = sha256_state(backbone.state_dict())
    backbone.spec.weights += f" + contrastive pairs ({done['pairs']} pairs, seed {ccfg.seed})"
    console.print(
        f"[bold]contrastive[/] {done['pairs']} sampled pairs ({done['positive_pairs']} of one "
        f"class) in {done['steps']} steps: loss {done['first_loss']:.4f} -> "
        f"{done['last_loss']:.4f}"
    )
    run.params["contrastive"] = done
    save_config(run.out, cfg, backbone.spec, run.data.classes)  # names the tuned weights


def _probe_phase(run: RunState, probe: ProbeFit | None) -> None:
    """The head fitted on embeddings of the frozen backbone (``probe``: one already
    fitted by ``--strategy auto``)."""
    cfg, backbone, console, data = run.cfg, run.backbone, run.console, run.data
    if backbone.spec.weights_sha256 is None:  # random running statistics would skew it
        n_bn = calibrate_batchnorm(
            backbone,
            backbone.make_dataset(data.train),
            cfg.eval.batch_size,
            run.emb.device,
            run.progress,
        )
        if n_bn:
            console.print(f"[bold]BatchNorm[/] statistics of {n_bn} random layers set on train")
    apply_freeze(backbone, strategy_groups_probe(backbone))
    run.params["probe"] = _log_params(console, backbone, "linear probe")
    rows, run.probe = _fit_head(cfg, backbone, run.emb, data, console, cfg.strategy.head, probe)
    run.history += rows
    if run.probe is not None:
        run.params["probe"]["head"] = run.probe.summary()
        line = {"phase": "probe", "epoch": 0, **_probe_row(run.probe)}
        with (run.out / "history.jsonl").open("a") as f:
            f.write(json_line(line) + "\n")
        run.history.append(line)


def _refit_phase(run: RunState, probe: ProbeFit | None) -> None:
    """The prototypes taken again from the trained backbone's embeddings."""
    x = run.emb.uncached(run.data.train, "train")
    data = run.data
    w, b = prototype_head(x.numpy(), np.asarray(data.train.labels), len(data.classes))
    device = next(run.backbone.head().parameters()).device
    run.backbone.load_head(w.to(device), b.to(device))
    run.console.print("[bold]head[/] prototypes taken again from the fine-tuned embeddings")


def _train_phase(run: RunState, probe: ProbeFit | None) -> None:
    """The training loop with the strategy's parameter groups and hooks."""
    cfg, strategy, backbone, console, out = (
        run.cfg,
        run.strategy,
        run.backbone,
        run.console,
        run.out,
    )
    groups = strategy.param_groups(backbone)
    apply_freeze(backbone, groups)
    run.params["train"] = _log_params(console, backbone, f"{strategy.describe()}")
    if len(groups) > 1:
        console.print(
            "  layer groups: "
            + ", ".join(
                f"{g.name}{'' if g.trainable else ' (frozen)'} x{g.lr_scale:.3g}" for g in groups
            )
        )
    callbacks: list[Any] = [HistoryWriter(out / "history.jsonl", "train")]
    if run.progress:
        callbacks.append(ProgressBar(strategy.describe(), console))
    trainer = Trainer(cfg.train, callbacks, out / "checkpoint", cfg.eval.batch_size)
    train_ds = backbone.make_dataset(run.data.train, train=True, augment=cfg.data.augment)
    _log_truncation(console, train_ds, backbone)
    ctx = StrategyContext(
        backbone,
        train_ds,
        num_classes=len(run.data.classes),
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        augment=cfg.data.augment,
        seed=cfg.train.seed,
        device=run.emb.device,
        target=run.target,
    )
    state = trainer.fit(
        backbone,
        groups,
        train_ds,
        backbone.make_dataset(run.data.val),
        strategy,
        resume=run.resume,
        ctx=ctx,
    )
    run.params["best_epoch"] = state.best_epoch
    rows = [{"phase": "train", **h} for h in state.history]
    _rewrite_history(out / "history.jsonl", "train", rows)
    run.history += rows


#: what each phase a strategy lists does (strategies.base.PHASES)
PHASE_RUNNERS: dict[str, Callable[[RunState, ProbeFit | None], None]] = {
    "contrastive": _contrastive_phase,
    "probe": _probe_phase,
    "train": _train_phase,
    "refit": _refit_phase,
}


def _rewrite_history(path: Path, phase: str, rows: list[dict[str, Any]]) -> None:
    """Replace ``phase``'s lines by the checkpointed truth (a crash between writing an
    epoch's line and its checkpoint would otherwise leave that epoch in twice)."""
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            if json.loads(line).get("phase") != phase:
                kept.append(line)
        except json.JSONDecodeError:  # a line torn by a crash
            continue
    path.write_text("".join(f"{line}\n" for line in [*kept, *map(json_line, rows)]))


@dataclass
class EvalOutputs:
    """What evaluation computed on the split the report shows (test, else validation)."""

    split: str
    samples: Samples
    logits: torch.Tensor
    embeddings: torch.Tensor
    temperature: float
    source_agreement: np.ndarray | None = None  # per example, when the backbone has one


def _split_outputs(
    backbone: Backbone,
    strategy: Strategy,
    emb: _Embedder,
    samples: Samples,
    name: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and logits of a split: cached when the backbone is frozen, else computed
    from the trained backbone (one pass; the logits are the head applied to them)."""
    e = emb.uncached(samples, name) if strategy.loop_trains else emb(samples, name)
    head = backbone.head()
    device_of_head = next(head.parameters()).device
    with torch.no_grad():  # any head module (a linear layer, timm's NormLinear, ...)
        logits = head.eval()(e.to(device_of_head)).float().cpu()
    return e, logits


def _evaluate(
    cfg: RunConfig,
    strategy: Strategy,
    backbone: Backbone,
    emb: _Embedder,
    data: Splits,
    device: str,
    console: Console,
    progress: bool = False,
    source_before: torch.Tensor | None = None,
    oof_logits: np.ndarray | None = None,
) -> tuple[dict[str, Any], EvalOutputs]:
    """Metrics of validation and test, temperature scaling fitted on validation (ECE
    before and after on both), and the forgetting check on the source task."""
    result: dict[str, Any] = {"classes": data.classes}
    outputs: dict[str, tuple[Samples, torch.Tensor, torch.Tensor]] = {}
    shown, _ = _shown_split(data)
    splits = [("validation", data.val), ("test", data.test)]
    if shown == "train":  # no held-out data: figures of the training data, said so
        splits.append(("train", data.train))
    for name, samples in splits:
        if samples is None or len(samples) == 0:
            continue
        e, logits = _split_outputs(backbone, strategy, emb, samples, name)
        outputs[name] = (samples, e, logits)
        pred = logits.argmax(1).numpy()
        result[name] = classification_metrics(samples.labels, pred, data.classes)
    temperature, fitted_on, n_fit = 1.0, "none", 0
    if "validation" in outputs:
        temperature = fit_temperature(outputs["validation"][2], outputs["validation"][0].labels)
        fitted_on, n_fit = "validation", len(outputs["validation"][0])
    elif oof_logits is not None:  # no validation split: the probe's out-of-fold predictions
        temperature = fit_temperature(torch.as_tensor(oof_logits).float(), data.train.labels)
        fitted_on, n_fit = "out-of-fold predictions of the cross-validated probe", len(oof_logits)
    result["calibration"] = {"temperature": temperature, "fitted_on": fitted_on, "n": n_fit}
    for name, (samples, _, logits) in outputs.items():
        result["calibration"][name] = calibration_summary(logits, samples.labels, temperature)
    samples, e, logits = outputs[shown]
    agreement = None
    result["forgetting"] = {"applicable": False, "reason": _no_source_reason(backbone)}
    source_backbone = backbone.inner if isinstance(backbone, ProbeFeaturesBackbone) else backbone
    if source_before is not None and isinstance(source_backbone, TimmBackbone):
        # a probe's body is frozen: its final-layer features are the ones it started with
        after = source_before if source_backbone is not backbone else e
        agreement = _source_agreement(source_backbone, source_before, after)
        result["forgetting"] = {
            "applicable": True,
            "split": shown,
            "n": len(agreement),
            "top1_agreement": float(agreement.mean()),
            "source_classes": backbone.spec.num_source_classes,
            "what": "how often the backbone, with its original source head put back, "
            "predicts the same source class as the original pretrained model",
        }
    if "test" in result:
        print_metrics(result["test"], console, title=f"Test metrics ({strategy.describe()})")
    cal = result["calibration"][shown]
    if n_fit:
        console.print(
            f"[bold]calibration[/] temperature {temperature:.3f} (fitted on {n_fit} "
            f"{fitted_on}): {shown} ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}"
        )
    else:
        console.print(
            f"[bold]calibration[/] no validation data, temperature not fitted: {shown} ECE "
            f"{cal['ece_before']:.4f}"
        )
    if 0 < n_fit < FEW_FOR_CALIBRATION:
        console.print(
            f"  [yellow]note[/] a temperature fitted on fewer than {FEW_FOR_CALIBRATION} "
            "examples is noisy and can make calibration worse; give more validation data "
            "(--val DIR or --val-fraction) for calibrated probabilities you can trust"
        )
    if agreement is not None:
        console.print(
            f"[bold]forgetting[/] the source head still agrees with the original model on "
            f"{100 * agreement.mean():.1f}% of {shown} images"
        )
    return result, EvalOutputs(shown, samples, logits, e, temperature, agreement)


def _no_source_reason(backbone: Backbone) -> str:
    if not isinstance(backbone, TimmBackbone):
        return "the backbone has no source-task head (only ImageNet vision backbones do)"
    return "the backbone was not loaded with its source head (random or headless weights)"


def _source_head(backbone: TimmBackbone) -> tuple[torch.Tensor, torch.Tensor] | None:
    state = backbone.source_head_state
    if not state or "weight" not in state or "bias" not in state:
        return None
    return state["weight"].float().cpu(), state["bias"].float().cpu()


def _source_agreement(
    backbone: TimmBackbone, before: torch.Tensor, after: torch.Tensor
) -> np.ndarray:
    """Per example: does the source head on the trained backbone's features predict the
    same source class as on the original backbone's features?"""
    head = _source_head(backbone)
    assert head is not None  # the caller computed ``before`` with it
    w, b = head
    top_before = nn.functional.linear(before.float(), w, b).argmax(1)
    top_after = nn.functional.linear(after.float(), w, b).argmax(1)
    return (top_before == top_after).numpy()


def save_predictions(out: Path, ev: EvalOutputs) -> None:
    """The shown split's logits, labels, embeddings map input and source agreement, so a
    report can be drawn again without the model (safetensors, not pickle)."""
    tensors = {
        "logits": ev.logits.float().contiguous(),
        "labels": torch.as_tensor(np.asarray(ev.samples.labels), dtype=torch.long),
        "map": embedding_map(ev.embeddings.numpy()).astype(np.float32),
    }
    if ev.source_agreement is not None:
        tensors["source_agreement"] = torch.as_tensor(ev.source_agreement.astype(np.uint8))
    write_safetensors(
        {k: torch.as_tensor(v).contiguous() for k, v in tensors.items()},
        out / "predictions.safetensors",
        {"split": ev.split, "temperature": repr(ev.temperature)},
    )


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / "config.yaml").is_file():
            raise RunFolderError(
                "a run folder to resume",
                f"no config.yaml in {out}",
                "drop --resume to start a new run, or pass the folder of an earlier run",
            )
        return
    if (out / "config.yaml").is_file():
        if not overwrite:
            raise RunFolderError(
                "a new or empty --out folder",
                f"an earlier run in {out}",
                "pass --resume to continue it, --overwrite to replace it, or another --out",
            )
        clear_outputs(out)


def summary_row(result: FitResult) -> dict[str, Any]:
    test = result.metrics.get("test", {})
    return {
        "strategy": result.metrics["strategy"],
        "accuracy": test.get("accuracy", np.nan),
        "macro_f1": test.get("macro_f1", np.nan),
        "seconds": result.seconds,
    }
