"""`headstart compare` on the real EfficientNet-Lite0 and Fashion-MNIST: the real ImageNet
head makes the forgetting check meaningful, and the verdict comes out of real models."""

from __future__ import annotations

import json

import pytest

from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.workflows.compare import cell_dir, run_compare

pytestmark = pytest.mark.slow


def test_compare_on_fashion_mnist_with_efficientnet_lite0(tmp_path):
    base = RunConfig(
        data=DataConfig(
            source="fashion-mnist", test="fashion-mnist:test", max_test=300, image_size=32
        ),
        backbone=BackboneConfig(name="efficientnet_lite0"),
        strategy=StrategyConfig(head="logistic"),
        train=TrainConfig(epochs=2, patience=2, batch_size=16),
    )
    spec = CompareConfig(strategies=["scratch", "linear-probe", "finetune"], budgets=[8], seeds=2)
    out = tmp_path / "cmp"
    result = run_compare(base, spec, out, progress=False)
    summary = result.summary["budgets"]["8"]
    # ImageNet features beat random weights at 8 labels per class, significantly
    assert summary["verdict"]["verdict"] == "helps"
    assert summary["gain_over_baseline"]["linear-probe"]["accuracy_gain"]["mean"] > 0.1
    probe = json.loads((cell_dir(out, "linear-probe", 8, 0) / "metrics.json").read_text())
    tuned = json.loads((cell_dir(out, "finetune", 8, 0) / "metrics.json").read_text())
    assert probe["forgetting"]["top1_agreement"] == 1.0
    assert tuned["forgetting"]["source_classes"] == 1000
    assert 0.0 < tuned["forgetting"]["top1_agreement"] < 1.0
    # 8 per class would give a validation split of 2 per class: none is drawn, so no
    # temperature is fitted on it (calibration is still reported on test)
    cal = tuned["calibration"]
    assert tuned["policy"]["validation"].startswith("none")
    assert cal["fitted_on"] == "none" and cal["temperature"] == 1.0 and "test" in cal
    assert (out / "report.html").stat().st_size > 50_000
