"""Integration tests on the real offline text encoders (weights shipped in packages)."""

from __future__ import annotations

import pytest

from headstart import load
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.errors import ConfigError
from headstart.workflows.fit import fit

pytestmark = pytest.mark.slow


def _cfg(backbone: str, strategy: str = "linear-probe") -> RunConfig:
    return RunConfig(
        data=DataConfig(
            source="bbc-news", test="bbc-news:test", per_class=5, max_test=100, max_length=128
        ),
        backbone=BackboneConfig(name=backbone),
        strategy=StrategyConfig(name=strategy, head="logistic"),
        train=TrainConfig(epochs=1, batch_size=8),
    )


@pytest.mark.parametrize("backbone", ["minilm-l6", "paraphrase-minilm-l3"])
def test_linear_probe_on_bbc_news_with_five_labels_per_class(tmp_path, backbone):
    result = fit(_cfg(backbone), tmp_path / "run", progress=False)
    assert result.metrics["test"]["accuracy"] > 0.7  # chance is 0.2
    model = load(tmp_path / "run", device="cpu")
    rows = model.predict(
        [
            "The central bank raised interest rates again.",
            "The striker scored twice in the cup final.",
        ]
    )
    assert [r["labels"][0] for r in rows] == ["business", "sports"]


def test_onnx_encoder_cannot_be_fine_tuned(tmp_path):
    with pytest.raises(ConfigError, match="linear-probe"):
        fit(_cfg("paraphrase-minilm-l3", "finetune"), tmp_path / "run", progress=False)


def test_embedder_takes_texts_longer_than_a_file_name(tmp_path):
    import numpy as np

    from headstart import PretrainedEmbedder

    texts = [
        "The blender works well and is quiet. " * 8,  # about 300 characters
        "word " * 1000,  # 5000 characters
        "Très bon produit, livré à temps. Отличный товар! 很好 " * 6,  # over 255 bytes
    ]
    Z = PretrainedEmbedder("minilm-l6").fit_transform(texts)
    assert Z.shape == (3, 384) and np.isfinite(Z).all()
