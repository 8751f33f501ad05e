"""AdamW and a warmup + cosine schedule built from a strategy's ParamGroups."""

from __future__ import annotations

import torch
from transformers import (
    get_constant_schedule,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from headstart.config import TrainConfig
from headstart.strategies import ParamGroup


def build_optimizer(groups: list[ParamGroup], cfg: TrainConfig) -> torch.optim.AdamW:
    """One optimiser group per (layer group, decay / no decay). Frozen groups stay in the
    layout with their parameters' gradients off, so the layout never changes and a
    resumed run restores it exactly. Norm weights and biases (1-D tensors) get no decay."""
    opt_groups = []
    for g in groups:
        wd = cfg.weight_decay if g.weight_decay is None else g.weight_decay
        decay = [p for p in g.params if p.ndim > 1]
        no_decay = [p for p in g.params if p.ndim <= 1]
        for params, w, suffix in ((decay, wd, ""), (no_decay, 0.0, "/no_decay")):
            if params:
                opt_groups.append(
                    {
                        "params": params,
                        "lr": cfg.lr * g.lr_scale,
                        "weight_decay": w,
                        "name": g.name + suffix,
                    }
                )
    return torch.optim.AdamW(opt_groups, lr=cfg.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, kind: str = "cosine"
) -> torch.optim.lr_scheduler.LambdaLR:
    """``cosine`` or ``linear`` decay after a warmup of ``cfg.warmup_fraction`` of the
    steps, or a ``constant`` rate."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_fraction * total)
    if kind == "constant":
        return get_constant_schedule(optimizer)
    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total)
    return get_cosine_schedule_with_warmup(optimizer, warmup, total)
