"""Backbones: the contract, timm vision backbones, Hugging Face / ONNX text backbones,
offline weight resolution, toy models."""

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.cut import CutBackbone
from headstart.backbones.text import HFTextBackbone, OnnxTextBackbone, TextBackbone, TextDataset
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
    "CutBackbone",
    "HFTextBackbone",
    "LayerGroup",
    "OnnxTextBackbone",
    "TextBackbone",
    "TextDataset",
    "TimmBackbone",
    "backbone_from_spec",
    "create_backbone",
    "describe_backbones",
    "load_weights_file",
]
