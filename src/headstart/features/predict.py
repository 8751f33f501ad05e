"""Logits of a model over a dataset, in order (inference, no gradients)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from headstart.backbones import Backbone
from headstart.backbones.base import to_device
from headstart.device import in_order_generator


def collate_of(model: nn.Module) -> Any:
    return model.collate_fn() if isinstance(model, Backbone) else None


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    ds: Dataset[Any],
    batch_size: int,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over a dataset of (input, label) pairs, in order."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_of(model),
        generator=in_order_generator(),  # nothing drawn from the process-wide generator
    )
    for x, y in loader:
        logits.append(model(to_device(x, torch.device(device))).float().cpu())
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)
