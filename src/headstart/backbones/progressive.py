"""A progressive network (Rusu et al. 2016) around a pretrained backbone: the pretrained
column frozen, a new narrower column beside it that receives a lateral connection from
every layer group of the frozen one, and the head on the new column.

The frozen column runs in evaluation mode with gradients off, so its weights, its
BatchNorm statistics and its source-task predictions stay exactly as pretrained: zero
forgetting by construction. The new column works on the frozen column's pooled features
(the spatial mean of a feature map, the token mean of a sequence; what
``Backbone.embed_layers`` gives): its layer ``k`` is

    h_k = GELU(LayerNorm(U_k z_k / |z_k| + A_k h_{k-1}))

with ``z_k`` the pooled output of the frozen column's layer group ``k`` (the lateral
connection ``U_k``) and ``A_k`` the new column's own connection from its previous layer
(none for the first). Working on pooled rather than spatial features keeps the column
cheap and lets one wrapper serve every architecture (convolutional, transformer, text);
the price is that the new column cannot learn spatial patterns the frozen one does not
already respond to. Its width defaults to a quarter of the frozen column's final width.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.families import FAMILIES, BackboneFamily, backbone_from_spec
from headstart.backbones.wrapped import WrappedBackbone, unwrapped_spec

#: the new column's default width as a fraction of the frozen column's final width
WIDTH_FRACTION = 0.25
MIN_WIDTH = 32


class ProgressiveBackbone(WrappedBackbone):
    """``inner`` frozen (the pretrained column) and a new column of width ``width`` with
    lateral connections from each of ``inner``'s body layer groups; the head reads it."""

    def __init__(
        self,
        inner: Backbone,
        num_classes: int,
        width: int | None = None,
        spec: BackboneSpec | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        for p in inner.parameters():
            p.requires_grad_(False)
        if spec is None:
            spec = copy.deepcopy(inner.spec)
            layers = list(inner.layer_modules())
            dims = self._dims(inner, layers)
            width = width or max(MIN_WIDTH, int(WIDTH_FRACTION * inner.spec.feature_dim))
            spec.extra["progressive"] = {"layers": layers, "dims": dims, "width": int(width)}
            spec.extra["progressive_inner_feature_dim"] = inner.spec.feature_dim
        self.spec = spec
        cfg = spec.extra["progressive"]
        self.layers: list[str] = list(cfg["layers"])
        self.width = int(cfg["width"])
        dims = [int(d) for d in cfg["dims"]]
        self.lateral = nn.ModuleList(nn.Linear(d, self.width) for d in dims)
        self.own = nn.ModuleList(nn.Linear(self.width, self.width) for _ in dims[1:])
        self.norms = nn.ModuleList(nn.LayerNorm(self.width) for _ in dims)
        spec.feature_dim = self.width
        self.classifier = nn.Linear(self.width, num_classes)

    @staticmethod
    @torch.no_grad()
    def _dims(inner: Backbone, layers: list[str]) -> list[int]:
        was = inner.training
        inner.eval()
        try:
            feats = inner.embed_layers(inner.dummy_batch(), layers)
            return [int(feats[n].shape[1]) for n in layers]
        finally:
            inner.train(was)

    def train(self, mode: bool = True) -> ProgressiveBackbone:
        """The new column trains; the frozen one stays in evaluation mode (no dropout, no
        BatchNorm statistics updated)."""
        super().train(mode)
        self.inner.eval()
        return self

    def embed(self, x: Any) -> torch.Tensor:
        with torch.no_grad():
            feats = self.inner.embed_layers(x, self.layers)
        h: torch.Tensor | None = None
        for k, name in enumerate(self.layers):
            z = nn.functional.normalize(feats[name].float(), dim=1)
            a = self.lateral[k](z)
            if h is not None:
                a = a + self.own[k - 1](h)
            h = nn.functional.gelu(self.norms[k](a))
        assert h is not None
        return h

    def forward(self, x: Any) -> torch.Tensor:
        return self.classifier(self.embed(x))

    def forward_features(self, x: Any) -> torch.Tensor:
        return self.inner.forward_features(x)

    def layer_groups(self) -> list[LayerGroup]:
        column = [*self.lateral.parameters(), *self.own.parameters(), *self.norms.parameters()]
        return [
            *self.inner.layer_groups()[:-1],
            LayerGroup("column", column),
            LayerGroup("head", [*self.classifier.parameters()]),
        ]

    def layer_modules(self) -> dict[str, nn.Module]:
        return self.inner.layer_modules()

    def preprocess_id(self) -> str:
        return self.inner.preprocess_id()

    def source_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.inner.source_head()

    def source_backbone(self) -> Backbone:
        return self.inner.source_backbone()


def inner_spec(spec: BackboneSpec) -> BackboneSpec:
    """The spec of the frozen column (to rebuild a saved run)."""
    return unwrapped_spec(spec, "progressive", "progressive_inner_feature_dim")


class ProgressiveFamily(BackboneFamily):
    """Rebuilds saved runs whose spec records a progressive column."""

    order = 10

    def claims_spec(self, spec: BackboneSpec) -> bool:
        return bool(spec.extra.get("progressive"))

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        inner = backbone_from_spec(inner_spec(spec), num_classes, run_dir)
        return ProgressiveBackbone(inner, num_classes, spec=spec)


FAMILIES.add(
    "progressive", ProgressiveFamily(), help="a frozen column and a new one with lateral links"
)
