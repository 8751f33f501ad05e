"""A backbone cut after one of its layer groups (``efficientnet_lite0@blocks.4``): the
pooled features there feed a new linear head, and the layers after the cut are unused.

Ranking by layer (``headstart rank --layers``) shows where to cut; this makes the cut
trainable with every strategy, like any other backbone."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.families import (
    FAMILIES,
    BackboneFamily,
    backbone_from_spec,
    create_backbone,
    family_for_name,
)
from headstart.backbones.wrapped import WrappedBackbone
from headstart.config import BackboneConfig
from headstart.errors import BackboneError
from headstart.paths import exists

CUT = "@"


def split_cut(name: str) -> tuple[str, str | None]:
    """``"net@blocks.4"`` -> ``("net", "blocks.4")``; a name without a cut -> (name, None)."""
    if CUT not in name or exists(name):
        return name, None
    base, _, layer = name.rpartition(CUT)
    return base, layer


class CutBackbone(WrappedBackbone):
    """``inner`` cut after layer group ``layer``, with a new linear head on its pooled
    output. The state dict keeps the inner backbone whole (``inner.*``)."""

    def __init__(
        self,
        inner: Backbone,
        layer: str,
        num_classes: int,
        drop_rate: float = 0.0,
        spec: BackboneSpec | None = None,
    ) -> None:
        super().__init__()
        modules = inner.layer_modules()
        if layer not in modules:
            raise BackboneError(
                f"a layer group of {inner.spec.name} to cut after ({', '.join(modules)})",
                repr(layer),
                f"write {inner.spec.name}@GROUP with one of those groups",
            )
        self.inner = inner
        self.layer = layer
        self.trainable_body = inner.trainable_body  # type: ignore[misc]
        groups = inner.layer_groups()
        self._kept = groups[: [g.name for g in groups].index(layer) + 1]
        kept = {id(p) for g in self._kept for p in g.params}
        for p in inner.parameters():  # after the cut: not trained, not counted as trainable
            if id(p) not in kept:
                p.requires_grad_(False)
        if spec is None:
            spec = copy.deepcopy(inner.spec)
            spec.extra["cut"] = layer
            spec.extra["inner_feature_dim"] = inner.spec.feature_dim
            spec.name = f"{inner.spec.name}{CUT}{layer}"
            spec.num_source_classes = 0
            spec.extra.pop("has_source_head", None)
            spec.feature_dim = self._probe_dim()
        self.spec = spec
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(spec.feature_dim, num_classes)

    @torch.no_grad()
    def _probe_dim(self) -> int:
        """The width of the pooled features at the cut, from a forward pass on dummy input."""
        was = self.inner.training
        self.inner.eval()
        try:
            x = self.inner.dummy_batch()
            return int(self.inner.embed_layers(x, [self.layer])[self.layer].shape[1])
        finally:
            self.inner.train(was)

    def forward(self, x: Any) -> torch.Tensor:
        emb = self.embed(x)
        return self.classifier(self.dropout(emb.to(self.classifier.weight.dtype)))

    def forward_features(self, x: Any) -> torch.Tensor:
        return self.inner.layer_outputs(x, [self.layer])[self.layer]

    def embed(self, x: Any) -> torch.Tensor:
        return self.inner.embed_layers(x, [self.layer])[self.layer]

    def layer_groups(self) -> list[LayerGroup]:
        return [*self._kept, LayerGroup("head", list(self.classifier.parameters()))]

    def layer_modules(self) -> dict[str, nn.Module]:
        modules = self.inner.layer_modules()
        return {g.name: modules[g.name] for g in self._kept}

    def preprocess_id(self) -> str:
        return f"{self.inner.preprocess_id()}:cut={self.layer}"

    def source_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """None: the source head reads the final layer, which a cut network does not reach."""
        return None


def inner_spec(spec: BackboneSpec) -> BackboneSpec:
    """The spec of the whole backbone a cut one was made from (to rebuild a saved run)."""
    inner = copy.deepcopy(spec)
    inner.name = split_cut(spec.name)[0]
    inner.feature_dim = int(inner.extra.pop("inner_feature_dim", spec.feature_dim))
    inner.extra.pop("cut", None)
    return inner


class CutFamily(BackboneFamily):
    """``NAME@GROUP``: backbone NAME (of any family) cut after its layer group GROUP."""

    order = 20

    def claims_name(self, name: str) -> bool:
        return split_cut(name)[1] is not None

    def claims_spec(self, spec: BackboneSpec) -> bool:
        return bool(spec.extra.get("cut"))

    def check_name(self, name: str) -> None:
        base = split_cut(name)[0]
        family_for_name(base).check_name(base)

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        base, cut = split_cut(cfg.name)
        inner = create_backbone(
            dataclasses.replace(cfg, name=base), num_classes, image_size, max_length
        )
        return CutBackbone(inner, str(cut), num_classes, cfg.drop_rate)

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        inner = backbone_from_spec(inner_spec(spec), num_classes, run_dir)
        return CutBackbone(inner, str(spec.extra["cut"]), num_classes, spec=spec)


FAMILIES.add("cut", CutFamily(), help="a backbone cut after one of its layer groups (NAME@GROUP)")
