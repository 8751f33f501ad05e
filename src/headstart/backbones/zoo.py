"""The names this module held before the backbones were split by responsibility, for
existing imports: the catalog (:mod:`~headstart.backbones.catalog`), weights files and
digests (:mod:`~headstart.backbones.weights`), and family dispatch
(:mod:`~headstart.backbones.families`)."""

from headstart.backbones.catalog import BACKBONES, BackboneEntry, describe_backbones
from headstart.backbones.families import backbone_from_spec, create_backbone
from headstart.backbones.weights import StateDict, load_weights_file, sha256_file, sha256_state

__all__ = [
    "BACKBONES",
    "BackboneEntry",
    "StateDict",
    "backbone_from_spec",
    "create_backbone",
    "describe_backbones",
    "load_weights_file",
    "sha256_file",
    "sha256_state",
]
