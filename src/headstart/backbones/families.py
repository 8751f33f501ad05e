"""Backbone families: each a registered factory that builds backbones of one kind from a
name (:meth:`BackboneFamily.create`) and rebuilds them from a run's saved spec
(:meth:`BackboneFamily.rebuild`).

Dispatch, in :func:`create_backbone` and :func:`backbone_from_spec`:

1. families with a syntax of their own (a run folder as a backbone, ``NAME@GROUP``, a
   spec recording a cut or probe features) are asked first, in the order of their
   ``order``, whether they claim the name (:meth:`~BackboneFamily.claims_name`) or the
   spec (:meth:`~BackboneFamily.claims_spec`);
2. otherwise a name goes to the family its catalog entry's ``kind`` names
   (:func:`~headstart.backbones.catalog.entry_for`), and a spec to the family its
   ``extra["kind"]`` names (specs without one, written by timm image backbones, go to
   ``timm``; text specs to ``hf``).

A new family is one module: subclass :class:`BackboneFamily`, register an instance with
``FAMILIES.add("kind", ...)``, give its entries (or its specs' ``extra["kind"]``) that
kind, and import the module from ``headstart/backbones/__init__.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from headstart.backbones.base import Backbone, BackboneSpec, domain_tokens_error
from headstart.backbones.catalog import entry_for
from headstart.config import BackboneConfig
from headstart.errors import BackboneError
from headstart.paths import is_dir, is_file
from headstart.registry import Registry

#: the family of specs that record no ``extra["kind"]``, by modality
DEFAULT_KIND = {"image": "timm", "text": "hf"}


class BackboneFamily:
    """A factory for the backbones of one family. Subclasses override :meth:`create`
    and/or :meth:`rebuild`; a family with a name or spec syntax of its own also overrides
    :meth:`claims_name` / :meth:`claims_spec`."""

    #: where a claiming family is asked, lower first (only matters among claimants)
    order: ClassVar[int] = 100
    #: its backbones can add words to their tokenizer (``Backbone.add_domain_tokens``)
    grows_vocabulary: ClassVar[bool] = False

    def claims_name(self, name: str) -> bool:
        """True if this family builds ``name`` whatever the catalog says (e.g. a folder)."""
        return False

    def claims_spec(self, spec: BackboneSpec) -> bool:
        """True if this family rebuilds ``spec`` whatever its ``extra["kind"]``."""
        return False

    def check_name(self, name: str) -> None:
        """Raise the error :meth:`create` would for a name it cannot build, as far as
        that is known without building anything (e.g. the base name of ``NAME@GROUP``)."""

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        """A backbone for ``cfg.name`` with resolved weights and a new head of
        ``num_classes`` outputs. ``image_size`` applies to image backbones, ``max_length``
        (tokens) to text ones; None keeps the backbone's default."""
        raise BackboneError(
            "a backbone family that builds backbones from a name",
            f"{type(self).__name__}, which only rebuilds saved runs",
            "pass a registered backbone name (`headstart backbones` lists them)",
        )

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        """The architecture of a saved run, from its spec, without pretrained weights
        (the run's state dict holds them); ``run_dir`` holds the assets it saved."""
        raise BackboneError(
            "a backbone family that rebuilds saved runs",
            f"{type(self).__name__}, which only builds backbones from a name",
            "re-run `headstart fit` with this version of headstart",
        )


#: backbone families by kind (the ``kind`` of catalog entries and of specs)
FAMILIES: Registry[BackboneFamily] = Registry("backbone kind")


def _claimants() -> list[BackboneFamily]:
    families = [FAMILIES.get(n) for n in FAMILIES.names()]
    return sorted(families, key=lambda f: f.order)


def family_for_name(name: str) -> BackboneFamily:
    """The family that builds backbone ``name`` (unknown names: did-you-mean errors)."""
    for family in _claimants():
        if family.claims_name(name):
            return family
    return FAMILIES.get(entry_for(name).kind)


def check_backbone(cfg: BackboneConfig) -> None:
    """What can be checked of a backbone before any data is read or weights are loaded:
    the name is one that can be built (an unknown name raises the did-you-mean error) and
    a ``weights`` file given exists, and ``add_domain_tokens`` asks it of a family that
    can add words. ``"auto"`` is resolved later, from the data."""
    if cfg.name != "auto":
        family = family_for_name(cfg.name)
        family.check_name(cfg.name)
        if cfg.add_domain_tokens and not family.grows_vocabulary:
            kind = next(k for k in FAMILIES.names() if FAMILIES.get(k) is family)
            raise domain_tokens_error(cfg.name, FAMILIES.help(kind))
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not is_file(path):
            found = f"{path} is a folder" if is_dir(path) else f"no file at {path}"
            raise BackboneError(
                "--weights naming an existing weights file (.safetensors, .pth, .pt, .bin, .ckpt)",
                found,
                "check the path, or drop --weights to use the backbone's own pretrained weights",
            )


def family_for_spec(spec: BackboneSpec) -> BackboneFamily:
    """The family that rebuilds a saved ``spec``."""
    for family in _claimants():
        if family.claims_spec(spec):
            return family
    kind = spec.extra.get("kind") or DEFAULT_KIND.get(spec.modality, "timm")
    return FAMILIES.get(str(kind))


def create_backbone(
    cfg: BackboneConfig,
    num_classes: int,
    image_size: int | None = None,
    max_length: int | None = None,
) -> Backbone:
    """Build a backbone with pretrained weights (resolved offline) and a new head.

    ``image_size`` applies to image backbones, ``max_length`` (tokens; default the
    entry's, capped at the model's limit) to text backbones. ``NAME@GROUP`` cuts the
    backbone after its layer group GROUP (see :class:`~headstart.backbones.CutBackbone`);
    an image run folder gives the backbone it trained."""
    family = family_for_name(cfg.name)
    return family.create(cfg, num_classes, image_size, max_length)


def backbone_from_spec(
    spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
) -> Backbone:
    """Rebuild the architecture of a saved run (no pretrained weights are loaded; the run's
    state dict holds them). Text backbones read their tokenizer from ``run_dir/tokenizer``."""
    return family_for_spec(spec).rebuild(spec, num_classes, run_dir)
