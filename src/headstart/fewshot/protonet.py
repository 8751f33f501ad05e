"""Prototypical networks (Snell et al. 2017): the logits of an episode's queries."""

from __future__ import annotations

import torch
from torch import nn


def protonet_logits(
    embeddings: torch.Tensor, ways: int, shots: int, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (scaled cosine to each prototype) of the queries and their targets; the first
    ``ways * shots`` rows are the support, class-major, the rest the queries, class-major."""
    e = nn.functional.normalize(embeddings.float(), dim=1)
    support, query = e[: ways * shots], e[ways * shots :]
    protos = nn.functional.normalize(support.view(ways, shots, -1).mean(1), dim=1)
    logits = scale * query @ protos.T
    target = torch.arange(ways, device=e.device).repeat_interleave(len(query) // ways)
    return logits, target
