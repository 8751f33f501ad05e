"""A backbone built around another one (cut after a layer group, several layers' features):
its preprocessing, batching and saved assets are the inner backbone's."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, BackboneSpec


class WrappedBackbone(Backbone):
    """Delegates preprocessing and layer access to ``self.inner``; its head is its own
    linear layer ``self.classifier`` on ``spec.feature_dim`` features (both set by the
    subclass)."""

    inner: Backbone
    classifier: nn.Linear

    def head(self) -> nn.Module:
        return self.classifier

    def reset_head(self, num_classes: int) -> None:
        device = self.classifier.weight.device
        self.classifier = nn.Linear(self.spec.feature_dim, num_classes).to(device)

    def pool_layer(self, hidden: torch.Tensor, x: Any, module: nn.Module) -> torch.Tensor:
        return self.inner.pool_layer(hidden, x, module)

    def layer_outputs(self, x: Any, layers: list[str]) -> dict[str, torch.Tensor]:
        return self.inner.layer_outputs(x, layers)

    def make_dataset(self, samples: Any, train: bool = False, augment: str = "none") -> Any:
        return self.inner.make_dataset(samples, train=train, augment=augment)

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        return self.inner.collate_fn()

    def batch_order(self, dataset: Any) -> list[int] | None:
        return self.inner.batch_order(dataset)

    def vocabulary_report(self, texts: Any, top: int = 15) -> dict[str, Any] | None:
        return self.inner.vocabulary_report(texts, top)

    def save_assets(self, run_dir: Path) -> None:
        self.inner.save_assets(run_dir)


def unwrapped_spec(spec: BackboneSpec, key: str, dim_key: str) -> BackboneSpec:
    """The spec of the backbone a wrapper was built around (to rebuild a saved run): the
    wrapper's record ``extra[key]`` removed and the inner feature width (``extra[dim_key]``)
    put back."""
    inner = copy.deepcopy(spec)
    inner.feature_dim = int(inner.extra.pop(dim_key, spec.feature_dim))
    inner.extra.pop(key, None)
    return inner
