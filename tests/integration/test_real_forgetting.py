"""Forgetting-aware and parameter-efficient strategies on the real offline backbones:
LoRA's defaults stay within 2% of the weights and its run folder is a small fraction of a
full model; progressive keeps ImageNet exactly; text runs measure similarity retention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart import load
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.workflows.fit import fit

pytestmark = pytest.mark.slow


def _text(strategy: str) -> RunConfig:
    return RunConfig(
        data=DataConfig(
            source="bbc-news", test="bbc-news:test", per_class=5, max_test=60, max_length=64
        ),
        backbone=BackboneConfig(name="minilm-l6"),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=1, batch_size=8),
    )


def _images(strategy: str) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="fashion-mnist", per_class=5, max_test=100, image_size=64),
        backbone=BackboneConfig(name="efficientnet_lite0"),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=1, batch_size=16),
    )


def test_lora_on_minilm_is_small_and_reloads_identically(tmp_path):
    result = fit(_text("lora"), tmp_path / "run", progress=False)
    m = result.metrics
    assert m["params"]["strategy"]["lora"]["rank"] == 8  # the default fits the budget
    assert m["params"]["train"]["trainable"] <= 0.02 * m["params"]["train"]["total"]
    kept = m["forgetting"]
    assert kept["measure"] == "similarity_retention" and 0.0 < kept["kept"] < 1.0
    model_mb = (tmp_path / "run" / "model.safetensors").stat().st_size / 2**20
    assert model_mb < 0.05 * 86  # MiniLM-L6 in float32 is about 86 MB
    texts = ["The central bank raised interest rates.", "The striker scored twice."]
    again = load(tmp_path / "run", device="cpu", engine="torch")
    samples = again.samples(texts)
    bb = result.backbone.eval()
    ds = bb.make_dataset(samples)
    x = bb.collate_fn()([ds[i] for i in range(2)])[0]
    with torch.no_grad():
        assert torch.allclose(bb(x), again.logits(samples), atol=1e-5)


def test_lora_and_progressive_on_efficientnet_lite0(tmp_path):
    lora = fit(_images("lora"), tmp_path / "lora", progress=False).metrics
    assert lora["params"]["strategy"]["lora"]["rank"] == 2  # lowered to fit 1.5%
    assert lora["params"]["train"]["trainable"] <= 0.02 * lora["params"]["train"]["total"]
    assert (tmp_path / "lora" / "model.safetensors").stat().st_size < 0.05 * 13.5 * 2**20
    prog = fit(_images("progressive"), tmp_path / "prog", progress=False).metrics
    assert prog["forgetting"]["top1_agreement"] == 1.0
    assert prog["forgetting"]["source_classes"] == 1000
    assert np.isfinite(prog["test"]["accuracy"]) and prog["test"]["accuracy"] > 0.2
