"""The phases a strategy lists (strategies.base.PHASES), each run by one function here:
``contrastive`` (SetFit's pair training), ``probe`` (the head on embeddings of the frozen
backbone), ``train`` (the training loop with the strategy's groups and hooks) and
``refit`` (prototypes taken again)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from headstart.backbones import Backbone
from headstart.backbones.multilayer import ProbeFeaturesBackbone
from headstart.backbones.weights import sha256_state
from headstart.config import ContrastiveConfig, RunConfig, TrainConfig
from headstart.data.loading import (
    Samples,
    Splits,
)
from headstart.device import process_rank
from headstart.errors import ConfigError
from headstart.features import (
    calibrate_batchnorm,
)
from headstart.features.embedder import Embedder, log_truncation
from headstart.features.store import LazyEmbeddings
from headstart.heads import HEADS, fit_sklearn_head, prototype_head
from headstart.heads.probe import ProbeFit, fit_probe, plan_streamed_probe, streamed_probe_fit
from headstart.heads.prototypes import streamed_prototype_head
from headstart.storage import append_line, atomic_write
from headstart.strategies import ParamGroup, Strategy, StrategyContext, apply_freeze
from headstart.strategies.adaptation import without_labels
from headstart.strategies.alignment import AlignContext, FeatureAlignment, swap_batchnorm
from headstart.strategies.steps import StreamedProbeStep
from headstart.training import HistoryWriter, ProgressBar, Trainer, count_params
from headstart.training.callbacks import Callback, json_line
from headstart.training.lr_find import LR_FIND_FILE, RANGE_TEST_STEPS, RangeTest
from headstart.training.procedures import contrastive_finetune
from headstart.training.tracking import Tracking, flat_config

#: what a data source yields; both kinds share classes, labels, subset() and len()


def log_params(console: Console, model: nn.Module, phase: str) -> dict[str, int]:
    trainable, total = count_params(model)
    console.print(
        f"[bold]{phase}[/]: trainable params {trainable:,} of {total:,} "
        f"({100 * trainable / max(total, 1):.2f}%)"
    )
    return {"trainable": trainable, "total": total}


PROTOTYPE_HEAD = "prototype"


def fit_head(
    cfg: RunConfig,
    backbone: Backbone,
    emb: Embedder,
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
        lazy = emb.lazy(data.train, "train")
        if isinstance(lazy, LazyEmbeddings):
            w, b = streamed_prototype_head(lazy, y_tr, k)
        else:
            w, b = prototype_head(lazy.numpy(), y_tr, k)
        backbone.load_head(w, b)
        console.print(f"[bold]head[/] prototypes: class means of {len(lazy)} embeddings")
        return [], None
    if HEADS.get(head_name) is not None:
        if emb.on_disk(data.train):
            console.print(
                f"[yellow]note[/] the {head_name} head reads all {len(y_tr)} training "
                "embeddings into memory; the linear head streams them from disk"
            )
        x_tr = emb(data.train, "train")
        w, b = fit_sklearn_head(
            head_name, x_tr.numpy(), y_tr, k, cfg.strategy.head_c, seed=cfg.train.seed
        )
        backbone.load_head(w, b)
        console.print(f"[bold]head[/] {head_name} fitted on {len(x_tr)} cached embeddings")
        return [], None
    if fitted is None:
        fitted = fit_view_probe(backbone, emb, data, cfg.train.seed, console)
    backbone.load_head(fitted.weight, fitted.bias)
    how = "by minibatch Adam, streamed from disk," if fitted.streamed else "to convergence"
    console.print(
        f"[bold]head[/] logistic regression fitted {how} on {len(y_tr)} embeddings"
        + (f" x {fitted.views} views" if fitted.views > 1 else "")
        + f", C={fitted.c:g} ({fitted.cv['policy']})"
    )
    return [], fitted


def _streamed_probe(
    views: list[LazyEmbeddings], y: np.ndarray, k: int, seed: int, device: str
) -> ProbeFit:
    """The linear probe on disk-backed embeddings, trained by the loop on minibatches
    streamed from their shards (:class:`StreamedProbeStep`)."""
    plan = plan_streamed_probe(views, y, seed=seed)
    layer = nn.Linear(views[0].dim, k)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    tcfg = TrainConfig(
        epochs=plan.epochs,
        batch_size=plan.batch,
        lr=plan.lr,
        weight_decay=0.0,  # the penalty is in the loss, as in the in-memory probe
        warmup_fraction=0.0,
        label_smoothing=0.0,
        patience=plan.epochs,
        mixed_precision="no",
        device=device.split(":")[0],
        seed=seed,
        checkpoint=False,
    )
    group = ParamGroup("head", list(layer.parameters()), True, 1.0)
    Trainer(tcfg).fit(layer, [group], None, None, step=StreamedProbeStep(views, y, plan))
    return streamed_probe_fit(layer, views, y, plan)


def fit_view_probe(
    backbone: Backbone, emb: Embedder, data: Splits, seed: int, console: Console
) -> ProbeFit:
    """The probe on the training embeddings of each of the backbone's views. Flipped views
    are kept only where cross-validation does not speak against them: when the classes
    differ by left and right (arrows, some letters), a mirrored view is another class, and
    the probe without it is better by more than one standard error; then the backbone
    drops the view (and records that in its spec)."""
    y = np.asarray(data.train.labels)
    k = len(data.classes)
    if emb.on_disk(data.train):  # too many to hold: minibatches streamed from the shards
        lazy = [v for v in emb.lazy_views(data.train, "train") if isinstance(v, LazyEmbeddings)]
        console.print(
            f"[bold]probe[/] {len(y)} training examples (over {emb.disk_rows}): embeddings "
            "on disk, the probe trained on minibatches streamed from them"
        )
        return _streamed_probe(lazy, y, k, seed, str(emb.device))
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


def probe_row(probe: ProbeFit) -> dict[str, Any]:
    """The probe's line in history.jsonl: what it was fitted with (it has no epochs)."""
    return {
        "c": probe.c,
        "views": probe.views,
        "cv_accuracy": probe.cv.get("cv_accuracy_chosen"),
        "policy": probe.cv["policy"],
    }


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
    emb: Embedder
    out: Path
    resume: bool
    progress: bool
    console: Console
    params: dict[str, Any]
    target: Samples | None = None
    #: the backbone was loaded with pretrained weights (else its BatchNorm statistics are
    #: set on the training data before a probe)
    pretrained: bool = True
    probe: ProbeFit | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: stop at the learning-rate range test (``headstart lr-find``): the train phase runs
    #: the test, keeps it here and trains nothing
    range_test_only: bool = False
    range_test: RangeTest | None = None
    #: more callbacks for the training loop (a tuner's per-epoch report)
    callbacks: list[Callback] = field(default_factory=list)
    #: where the loop's checkpoint is (a follower process reads the first one's)
    checkpoint_dir: Path | None = None


def _contrastive_phase(run: RunState) -> None:
    """SetFit's first phase: the body trained on sampled pairs of the training texts. The
    spec's weight digest then names the tuned weights, so cached embeddings of the
    pretrained body are never served for them."""
    cfg, backbone, console = run.cfg, run.backbone, run.console
    ccfg = ContrastiveConfig(seed=cfg.train.seed)
    dataset = backbone.make_dataset(run.data.train)
    log_truncation(console, dataset, backbone)
    done = contrastive_finetune(backbone, dataset, ccfg, run.emb.device, run.progress, console)
    backbone.spec.weights_sha256 = sha256_state(backbone.state_dict())
    backbone.spec.weights += f" + contrastive pairs ({done['pairs']} pairs, seed {ccfg.seed})"
    console.print(
        f"[bold]contrastive[/] {done['pairs']} sampled pairs ({done['positive_pairs']} of one "
        f"class) in {done['steps']} steps: loss {done['first_loss']:.4f} -> "
        f"{done['last_loss']:.4f}"
    )
    run.params["contrastive"] = done


def _probe_phase(run: RunState) -> None:
    """The head fitted on embeddings of the frozen backbone (``run.probe``: one already
    fitted by ``--strategy auto``, used as it is)."""
    cfg, backbone, console, data = run.cfg, run.backbone, run.console, run.data
    if not run.pretrained:  # random running statistics would skew the probe's features
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
    run.params["probe"] = log_params(console, backbone, "linear probe")
    rows, run.probe = fit_head(cfg, backbone, run.emb, data, console, cfg.strategy.head, run.probe)
    run.history += rows
    if run.probe is not None:
        run.params["probe"]["head"] = run.probe.summary()
        line = {"phase": "probe", "epoch": 0, **probe_row(run.probe)}
        with (run.out / "history.jsonl").open("a") as f:
            f.write(json_line(line) + "\n")
        run.history.append(line)


def _refit_phase(run: RunState) -> None:
    """The prototypes taken again from the trained backbone's embeddings."""
    x = run.emb.uncached(run.data.train, "train")
    data = run.data
    w, b = prototype_head(x.numpy(), np.asarray(data.train.labels), len(data.classes))
    device = next(run.backbone.head().parameters()).device
    run.backbone.load_head(w.to(device), b.to(device))
    run.console.print("[bold]head[/] prototypes taken again from the fine-tuned embeddings")


def _train_phase(run: RunState) -> None:
    """The training loop with the strategy's parameter groups and hooks."""
    cfg, strategy, backbone, console, out = (
        run.cfg,
        run.strategy,
        run.backbone,
        run.console,
        run.out,
    )
    strategy.prepare_model(backbone)
    groups = strategy.param_groups(backbone)
    apply_freeze(backbone, groups)
    run.params["train"] = log_params(console, backbone, f"{strategy.describe()}")
    _, world = process_rank()
    if world > 1:
        effective = cfg.train.batch_size * world * cfg.train.grad_accum
        run.params["train"]["effective_batch_size"] = effective
        console.print(
            f"  data-parallel: {world} processes x batch {cfg.train.batch_size} x "
            f"{cfg.train.grad_accum} accumulation = effective batch {effective}"
        )
    if len(groups) > 1:
        console.print(
            "  layer groups: "
            + ", ".join(
                f"{g.name}{'' if g.trainable else ' (frozen)'} x{g.lr_scale:.3g}" for g in groups
            )
        )
    callbacks: list[Any] = [HistoryWriter(out / "history.jsonl", "train"), *run.callbacks]
    if run.progress:
        callbacks.append(ProgressBar(strategy.describe(), console))
    train_ds = backbone.make_dataset(run.data.train, train=True, augment=cfg.data.augment)
    log_truncation(console, train_ds, backbone)
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
        samples=run.data.train,
    )
    if run.range_test_only or cfg.train.lr_find:
        lr = _found_lr(run, groups, train_ds, ctx)
        if run.range_test_only:
            return
        cfg = run.cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr))
    tracking = None
    if cfg.train.tracker is not None:
        config = flat_config(cfg.to_dict())
        tracking = Tracking(cfg.train.tracker, out.name, out / "trackers", config)
    checkpoints = run.checkpoint_dir or out / "checkpoint"
    trainer = Trainer(cfg.train, callbacks, checkpoints, cfg.eval.batch_size, tracking)
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
    strategy.finish_model(backbone)
    done = strategy.summary()
    if done:
        run.params["strategy"] = done
        stop = done.get("collapse_stop")
        if stop:
            console.print(
                f"[yellow]note[/] {strategy.describe()}: {stop['why']} at step {stop['step']} "
                f"of {stop['of']}"
            )
    rows = [{"phase": "train", **h} for h in state.history]
    rewrite_history(out / "history.jsonl", "train", rows)
    run.history += rows


def _found_lr(
    run: RunState, groups: list[ParamGroup], train_ds: Any, ctx: StrategyContext
) -> float:
    """The learning-rate range test from the strategy's start state (``lr_find.json`` in
    the run folder; a resumed run reads its rate back instead of sweeping again)."""
    path = run.out / LR_FIND_FILE
    if run.resume and path.is_file():
        found = float(json.loads(path.read_text())["suggestion"])
        run.console.print(f"[bold]lr-find[/] resumed at the rate found before: {found:.3g}")
        run.params["lr_find"] = {"suggestion": found, "resumed": True}
        return found
    trainer = Trainer(run.cfg.train, (), None, run.cfg.eval.batch_size)
    with Progress(
        TextColumn("lr-find"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps, rate {task.fields[lr]}"),
        TimeElapsedColumn(),
        console=run.console,
        disable=not run.progress,
        transient=True,
    ) as bar:
        task = bar.add_task("lr-find", total=RANGE_TEST_STEPS, lr="-")
        test = trainer.range_test(
            run.backbone,
            groups,
            train_ds,
            run.strategy,
            ctx,
            steps=RANGE_TEST_STEPS,
            on_step=lambda i, lr, _loss: bar.update(task, completed=i, lr=f"{lr:.2g}"),
        )
    run.range_test = test
    atomic_write(path, json.dumps(test.to_dict(), indent=1))
    run.params["lr_find"] = {k: v for k, v in test.to_dict().items() if not isinstance(v, list)}
    run.console.print(
        f"[bold]lr-find[/] {len(test.lrs)} steps ({test.stopped}): suggests "
        f"{test.suggestion:.3g} for the head ({test.method}; steepest descent at "
        f"{test.steepest:.3g}); the body's groups train at their usual fraction of it"
    )
    return test.suggestion


def _align_phase(run: RunState) -> None:
    """The head for the target domain by the strategy's closed-form alignment of source
    and (unlabelled) target features; the model's source side is written beside it."""
    strategy = run.strategy
    if not isinstance(strategy, FeatureAlignment):
        raise ConfigError(
            "a feature-alignment strategy for the align phase",
            strategy.describe(),
            "list the align phase only in strategies of headstart.strategies.alignment",
        )
    strategy.check_inputs(run.target)
    assert run.target is not None  # check_inputs raised otherwise
    ctx = AlignContext(
        run.backbone,
        run.emb,
        run.data.train,
        run.data.val,
        without_labels(run.target),  # the alignment never sees a target label
        len(run.data.classes),
        seed=run.cfg.train.seed,
        batch_size=run.cfg.eval.batch_size,
        device=run.emb.device,
        progress=run.progress,
        console=run.console,
        cached="train" not in strategy.phases,
    )
    side, summary = strategy.align(ctx)
    side.save(run.out)
    if len(run.data.val):
        if side.batchnorm:  # the source statistics for the source's validation data
            replaced = side.apply_batchnorm(run.backbone)
            x_val = run.emb.uncached(run.data.val, "validation").numpy()
            swap_batchnorm(run.backbone, replaced)
        else:
            x_val = ctx.features(run.data.val, "validation")
        pred = side.probs(x_val).argmax(1)
        summary["source_val_accuracy"] = float(np.mean(pred == np.asarray(run.data.val.labels)))
    run.params["alignment"] = summary
    line = {"phase": "align", "epoch": 0, **summary}
    append_line(run.out / "history.jsonl", json_line(line))
    run.history.append(line)


#: what each phase a strategy lists does (strategies.base.PHASES)
PHASE_RUNNERS: dict[str, Callable[[RunState], None]] = {
    "contrastive": _contrastive_phase,
    "probe": _probe_phase,
    "train": _train_phase,
    "refit": _refit_phase,
    "align": _align_phase,
}


def rewrite_history(path: Path, phase: str, rows: list[dict[str, Any]]) -> None:
    """Replace ``phase``'s lines by the checkpointed truth (a crash between writing an
    epoch's line and its checkpoint would otherwise leave that epoch in twice)."""
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            if json.loads(line).get("phase") != phase:
                kept.append(line)
        except json.JSONDecodeError:  # a line torn by a crash
            continue
    atomic_write(path, "".join(f"{line}\n" for line in [*kept, *map(json_line, rows)]))
