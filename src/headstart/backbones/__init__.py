"""Backbones: the contract, the catalog of named backbones, and the backbone families
(timm vision models, Hugging Face and ONNX text encoders, cut networks, several layers'
probe features, progressive networks, a run folder as a backbone), each registered in
``FAMILIES`` with a factory that creates and rebuilds its backbones; offline weight
resolution; toy models.

timm, transformers and onnxruntime are imported when a backbone of theirs is built.
"""

# the family modules register themselves in FAMILIES when imported
from headstart.backbones import (  # noqa: F401
    cut,
    hf_text,
    multilayer,
    onnx_text,
    progressive,
    run_folder,
    vision,
    word_vectors,
)
from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.catalog import BACKBONES, BackboneEntry, describe_backbones
from headstart.backbones.cut import CutBackbone
from headstart.backbones.families import (
    FAMILIES,
    BackboneFamily,
    backbone_from_spec,
    check_backbone,
    create_backbone,
)
from headstart.backbones.hf_text import HFTextBackbone
from headstart.backbones.multilayer import ProbeFeaturesBackbone
from headstart.backbones.onnx_text import OnnxTextBackbone
from headstart.backbones.progressive import ProgressiveBackbone
from headstart.backbones.text import TextBackbone, TextDataset
from headstart.backbones.vectors_io import WordVectors, read_vectors
from headstart.backbones.vision import TimmBackbone
from headstart.backbones.weights import load_weights_file
from headstart.backbones.word_vectors import WordVectorsBackbone

__all__ = [
    "BACKBONES",
    "FAMILIES",
    "Backbone",
    "BackboneEntry",
    "BackboneFamily",
    "BackboneSpec",
    "CutBackbone",
    "HFTextBackbone",
    "LayerGroup",
    "OnnxTextBackbone",
    "ProbeFeaturesBackbone",
    "ProgressiveBackbone",
    "TextBackbone",
    "TextDataset",
    "TimmBackbone",
    "WordVectors",
    "WordVectorsBackbone",
    "backbone_from_spec",
    "check_backbone",
    "create_backbone",
    "describe_backbones",
    "load_weights_file",
    "read_vectors",
]
