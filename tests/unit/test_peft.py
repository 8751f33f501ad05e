"""Parameter-efficient fine-tuning: lora (through peft) and bitfit train only their
tensors, the run folder keeps only those, and loading merges them back exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from headstart.backbones import create_backbone
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.errors import ConfigError, RunFolderError
from headstart.runfolder import load
from headstart.storage import write_safetensors
from headstart.strategies import build_strategy
from headstart.strategies.lora import adaptable_layers, adapter_size
from headstart.workflows.fit import fit
from tests.conftest import make_image_folder
from tests.unit.test_text_pipeline import _csv


def _image_cfg(folder, strategy: str, **strategy_kw) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.25),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name=strategy, **strategy_kw),
        train=TrainConfig(epochs=2, batch_size=8),
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("peft") / "images", n_per_class=16)


@pytest.mark.parametrize("strategy", ["lora", "bitfit"])
def test_the_run_folder_keeps_only_what_trained_and_reloads_identically(folder, tmp_path, strategy):
    out = tmp_path / "run"
    result = fit(_image_cfg(folder, strategy), out, progress=False)
    bb = result.backbone
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        stored = set(f.keys())
    assert meta["stores"] == "trained-only" and meta["base_sha256"] == bb.spec.weights_sha256
    full = set(bb.state_dict())
    head = {n for n, p in bb.named_parameters() if any(p is q for q in bb.head().parameters())}
    assert head <= stored  # the new head is always kept
    kept = sum(t.numel() for t in load_file(str(out / "model.safetensors")).values())
    assert kept < 0.3 * sum(t.numel() for t in bb.state_dict().values())  # not the model
    assert stored - full == ({n for n in stored if ".lora_" in n} if strategy == "lora" else set())
    if strategy == "lora":
        assert any(".lora_A." in n for n in stored) and any(".lora_B." in n for n in stored)
        assert not any("base_layer" in n for n in stored)  # the frozen weights stay out
    else:
        assert all(
            n.endswith(("bias", "weight", "running_mean", "running_var", "num_batches_tracked"))
            for n in stored
        )
        assert "model.conv_stem.weight" not in stored
    trained = json.loads((out / "metrics.json").read_text())["params"]["train"]
    assert trained["trainable"] < 0.05 * trained["total"]
    # the merged model in memory and the one loaded from the folder give the same logits
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    again = load(out, device="cpu", engine="torch").backbone
    with torch.no_grad():
        assert torch.equal(bb.eval()(x), again.eval()(x))
    assert not any("lora" in n for n in dict(again.named_parameters()))  # merged: plain model


def test_the_body_changes_only_where_the_strategy_trains(folder, tmp_path):
    torch.manual_seed(0)
    base = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    result = fit(_image_cfg(folder, "bitfit"), tmp_path / "run", progress=False)
    after = result.backbone.state_dict()
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert changed and all(
        k.endswith("bias") or ".bn" in k or "head" in k or "classifier" in k for k in changed
    ), sorted(changed)[:5]


def test_a_base_with_another_sha256_or_missing_is_a_clear_error(folder, tmp_path):
    out = tmp_path / "run"
    fit(_image_cfg(folder, "lora"), out, progress=False)
    path = out / "model.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    expected = meta["base_sha256"]
    write_safetensors(tensors, path, {**meta, "base_sha256": "f" * 64})
    with pytest.raises(RunFolderError, match="f" * 64) as info:
        load(out, device="cpu")
    assert expected in str(info.value)  # names the weights it found, and their sha256
    assert "trained" in str(info.value)  # and why it needs them


def test_lora_on_a_text_encoder_reloads_identically(tmp_path):
    data = _csv(tmp_path / "reviews.csv")
    cfg = RunConfig(
        data=DataConfig(source=str(data), text_cols=["review"], label_col="sentiment"),
        backbone=BackboneConfig(name="toy-bert"),
        strategy=StrategyConfig(name="lora:4,8,0", lora_targets="query,value"),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    summary = result.metrics["params"]["strategy"]["lora"]
    assert (summary["rank"], summary["alpha"], summary["layers"]) == (4, 8.0, 4)  # 2 layers x q,v
    model = load(tmp_path / "run", device="cpu", engine="torch")
    texts = ["great love works", "awful broken refund", "okay fine box"]
    again = model.predict_proba(texts)
    assert np.allclose(again.sum(1), 1)
    samples = model.samples(texts)
    logits = model.logits(samples)
    result.backbone.eval()
    ds = result.backbone.make_dataset(samples)
    x = result.backbone.collate_fn()([ds[i] for i in range(3)])[0]
    with torch.no_grad():
        assert torch.allclose(result.backbone(x), logits, atol=1e-6)


def test_the_default_rank_fits_the_budget_and_targets_are_checked():
    bb = create_backbone(BackboneConfig(name="toy-resnet"), 3)
    layers = adaptable_layers(bb)
    assert all(getattr(m, "groups", 1) == 1 for m in layers.values())
    assert adapter_size(layers, 2) == 2 * adapter_size(layers, 1)
    s = build_strategy(StrategyConfig(name="lora"))
    s.prepare_model(bb)
    n_lora = sum(p.numel() for n, p in bb.named_parameters() if ".lora_" in n)
    assert n_lora == s.part.adapter_weights == adapter_size(layers, s.part.rank)
    s.merge_model(bb)
    assert not any(".lora_" in n for n, _ in bb.named_parameters())
    with pytest.raises(ConfigError, match="match none"):
        build_strategy(StrategyConfig(name="lora", lora_targets="nothing_here")).prepare_model(
            create_backbone(BackboneConfig(name="toy-resnet"), 3)
        )
    for bad in ("lora:0", "lora:2.5", "lora:4,8,1.5", "lora:x"):
        with pytest.raises(ConfigError, match="lora"):
            build_strategy(StrategyConfig(name=bad))


def test_an_exported_lora_run_is_the_merged_model(folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from headstart.config import ExportConfig
    from headstart.workflows.export import run_export

    out = tmp_path / "run"
    fit(_image_cfg(folder, "lora"), out, progress=False)
    doc = run_export(out, ExportConfig())
    assert doc["parity"]["n"] > 0 and doc["parity"]["max_abs_diff"] <= doc["parity"]["allowed"]
    onnx = load(out, device="cpu", engine="onnx")
    torch_model = load(out, device="cpu", engine="torch")
    x = onnx.samples([str(p) for p in sorted(folder.rglob("*.png"))[:6]])
    assert torch.equal(onnx.logits(x).argmax(1), torch_model.logits(x).argmax(1))


def test_a_trained_only_run_is_no_backbone_to_train_from(folder, tmp_path):
    from headstart.errors import BackboneError

    out = tmp_path / "run"
    fit(_image_cfg(folder, "bitfit"), out, progress=False)
    with pytest.raises(BackboneError, match="keeps only the tensors"):
        create_backbone(BackboneConfig(name=str(out)), 3)


@pytest.mark.parametrize("strategy", ["freeze:3", "gradual"])
@pytest.mark.parametrize("peft", ["lora", "bitfit"])
def test_peft_on_freeze_and_gradual_trains_only_efficient_tensors_of_open_groups(
    folder, tmp_path, strategy, peft
):
    out = tmp_path / "run"
    result = fit(_image_cfg(folder, strategy, peft=peft), out, progress=False)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["stores"] == "trained-only"
        stored = set(f.keys())
    s = build_strategy(StrategyConfig(name=strategy, peft=peft))
    bb = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    s.prepare_model(bb)
    groups = s.param_groups(bb)
    name_of = {id(p): n for n, p in bb.named_parameters()}
    if strategy == "freeze:3":  # the first three groups hold no trained tensor
        frozen = {name_of[id(p)] for g in groups[:3] for p in g.params}
        assert not (frozen & stored)
        assert not any(g.trainable for g in groups[:3]) and groups[3].trainable
        listed = {name_of[id(p)] for g in groups[3:-1] for p in g.params}
        assert peft == "bitfit" or all(".lora_" in n for n in listed)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    again = load(out, device="cpu", engine="torch").backbone
    with torch.no_grad():
        assert torch.equal(result.backbone.eval()(x), again.eval()(x))
    trained = result.metrics["params"]["train"]
    assert trained["trainable"] < 0.1 * trained["total"]


def test_peft_is_refused_where_it_makes_no_sense():
    for name in ("lora", "bitfit", "lp-ft", "finetune", "ewc"):
        with pytest.raises(ConfigError, match="--peft only with"):
            build_strategy(StrategyConfig(name=name, peft="lora"))
    with pytest.raises(ConfigError, match="peft"):
        StrategyConfig(name="gradual", peft="adapters")


def test_the_estimator_saves_and_loads_a_lora_model(tmp_path):
    from headstart import TransferClassifier
    from tests.conftest import toy_arrays

    X, y = toy_arrays(n_per_class=10)
    clf = TransferClassifier(
        backbone="toy-resnet", strategy="lora", image_size=32, epochs=2, verbose=False
    ).fit(X, y)
    path = clf.save(tmp_path / "model")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.metadata()["stores"] == "trained-only"
    again = TransferClassifier.load(path, device="cpu")
    assert np.allclose(again.predict_proba(X), clf.predict_proba(X), atol=1e-6)
