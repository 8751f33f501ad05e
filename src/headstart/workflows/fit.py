"""``headstart fit``: one run, end to end: data -> preflight -> split -> backbone ->
strategy phases (probe, training loop, ...) -> evaluation -> run folder. The CLI and the
estimator both call :func:`fit`."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from headstart.backbones import Backbone, check_backbone, create_backbone
from headstart.backbones.catalog import DEFAULT_BACKBONES
from headstart.backbones.multilayer import ProbeFeaturesBackbone
from headstart.config import RunConfig
from headstart.data import (
    TextSamples,
    native_image_size,
)
from headstart.data.loading import (
    Samples,
    Splits,
    prepare_data,
)
from headstart.device import (
    main_process_first,
    process_rank,
    resolve_device,
    seed_everything,
    seeded,
)
from headstart.errors import BackboneError, ConfigError
from headstart.evaluation.report import read_history
from headstart.evaluation.run import (
    evaluate_run,
    leave_one_out,
    source_features,
)
from headstart.features import (
    EmbeddingCache,
)
from headstart.features.embedder import Embedder
from headstart.heads import HEADS
from headstart.heads.probe import ProbeFit
from headstart.heads.prototypes import leave_one_out_predictions
from headstart.paths import is_dir
from headstart.runfolder import (
    check_out,
    is_finished,
    load,
    remove_checkpoint,
    resumed_config,
    save_config,
    save_results,
)
from headstart.storage import atomic_write, folder_lock
from headstart.strategies import Strategy, build_strategy
from headstart.strategies.auto import Choice, choose, is_auto
from headstart.strategies.base import AUTO_HEAD, with_resolved_head
from headstart.training.callbacks import Callback
from headstart.training.phases import (
    PHASE_RUNNERS,
    PROTOTYPE_HEAD,
    RunState,
    fit_view_probe,
)
from headstart.training.tracking import check_tracker

#: what a data source yields; both kinds share classes, labels, subset() and len()


@dataclass
class FitResult:
    run_dir: Path
    backbone: Backbone
    classes: list[str]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


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
    if is_dir(cfg.backbone.name):  # a run folder keeps its own size
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


#: words of the vocabulary report named on the console (metrics.json keeps more)
SHOWN_WORDS = 8


def _vocabulary(
    cfg: RunConfig, backbone: Backbone, data: Splits, console: Console
) -> dict[str, Any] | None:
    """For text data: how the backbone's vocabulary covers the training texts (printed;
    kept in metrics.json), after adding ``--add-domain-tokens`` words to the tokenizer."""
    n_add = cfg.backbone.add_domain_tokens
    if not isinstance(data.train, TextSamples):
        if n_add:
            raise ConfigError(
                "text data for --add-domain-tokens",
                f"images ({data.train.name})",
                "drop --add-domain-tokens: it adds words to a text encoder's tokenizer",
            )
        return None
    texts = data.train.texts
    report = backbone.vocabulary_report(texts)
    added = backbone.add_domain_tokens(texts, n_add) if n_add else None  # HF encoders only
    if report is None:
        return None
    console.print(f"[bold]vocabulary[/] {vocabulary_line(report)}")
    if added is None:
        return report
    report["added_tokens"] = added
    if not added:
        console.print(
            "[bold]domain tokens[/] none added: no word of 4 or more letters seen twice is "
            "split into pieces"
        )
        return report
    after = backbone.vocabulary_report(texts, 0) or {}
    report["pieces_per_word_after"] = after.get("pieces_per_word")
    console.print(
        f"[bold]domain tokens[/] {len(added)} words added to the tokenizer, each embedding the "
        f"mean of its former pieces': {', '.join(added)}; pieces per word now "
        f"{after.get('pieces_per_word', float('nan')):.2f}"
    )
    return report


def vocabulary_line(report: dict[str, Any], n: int = SHOWN_WORDS) -> str:
    """The vocabulary report in one line."""
    if report.get("kind") == "subword":
        words = ", ".join(f"{w} ({p} pieces)" for w, _c, p in report["most_fragmented"][:n])
        unk = report["unk_rate"]
        return (
            f"pieces per word {report['pieces_per_word']:.2f}, "
            f"{100 * report['split_word_rate']:.0f}% of words split"
            + (f", {100 * unk:.1f}% with an unknown piece" if unk else "")
            + (f"; most fragmented: {words}" if words else "")
        )
    words = ", ".join(f"{w} ({c})" for w, c in report.get("top_oov", [])[:n])
    return (
        f"OOV: {100 * report['oov_token_rate']:.1f}% of tokens, "
        f"{100 * report['oov_word_rate']:.1f}% of distinct words not in the vocabulary"
        + (f" (--oov {report['oov_policy']})" if report.get("oov_policy") else "")
        + (f"; most frequent: {words}" if words else "")
    )


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


def _choose_strategy(
    cfg: RunConfig,
    backbone: Backbone,
    emb: Embedder,
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
    if per_class >= 2 and not emb.on_disk(data.train):  # on disk: the probe's holdout only
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
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train and evaluate one run; write the run folder ``out``. ``target``: unlabelled
    target-domain samples for a domain adaptation strategy (their labels, if any, are
    removed before the strategy sees them). The run holds the lock of ``out`` while it
    writes it; ``resume`` continues the run in ``out`` with its own config (``cfg`` may
    differ only in where it runs: device, workers). ``callbacks`` join the training loop's
    own (e.g. a tuner's per-epoch report, which may stop the run by raising)."""
    console = console or Console()
    out = Path(out)
    rank, world = process_rank()
    if world > 1 and rank != 0:
        return _follow(cfg, out, resume, data, target, callbacks, rank)
    with folder_lock(out, "run", console.print):
        check_out(out, resume, overwrite)
        if resume:
            cfg = resumed_config(out, cfg)
            if is_finished(out):
                return _finished(out, cfg, console)
        return _fit(cfg, out, resume, progress, console, data, cache, target, callbacks=callbacks)


def range_test(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> FitResult:
    """The learning-rate range test of ``cfg``'s strategy from its start state: the
    phases before the training loop run as :func:`fit` runs them (lp-ft's probe), then
    the sweep; nothing is trained. ``out`` gets ``config.yaml`` and ``lr_find.json``; the
    result's metrics hold the sweep under ``lr_find``."""
    console = console or Console()
    out = Path(out)
    with folder_lock(out, "run", console.print):
        check_out(out, False, overwrite)
        return _fit(cfg, out, False, progress, console, None, None, None, range_test_only=True)


def _follow(
    cfg: RunConfig,
    out: Path,
    resume: bool,
    data: Splits | None,
    target: Samples | None,
    callbacks: Sequence[Callback],
    rank: int,
) -> FitResult:
    """A process other than the first of a multi-process launch: it trains its shard of
    every batch beside the first process (Accelerate's data-parallel loop), silently, and
    writes nothing where the run goes: its run folder is a scratch folder of its own,
    removed at the end, and it reads the embeddings the first process cached (waiting for
    them, see :func:`main_process_first`). Resuming, it reads the first process's checkpoint. The
    first process alone prints, evaluates and writes the run folder."""
    with tempfile.TemporaryDirectory(prefix=f"headstart-rank{rank}-") as scratch:
        if resume:
            if is_finished(out):
                return FitResult(out, load(out, cfg.train.device).backbone, [], {})
            cfg = resumed_config(out, cfg)
        quiet = Console(quiet=True)
        return _fit(
            cfg,
            Path(scratch) / "run",
            resume,
            False,
            quiet,
            data,
            None,
            target,
            callbacks=callbacks,
            checkpoint_dir=out / "checkpoint",
            train_only=True,
        )


def _finished(out: Path, cfg: RunConfig, console: Console) -> FitResult:
    """``--resume`` of a finished run: nothing is trained again; the run as it is."""
    metrics = json.loads((out / "metrics.json").read_text())
    console.print(
        f"[bold]resume[/]: the run in {out} is finished, nothing is left to train (pass "
        "--overwrite instead of --resume to train it again)"
    )
    model = load(out, cfg.train.device)
    return FitResult(
        out,
        model.backbone,
        model.classes,
        metrics,
        read_history(out / "history.jsonl"),
        float(metrics.get("seconds", 0.0)),
    )


def _fit(
    cfg: RunConfig,
    out: Path,
    resume: bool,
    progress: bool,
    console: Console,
    data: Splits | None,
    cache: EmbeddingCache | None,
    target: Samples | None,
    range_test_only: bool = False,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    train_only: bool = False,
) -> FitResult:
    t_start = time.perf_counter()
    checkpoint_dir = checkpoint_dir or out / "checkpoint"
    # every check that needs no data first: a typo must not cost a preflight
    strategy = build_strategy(cfg.strategy)
    strategy.check_inputs(target)  # the clear error, before any data
    cfg = with_resolved_head(cfg)  # the config written says which head was fitted
    head_name = cfg.strategy.head
    HEADS.get(head_name)
    check_backbone(cfg.backbone)  # a mistyped name or --weights path
    if cfg.train.tracker is not None:
        check_tracker(cfg.train.tracker)  # not installed: said before any data is read
    device = resolve_device(cfg.train.device)
    data = data or prepare_data(cfg.data, console, progress, few_shot=strategy.few_shot)
    k = len(data.classes)
    modality = "text" if isinstance(data.train, TextSamples) else "image"
    if cfg.backbone.name == "auto":
        cfg = dataclasses.replace(
            cfg, backbone=dataclasses.replace(cfg.backbone, name=DEFAULT_BACKBONES[modality])
        )
        check_backbone(cfg.backbone)  # e.g. --add-domain-tokens with an image backbone
    cfg = _auto_image_size(cfg, data, modality, console)
    seed_everything(cfg.train)
    bcfg = dataclasses.replace(
        cfg.backbone, pretrained=cfg.backbone.pretrained and strategy.uses_pretrained
    )
    # the new head (and, from scratch, every weight) initialised from the seed alone
    with seeded(cfg.train.seed, "backbone init"):
        backbone = create_backbone(bcfg, k, cfg.data.image_size, cfg.data.max_length)
        vocabulary = _vocabulary(cfg, backbone, data, console)
        if _uses_probe_features(cfg, strategy, backbone, modality):
            backbone = ProbeFeaturesBackbone(backbone, k, tta=_tta(cfg, modality))
        backbone = strategy.wrap_backbone(backbone, k)
    cache = cache or EmbeddingCache()
    hits0, misses0 = cache.hits, cache.misses
    emb = Embedder(backbone, cfg, cache, device, progress, console)
    probe: ProbeFit | None = None
    choice = None
    if is_auto(strategy):
        with main_process_first(device=cfg.train.device):  # its probes fill the cache
            cfg, strategy, backbone, choice, probe = _choose_strategy(
                cfg, backbone, emb, data, modality, console
            )
        emb = Embedder(backbone, cfg, cache, device, progress, console)
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
    resume = resume and (checkpoint_dir / "last.safetensors").is_file()
    if not resume:
        atomic_write(out / "history.jsonl", "")
    history: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    if choice is not None:
        params["auto"] = choice.to_dict()

    # in a multi-process launch the first process fills the embedding cache, the others
    # wait for it and read it
    with main_process_first(device=cfg.train.device):
        source_before = source_features(backbone, strategy, emb, data)
    t_train = time.perf_counter()
    run = RunState(
        cfg,
        strategy,
        backbone,
        data,
        emb,
        out,
        resume,
        progress,
        console,
        params,
        target,
        pretrained=bcfg.pretrained,
        probe=probe,
        range_test_only=range_test_only,
        callbacks=list(callbacks),
        checkpoint_dir=checkpoint_dir,
    )
    for n, phase in enumerate(strategy.phases):
        if resume and phase == "probe" and "train" in strategy.phases[n:]:
            console.print("[bold]resume[/]: the probe finished before the checkpoint; skipping it")
            run.probe = None
            continue
        with main_process_first(phase == "probe", cfg.train.device):
            PHASE_RUNNERS[phase](run)
        if run.range_test is not None and range_test_only:
            found: dict[str, Any] = {"lr_find": run.range_test.to_dict()}
            found["strategy"] = strategy.describe()
            return FitResult(out, backbone, data.classes, found, run.history)
    if range_test_only:
        raise ConfigError(
            "a strategy that trains weights in the training loop, for the range test",
            f"{strategy.describe()} (phases: {', '.join(strategy.phases)})",
            "pass e.g. --strategy lp-ft, finetune or gradual",
        )
    cfg = run.cfg  # with the rate the range test found, when it ran
    if train_only:  # a follower of a multi-process launch: the first process evaluates
        return FitResult(out, backbone, data.classes, {}, run.history)
    probe = run.probe
    history += run.history
    save_config(out, cfg, backbone.spec, data.classes)  # a phase may have renamed the weights
    train_seconds = time.perf_counter() - t_train

    oof = probe.oof_logits if probe is not None and not strategy.loop_trains else None
    metrics, outputs = evaluate_run(
        cfg, strategy, backbone, emb, data, device, console, progress, source_before, oof
    )
    metrics["policy"] = {
        **data.policy,
        "early_stopping": "on validation macro-F1"
        if len(data.val)
        else "off: no validation data, the last epoch is kept (a fixed budget)",
    }
    if vocabulary is not None:
        metrics["vocabulary"] = vocabulary
    if head_name == PROTOTYPE_HEAD and strategy.frozen_features and not emb.on_disk(data.train):
        metrics["leave_one_out"] = leave_one_out(emb(data.train, "train"), data, console)
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
    if not cfg.train.keep_checkpoint:  # a finished run has nothing to resume
        remove_checkpoint(out)
    return FitResult(out, backbone, data.classes, metrics, history, metrics["seconds"])


def summary_row(result: FitResult) -> dict[str, Any]:
    test = result.metrics.get("test", {})
    return {
        "strategy": result.metrics["strategy"],
        "accuracy": test.get("accuracy", np.nan),
        "macro_f1": test.get("macro_f1", np.nan),
        "seconds": result.seconds,
    }
