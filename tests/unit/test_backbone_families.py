"""Backbone families: a family registered from outside creates and rebuilds through
create_backbone / backbone_from_spec; unknown kinds get did-you-mean errors; every
backbone answers source_head()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from headstart.backbones import (
    BACKBONES,
    FAMILIES,
    Backbone,
    BackboneEntry,
    BackboneFamily,
    BackboneSpec,
    CutBackbone,
    LayerGroup,
    ProbeFeaturesBackbone,
    backbone_from_spec,
    catalog,
    create_backbone,
    families,
)
from headstart.config import BackboneConfig
from headstart.data import ImageDataset, build_transform
from headstart.errors import UnknownNameError
from headstart.registry import Registry


class FlatBackbone(Backbone):
    """A toy family's backbone: flattened pixels, one linear layer, a linear head."""

    def __init__(self, spec: BackboneSpec, num_classes: int, width: int) -> None:
        super().__init__()
        self.spec = spec
        spec.feature_dim = width
        self.body = nn.Linear(3 * spec.input_size * spec.input_size, width)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Any) -> torch.Tensor:
        return self.classifier(self.embed(x))

    def forward_features(self, x: Any) -> torch.Tensor:
        return self.body(x.flatten(1))

    def embed(self, x: Any) -> torch.Tensor:
        return self.forward_features(x)

    def head(self) -> nn.Module:
        return self.classifier

    def reset_head(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.spec.feature_dim, num_classes)

    def layer_groups(self) -> list[LayerGroup]:
        return [
            LayerGroup("body", list(self.body.parameters())),
            LayerGroup("head", list(self.classifier.parameters())),
        ]

    def make_dataset(self, samples: Any, train: bool = False, augment: str = "none") -> Any:
        spec = self.spec
        return ImageDataset(samples, build_transform(spec.input_size, spec.mean, spec.std))


class FlatFamily(BackboneFamily):
    """Builds FlatBackbones; the width comes from the entry's create_kwargs."""

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        entry = catalog.entry_for(cfg.name)
        spec = BackboneSpec(name=cfg.name, arch=entry.arch, input_size=image_size or 8)
        width = int(dict(entry.create_kwargs)["width"])
        spec.extra.update(kind="flat", width=width)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return FlatBackbone(spec, num_classes, width)

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        return FlatBackbone(spec, num_classes, int(spec.extra["width"]))


@pytest.fixture
def flat_family(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy family and a named backbone of it, in copies of the registries."""
    fams: Registry[BackboneFamily] = Registry("backbone kind")
    for name in FAMILIES.names():
        fams.add(name, FAMILIES.get(name))
    fams.add("flat", FlatFamily(), help="flattened pixels (tests)")
    names: Registry[BackboneEntry] = Registry("backbone")
    for name in BACKBONES.names():
        names.add(name, BACKBONES.get(name))
    entry = BackboneEntry(arch="flat", description="toy", input_size=8, kind="flat")
    entry.create_kwargs = (("width", 5),)
    names.add("flat-5", entry)
    monkeypatch.setattr(families, "FAMILIES", fams)
    monkeypatch.setattr(catalog, "BACKBONES", names)


def test_a_registered_family_creates_and_rebuilds(flat_family):
    bb = create_backbone(BackboneConfig(name="flat-5"), 3, image_size=6)
    assert isinstance(bb, FlatBackbone) and bb.spec.feature_dim == 5
    assert bb.spec.extra["kind"] == "flat" and bb.spec.input_size == 6
    x = torch.randn(2, 3, 6, 6)
    assert bb(x).shape == (2, 3)
    spec = BackboneSpec.from_dict(bb.spec.to_dict())  # as read back from a run folder
    rebuilt = backbone_from_spec(spec, 3)
    assert isinstance(rebuilt, FlatBackbone)
    rebuilt.load_state_dict(bb.state_dict())
    assert torch.equal(rebuilt(x), bb(x))


def test_wrapper_families_wrap_a_new_family(flat_family):
    bb = create_backbone(BackboneConfig(name="flat-5@body"), 4, image_size=6)
    assert isinstance(bb, CutBackbone) and isinstance(bb.inner, FlatBackbone)
    rebuilt = backbone_from_spec(BackboneSpec.from_dict(bb.spec.to_dict()), 4)
    assert isinstance(rebuilt, CutBackbone) and isinstance(rebuilt.inner, FlatBackbone)


def test_a_spec_of_an_unknown_kind_is_a_did_you_mean_error():
    spec = BackboneSpec(name="x", arch="x", extra={"kind": "timn"})
    with pytest.raises(UnknownNameError, match="did you mean 'timm'") as e:
        backbone_from_spec(spec, 3)
    assert "Known backbone kinds:" in str(e.value) and "onnx" in str(e.value)


def test_an_entry_of_an_unknown_kind_is_a_did_you_mean_error(flat_family):
    catalog.BACKBONES.add("oops", BackboneEntry(arch="x", description="", input_size=8, kind="hff"))
    with pytest.raises(UnknownNameError, match="did you mean 'hf'"):
        create_backbone(BackboneConfig(name="oops"), 3)


def test_every_registered_backbone_has_a_registered_family():
    assert {BACKBONES.get(n).kind for n in BACKBONES.names()} <= set(FAMILIES.names())
    assert {"timm", "hf", "onnx", "cut", "probe-features", "run-folder"} <= set(FAMILIES.names())


def test_old_specs_without_a_kind_go_to_timm_or_hf():
    image = BackboneSpec(name="toy-resnet", arch="test_resnet", input_size=32)
    assert families.family_for_spec(image) is FAMILIES.get("timm")
    text = BackboneSpec(name="t", arch="bert", modality="text")
    assert families.family_for_spec(text) is FAMILIES.get("hf")


# -- source_head ---------------------------------------------------------------------------------
def test_timm_source_head_is_the_loaded_source_classifier():
    bb = create_backbone(BackboneConfig(name="toy-resnet"), 3)
    head = bb.source_head()
    assert head is not None
    weight, bias = head
    assert weight.shape == (1000, bb.spec.feature_dim) and bias.shape == (1000,)
    assert weight.dtype == bias.dtype == torch.float32 and weight.device.type == "cpu"
    assert torch.equal(weight, bb.source_head_state["weight"])
    assert bb.source_backbone() is bb
    x = torch.randn(2, 3, 32, 32)
    bb.restore_source_head()
    assert torch.allclose(bb(x), bb.embed(x) @ weight.T + bias, atol=1e-5)


@pytest.mark.parametrize("name", ["toy-bert"])
def test_backbones_without_a_source_classifier_have_no_source_head(name):
    assert create_backbone(BackboneConfig(name=name), 3).source_head() is None
    random = create_backbone(BackboneConfig(name="toy-resnet", pretrained=False), 3)
    assert random.source_head() is None


def test_probe_features_delegate_the_source_head_and_a_cut_has_none():
    inner = create_backbone(BackboneConfig(name="toy-resnet"), 3)
    probe = ProbeFeaturesBackbone(inner, 3)
    head, inner_head = probe.source_head(), inner.source_head()
    assert head is not None and inner_head is not None
    assert torch.equal(head[0], inner_head[0]) and torch.equal(head[1], inner_head[1])
    assert probe.source_backbone() is inner
    cut = create_backbone(BackboneConfig(name="toy-resnet@layer2.0"), 3)
    assert cut.source_head() is None
