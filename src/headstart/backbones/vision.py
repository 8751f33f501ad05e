"""Vision backbones: any timm architecture behind the Backbone contract."""

from __future__ import annotations

import re
from typing import Any

import timm
import torch
from timm.models import group_parameters
from torch import nn

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.data import ImageDataset, build_transform
from headstart.errors import BackboneError


def _group_name(param_names: list[str]) -> str:
    """A readable name for a group: its module prefixes ('blocks.3', 'conv_stem+bn1')."""
    by_top: dict[str, set[str]] = {}
    for n in param_names:
        parts = n.split(".")
        digits = by_top.setdefault(parts[0], set())
        if len(parts) > 2 and parts[1].isdigit():
            digits.add(parts[1])
    names = [f"{top}.{next(iter(d))}" if len(d) == 1 else top for top, d in by_top.items()]
    return "+".join(names[:3]) + ("+..." if len(names) > 3 else "")


class TimmBackbone(Backbone):
    """Wraps ``timm.create_model(arch)``; the head is timm's classifier."""

    def __init__(self, spec: BackboneSpec, num_classes: int, drop_rate: float = 0.0, **kw: Any):
        super().__init__()
        self.spec = spec
        # the source task's classifier (e.g. ImageNet), kept apart for forgetting checks
        self.source_head_state: dict[str, torch.Tensor] | None = None
        model: Any = timm.create_model(
            spec.arch, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **kw
        )
        if isinstance(model.get_classifier(), tuple):
            raise BackboneError(
                "a timm architecture with one classifier head",
                f"{spec.arch}, which has two (a distilled model)",
                "use its non-distilled variant, e.g. deit_tiny_patch16_224",
            )
        self.model: Any = model
        self.spec.feature_dim = int(model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def reset_head(self, num_classes: int) -> None:
        self.model.reset_classifier(num_classes)

    def make_dataset(self, samples: Any, train: bool = False, augment: str = "none") -> Any:
        spec = self.spec
        tf = build_transform(spec.input_size, spec.mean, spec.std, train=train, augment=augment)
        return ImageDataset(samples, tf)

    def preprocess_id(self) -> str:
        spec = self.spec
        return repr(build_transform(spec.input_size, spec.mean, spec.std, train=False))

    def restore_source_head(self) -> None:
        """Put the source task's classifier (e.g. ImageNet's 1000 classes) back as the head."""
        if self.source_head_state is None:
            raise BackboneError(
                "a backbone loaded with its source classifier",
                f"{self.spec.name} without one (weights: {self.spec.weights})",
                "use pretrained weights that include the classifier",
            )
        self.model.reset_classifier(self.spec.num_source_classes)
        self.head().load_state_dict(self.source_head_state)

    def layer_groups(self) -> list[LayerGroup]:
        named = dict(self.model.named_parameters())
        head_ids = {id(p) for p in self.head().parameters()}
        body = {n: p for n, p in named.items() if id(p) not in head_ids}
        body_names: list[list[str]]
        matcher = getattr(self.model, "group_matcher", None)
        if matcher is not None:
            groups = group_parameters(self.model, matcher(coarse=True))
            body_names = [[n for n in names if n in body] for names in groups.values()]
            body_names = [g for g in body_names if g]
        else:
            body_names = []
            for child, _ in self.model.named_children():
                g = [n for n in body if re.match(rf"^{re.escape(child)}\.", n)]
                if g:
                    body_names.append(g)
        groups_out = [LayerGroup(_group_name(g), [named[n] for n in g]) for g in body_names]
        head_names = [n for n, p in named.items() if id(p) in head_ids]
        groups_out.append(LayerGroup("head", [named[n] for n in head_names]))
        return groups_out
