"""Episodic meta-training (prototypical networks, Snell et al. 2017) on source classes.

Each step is a small few-shot task drawn from the source classes: the support images of
``ways`` classes give one prototype per class and the query images are classified by
cosine similarity to the prototypes (scaled by a learned temperature), with the
cross-entropy of the queries as the loss. The backbone so learns an embedding in which
class means separate classes it has never seen, which is what few-shot use on held-out
classes needs. The result is a run folder whose backbone ``headstart fewshot`` and
``headstart fit --strategy prototypes`` can use.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from headstart.backbones import Backbone, check_backbone, create_backbone
from headstart.backbones.weights import sha256_state
from headstart.config import (
    BackboneConfig,
    DataConfig,
    MetaConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.data import TextSamples, up_to_per_class
from headstart.device import resolve_device, seed_everything
from headstart.errors import ConfigError, DataError, RunFolderError
from headstart.features import embed_samples
from headstart.fewshot.episodes import evaluate_episodes, sample_episodes
from headstart.heads.prototypes import prototype_head
from headstart.runfolder import (
    check_out_folder,
    clear_outputs,
    earlier_outputs,
    save_config,
    save_model,
    write_json,
)
from headstart.storage import locked
from headstart.strategies import ParamGroup
from headstart.strategies.steps import ProtonetStep
from headstart.training import ProgressBar, Trainer

#: images of each source class held out of the episodes, to measure the training
VAL_PER_CLASS = 60


def parse_classes(spec: str, classes: list[str]) -> list[int]:
    """``0-4``, ``0,2,5`` or class names (``Coat,Bag``) -> class indices. A part that is a
    class's name is that class, even when it looks like a number."""
    fix = "pass e.g. --classes 0-4, or class names separated by commas"
    out: list[int] = []
    lookup = {c.casefold(): i for i, c in enumerate(classes)}
    for part in (p.strip() for p in spec.split(",")):
        lo, dash, hi = part.partition("-")
        if part.casefold() in lookup:
            out.append(lookup[part.casefold()])
        elif dash and lo.isdigit() and hi.isdigit():
            if int(hi) < int(lo):
                raise ConfigError("a range from low to high, like 0-4", repr(part), fix)
            out.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ConfigError(
                f"class indices (0-{len(classes) - 1}), ranges like 0-4, or names of {classes}",
                repr(part),
                fix,
            )
    bad = [i for i in out if not 0 <= i < len(classes)]
    if bad or len(set(out)) != len(out):
        raise ConfigError(f"distinct classes, indices between 0 and {len(classes) - 1}", spec, fix)
    return out


@locked("meta-training")
def run_meta_train(
    source: str,
    mcfg: MetaConfig,
    out: str | Path,
    console: Console | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Meta-train the backbone on ``mcfg.classes`` of ``source``; write the run folder."""
    from headstart.data.loading import check_samples, load_source

    t0 = time.perf_counter()
    console = console or Console()
    out = Path(out)
    ckpt_dir = out / "checkpoint"
    _check_out(out, overwrite)
    check_backbone(BackboneConfig(name=mcfg.backbone))
    dcfg = DataConfig(source=source, image_size=mcfg.image_size, augment=mcfg.augment)
    samples, _ = check_samples(load_source(source, dcfg), dcfg, progress)
    if isinstance(samples, TextSamples):
        raise ConfigError(
            "images to meta-train an image backbone on",
            f"texts ({samples.name})",
            "meta-train on an image folder or bundled image dataset; for texts use "
            "`headstart fit --strategy setfit` or `headstart fewshot --strategy setfit`",
        )
    labels = np.asarray(samples.labels)
    held_out = _held_out(labels, mcfg, samples.classes)
    device = resolve_device(mcfg.device)
    seed_everything(TrainConfig(seed=mcfg.seed))
    k = len(mcfg.classes)
    backbone = create_backbone(BackboneConfig(name=mcfg.backbone), k, mcfg.image_size)
    episode_labels = labels.copy()
    episode_labels[held_out] = -1  # never drawn into a training episode
    train_ds = backbone.make_dataset(samples, train=True, augment=mcfg.augment)
    episodes = sample_episodes(
        episode_labels,
        mcfg.ways,
        mcfg.shots,
        mcfg.queries,
        mcfg.episodes,
        mcfg.seed,
        mcfg.classes,
    )
    groups = backbone.layer_groups()
    # the head is not used (queries go to the support means); the first ``freeze`` groups
    # keep their pretrained weights
    layout = [
        ParamGroup(g.name, g.params, mcfg.freeze <= i < len(groups) - 1)
        for i, g in enumerate(groups)
    ]
    if not any(g.trainable for g in layout):
        raise ConfigError(
            f"--freeze below {len(groups) - 1} (the backbone's groups before its head)",
            f"--freeze {mcfg.freeze}, which leaves nothing to train",
            "pass a smaller --freeze (`headstart backbones NAME` lists the groups)",
        )
    step = ProtonetStep(
        train_ds,
        episodes,
        mcfg.ways,
        mcfg.shots,
        mcfg.checkpoint_every,
        mcfg.bn_stats == "frozen",
        layout,
        _jsonable(mcfg),
    )
    tcfg = TrainConfig(
        epochs=step.epochs(),
        lr=mcfg.lr,
        weight_decay=0.01,
        warmup_fraction=0.0,
        label_smoothing=0.0,
        patience=step.epochs() + 1,
        seed=mcfg.seed,
        device=device.split(":")[0],
    )
    trainer = Trainer(
        tcfg,
        [ProgressBar("meta-training", console)] if progress else [],
        checkpoint_dir=ckpt_dir,
    )
    save_config(
        out, _run_config(source, mcfg), backbone.spec, [samples.classes[c] for c in mcfg.classes]
    )
    backbone.save_assets(out)
    resuming = (ckpt_dir / "last.safetensors").is_file()
    backbone.to(device)
    if not resuming:
        step.before = _val(backbone, samples.subset(held_out), mcfg, device, progress)
    trainer.fit(backbone, layout, None, None, resume=resuming, step=step)
    if step.resumed_at is not None:
        console.print(f"[bold]resume[/] meta-training from episode {step.resumed_at}")
    before, losses, accs = step.before, step.losses, step.accs
    backbone.eval()
    after = _val(backbone, samples.subset(held_out), mcfg, device, progress)
    # the run folder is also a classifier of the source classes: their prototypes
    pool = up_to_per_class(episode_labels, 100, mcfg.seed + 1, mcfg.classes)
    x = _embed(backbone, samples.subset(pool), device, progress)
    position = {c: i for i, c in enumerate(mcfg.classes)}
    w, b = prototype_head(x, np.asarray([position[c] for c in labels[pool]]), k)
    backbone.load_head(w.to(device), b.to(device))
    backbone.spec.weights += f" + {mcfg.method} meta-training ({mcfg.episodes} episodes)"
    backbone.spec.weights_sha256 = sha256_state(backbone.state_dict())
    class_names = [samples.classes[c] for c in mcfg.classes]
    save_config(out, _run_config(source, mcfg), backbone.spec, class_names)
    save_model(out, backbone)
    write_json(out / "calibration.json", {"temperature": 1.0})
    metrics = {
        "strategy": mcfg.method,
        "config": asdict(mcfg),
        "source": samples.name,
        "classes": [samples.classes[c] for c in mcfg.classes],
        "loss_first_20": float(np.mean(losses[:20])),
        "loss_last_20": float(np.mean(losses[-20:])),
        "episode_accuracy_last_20": float(np.mean(accs[-20:])),
        "source_val_before": before,
        "source_val_after": after,
        "seconds": time.perf_counter() - t0,
        "backbone": backbone.spec.name,
        "weights": backbone.spec.weights,
    }
    write_json(out / "metrics.json", metrics)
    if ckpt_dir.is_dir():
        shutil.rmtree(ckpt_dir)
    if after is not None:
        msg = f"{mcfg.ways}-way {mcfg.shots}-shot on held-out images of the source classes: "
        if before is not None:
            msg += f"{before['mean']:.4f} before, "
        console.print(
            f"[bold]meta-trained[/] {msg}{after['mean']:.4f} +- {after['ci95']:.4f} after"
        )
    console.print(f"[bold green]run folder[/] {out} ({metrics['seconds']:.1f} s)")
    return metrics


def _run_config(source: str, mcfg: MetaConfig) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=source, image_size=mcfg.image_size, augment=mcfg.augment),
        backbone=BackboneConfig(name=mcfg.backbone),
        strategy=StrategyConfig(name=mcfg.method, head="prototype"),
        train=TrainConfig(lr=mcfg.lr, seed=mcfg.seed),
    )


def _jsonable(mcfg: MetaConfig) -> dict[str, Any]:
    """The settings as they come back from a checkpoint (lists, not tuples)."""
    return json.loads(json.dumps(asdict(mcfg)))


def _check_out(out: Path, overwrite: bool) -> None:
    """A finished run (of any command) is refused, or with ``overwrite`` cleared; an
    unfinished meta-training run (its checkpoint) is resumed."""
    check_out_folder(out)
    if (out / "checkpoint" / "last.safetensors").is_file() and not overwrite:
        return
    earlier = earlier_outputs(out)
    if earlier and not overwrite:
        raise RunFolderError(
            "a new or empty --out folder, or an unfinished meta-training run to resume",
            f"earlier results in {out} ({', '.join(earlier)})",
            "pass --overwrite to replace them, or another --out",
        )
    clear_outputs(out)


def _held_out(labels: np.ndarray, mcfg: MetaConfig, names: list[str]) -> np.ndarray:
    """Images of each source class kept out of every training episode (a third of the
    class, at most ``VAL_PER_CLASS``), to measure what meta-training did."""
    bad = [c for c in mcfg.classes if c >= len(names)]
    if bad:
        raise ConfigError(
            f"class indices below {len(names)} (the data's classes: {names})",
            f"{bad}",
            "pass classes of the data",
        )
    if len(mcfg.classes) < mcfg.ways:
        raise ConfigError(
            f"at least --ways ({mcfg.ways}) source classes",
            f"{len(mcfg.classes)} classes",
            "pass more classes or fewer ways",
        )
    counts = {c: int(np.sum(labels == c)) for c in mcfg.classes}
    need = mcfg.shots + mcfg.queries
    short = {names[c]: n for c, n in counts.items() if n - min(VAL_PER_CLASS, n // 3) < need}
    if short:
        raise DataError(
            f"at least {need + (need + 1) // 2} images in every source class ({need} per "
            "class in an episode, plus a third held out to measure the training)",
            ", ".join(f"{name}: {n}" for name, n in short.items()),
            "add images, or lower --shots / --queries",
        )
    n_val = min(VAL_PER_CLASS, min(counts.values()) // 3)
    return up_to_per_class(labels, n_val, mcfg.seed, mcfg.classes)


def _embed(backbone: Backbone, samples: Any, device: str, progress: bool) -> np.ndarray:
    return embed_samples(backbone, samples, None, 128, device, progress).numpy()


def _val(
    backbone: Backbone, held_out: Any, mcfg: MetaConfig, device: str, progress: bool
) -> dict[str, float] | None:
    """Few-shot accuracy on the held-out images of the source classes (never in a training
    episode), before or after meta-training; None when too few are held out."""
    per_class = int(np.bincount(np.asarray(held_out.labels)).max()) if len(held_out) else 0
    queries = min(15, per_class - mcfg.shots)
    if queries < 1:
        return None
    was = backbone.training
    backbone.eval()
    x = _embed(backbone, held_out, device, progress)
    backbone.train(was)
    return evaluate_episodes(
        x,
        np.asarray(held_out.labels),
        mcfg.ways,
        mcfg.shots,
        queries=queries,
        episodes=mcfg.val_episodes,
        seed=mcfg.seed + 7,
        classes=mcfg.classes,
    )
