"""Backbones: the contract, timm vision backbones, offline weight resolution, toy models."""

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.vision import TimmBackbone
from headstart.backbones.zoo import (
    BACKBONES,
    BackboneEntry,
    backbone_from_spec,
    create_backbone,
    describe_backbones,
    load_weights_file,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneEntry",
    "BackboneSpec",
    "LayerGroup",
    "TimmBackbone",
    "backbone_from_spec",
    "create_backbone",
    "describe_backbones",
    "load_weights_file",
]
