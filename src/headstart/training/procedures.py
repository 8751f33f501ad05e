"""Training procedures other than supervised fine-tuning, each one step object run by the
one loop (:class:`~headstart.training.trainer.Trainer`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from headstart.backbones import Backbone
from headstart.config import ContrastiveConfig, TrainConfig
from headstart.strategies import ParamGroup
from headstart.strategies.setfit import ContrastiveStep
from headstart.training.callbacks import Callback, ProgressBar
from headstart.training.trainer import Trainer


def body_groups(backbone: Backbone) -> list[ParamGroup]:
    """Every layer group trains but the head."""
    groups = backbone.layer_groups()
    last = len(groups) - 1
    return [ParamGroup(g.name, g.params, i < last) for i, g in enumerate(groups)]


def contrastive_finetune(
    backbone: Backbone,
    dataset: Any,
    cfg: ContrastiveConfig,
    device: str,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train the backbone's body on sampled pairs of ``dataset`` (items ``(inputs,
    label)``, the backbone's own tokenised dataset). Returns what it did, for
    metrics.json; the backbone is left in eval mode with every weight frozen."""
    step = ContrastiveStep(backbone, dataset, cfg)
    tcfg = TrainConfig(
        epochs=1,
        lr=cfg.lr,
        weight_decay=0.0,
        warmup_fraction=cfg.warmup_fraction,
        label_smoothing=0.0,
        seed=cfg.seed,
        device=device.split(":")[0] if device.startswith("cuda") else device,
        checkpoint=False,
    )
    callbacks: list[Callback] = [ProgressBar("contrastive pairs", console)] if progress else []
    groups = body_groups(backbone)
    for g in groups:
        for p in g.params:
            p.requires_grad_(g.trainable)
    Trainer(tcfg, callbacks).fit(backbone, groups, None, None, step=step)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return step.summary()
