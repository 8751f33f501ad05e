"""Integration tests on the real offline backbones (weights shipped in packages)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from headstart import load
from headstart.backbones import create_backbone
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.data import build_transform
from headstart.workflows.fit import fit

pytestmark = pytest.mark.slow

ESPRESSO, TRIPOD = 967, 872  # ImageNet-1k class indexes


def _top1(bb, img: np.ndarray) -> tuple[int, float]:
    tf = build_transform(bb.spec.input_size, bb.spec.mean, bb.spec.std, train=False)
    with torch.no_grad():
        p = torch.softmax(bb.eval()(tf(Image.fromarray(img).convert("RGB"))[None]), 1)[0]
    return int(p.argmax()), float(p.max())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_packaged_weights_classify_coffee_as_espresso(name):
    skimage = pytest.importorskip("skimage")
    bb = create_backbone(BackboneConfig(name=name), 3)
    assert bb.spec.weights.startswith("package:") and len(bb.spec.weights_sha256 or "") == 64
    bb.restore_source_head()
    cls, p = _top1(bb, skimage.data.coffee())
    assert cls == ESPRESSO and p > 0.5
    if name == "efficientnet_lite0":
        cls, p = _top1(bb, skimage.data.camera())
        assert cls == TRIPOD


def test_lp_ft_on_fashion_mnist_end_to_end(tmp_path):
    cfg = RunConfig(
        data=DataConfig(
            source="fashion-mnist",
            test="fashion-mnist:test",
            per_class=10,
            max_test=200,
            image_size=32,
        ),
        backbone=BackboneConfig(name="efficientnet_lite0"),
        # lp-ft starts from the default probe (fitted, cross-validated C); from the
        # standardised scikit-learn head (large folded weights) one epoch fell to 0.34
        strategy=StrategyConfig(name="lp-ft"),
        train=TrainConfig(epochs=1, batch_size=16),
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    acc = result.metrics["test"]["accuracy"]
    assert acc > 0.4  # chance is 0.1; pretrained features carry over even at 32 px
    model = load(tmp_path / "run", device="cpu")
    x = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    assert model.predict_proba(x).shape == (2, 10)


def test_cli_on_an_image_folder_with_the_real_backbone(tmp_path):
    """Fashion-MNIST written out as PNG folders, through fit / evaluate / predict."""
    from typer.testing import CliRunner

    from headstart.cli import app
    from headstart.data import load_bundled

    src = load_bundled("fashion-mnist", "test")
    for split, start in (("train", 0), ("test", 3000)):
        for c in range(3):  # three classes, 15 images each
            d = tmp_path / split / src.classes[c].replace("/", "-")
            d.mkdir(parents=True)
            idx = np.flatnonzero(src.labels == c)[start // 100 : start // 100 + 15]
            for i in idx:
                Image.fromarray(src.arrays[i]).save(d / f"{i}.png")
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "fit",
            str(tmp_path / "train"),
            "--backbone",
            "efficientnet_lite0",
            "--strategy",
            "lp-ft",
            "--head",
            "logistic",
            "--epochs",
            "1",
            "--image-size",
            "48",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["evaluate", str(out), str(tmp_path / "test"), "--output", str(tmp_path / "eval.json")]
    )
    assert r.exit_code == 0, r.output
    import json

    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["n"] == 45 and ev["accuracy"] > 0.6  # three very different classes
    files = sorted((tmp_path / "test").rglob("*.png"))[:2]
    r = runner.invoke(
        app,
        [
            "predict",
            str(out),
            *map(str, files),
            "--top-k",
            "3",
            "--output",
            str(tmp_path / "p.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 2 and len(rows[0]["labels"]) == 3
    assert abs(sum(rows[0]["probabilities"]) - 1.0) < 1e-4
