"""Small-data defaults: the fitted probe, no decisions on noise, --strategy auto, views."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from headstart.backbones import backbone_from_spec, create_backbone
from headstart.backbones.multilayer import ProbeFeaturesBackbone
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.data import from_arrays
from headstart.data.loading import prepare_data
from headstart.heads.probe import fit_probe, probe_gradient
from headstart.strategies.auto import FINETUNE_MIN_PER_CLASS, choose
from headstart.workflows.fit import fit

QUIET = Console(quiet=True)


def _clusters(n_per_class: int, dim: int, k: int = 3, seed: int = 0, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (k, dim))
    y = np.repeat(np.arange(k), n_per_class)
    return centres[y] + rng.normal(0, 1.0, (len(y), dim)), y


@pytest.mark.parametrize(("n", "dim"), [(30, 10), (8, 64)])  # more and fewer rows than dims
def test_probe_reaches_the_optimum_of_its_objective(n, dim):
    x, y = _clusters(n, dim)
    fitted = fit_probe(x, y, 3, c=0.5)
    w = fitted.weight.double().numpy() / fitted.scale  # back to the rescaled space
    grad = probe_gradient(w, fitted.bias.double().numpy(), x * fitted.scale, y, 0.5)
    assert np.abs(grad).max() < 1e-3 * max(1.0, np.abs(w).max())
    # and it is not the optimum of another C
    assert (
        np.abs(probe_gradient(w, fitted.bias.double().numpy(), x * fitted.scale, y, 5.0)).max()
        > 1e-2
    )


def test_probe_cross_validates_c_and_keeps_out_of_fold_logits():
    x, y = _clusters(6, 20, seed=1)
    fitted = fit_probe(x, y, 3)
    assert "cross-validation" in fitted.cv["policy"] and fitted.cv["folds"] == 5
    assert fitted.oof_logits is not None and fitted.oof_logits.shape == (18, 3)
    one = fit_probe(x[::6], y[::6], 3)  # one example per class: nothing to cross-validate
    assert one.c == 1.0 and one.oof_logits is None and "default C" in one.cv["policy"]


def test_probe_binary_and_views():
    x, y = _clusters(10, 8, k=2, seed=2)
    fitted = fit_probe([x, x + 0.01], y, 2)
    assert fitted.views == 2
    pred = (torch.as_tensor(x, dtype=torch.float32) @ fitted.weight.T + fitted.bias).argmax(1)
    assert (pred.numpy() == y).mean() > 0.9


def test_auto_rules():
    assert choose(1, "image", True, None, None).strategy == "linear-probe"
    assert choose(1, "text", True, None, None).strategy == "prototypes"
    assert choose(5, "image", True, 0.6, 0.7).strategy == "prototypes"
    assert choose(5, "image", True, 0.7, 0.7).strategy == "linear-probe"
    many = FINETUNE_MIN_PER_CLASS
    assert choose(many, "image", True, 0.7, 0.6).strategy == "lp-ft"
    assert choose(many, "image", False, 0.7, 0.6).strategy == "linear-probe"  # frozen graph
    assert choose(many, "image", True, 0.99, 0.6).strategy == "linear-probe"  # no room


def _noise_images(per_class: int, k: int = 3, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (per_class * k, size, size), dtype=np.uint8)
    return from_arrays(x, np.repeat(np.arange(k), per_class))


def _cfg(strategy: str = "auto", **data) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="arrays", test_fraction=0.0, **data),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=2, batch_size=16),
    )


def test_one_example_per_class_reads_no_validation_split(tmp_path):
    cfg = _cfg("finetune", per_class=1)
    data = prepare_data(cfg.data, QUIET, progress=False, source=_noise_images(12))
    assert len(data.train) == 3 and len(data.val) == 0
    assert "none held out" in data.policy["validation"]
    result = fit(cfg, tmp_path / "run", progress=False, console=QUIET, data=data)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").open()]
    assert [h["epoch"] for h in history] == [0, 1]  # the fixed budget, no early stop
    assert all(h["val_macro_f1"] is None or np.isnan(h["val_macro_f1"]) for h in history)
    assert result.metrics["params"]["best_epoch"] == 1  # the last epoch is kept
    assert result.metrics["policy"]["early_stopping"].startswith("off")


def test_a_large_validation_split_is_still_held_out():
    cfg = _cfg(val_fraction=0.3)
    data = prepare_data(cfg.data, QUIET, progress=False, source=_noise_images(40))
    assert len(data.val) == 3 * 12 and data.policy["validation"] == "held out"


def _fit_auto(out, per_class: int):
    data = prepare_data(_cfg().data, QUIET, False, _noise_images(per_class), few_shot=True)
    return fit(_cfg(), out, progress=False, console=QUIET, data=data)


def test_auto_picks_a_probe_at_one_per_class_and_fine_tunes_at_fifty(tmp_path):
    one = _fit_auto(tmp_path / "one", per_class=1)
    assert one.metrics["params"]["auto"]["strategy"] in ("linear-probe", "prototypes")
    assert one.metrics["strategy"] in ("linear-probe", "prototypes")
    many = _fit_auto(tmp_path / "many", per_class=50)
    auto = many.metrics["params"]["auto"]
    assert auto["strategy"] == "lp-ft" and auto["per_class"] >= 40
    assert "fine-tune" in auto["reason"] and many.metrics["strategy"] == "lp-ft"
    cfg_text = (tmp_path / "many" / "config.yaml").read_text()
    assert "name: lp-ft" in cfg_text and "image_size: 64" in cfg_text  # 16 px images -> 64


def _left_right(n: int, size: int = 32, seed: int = 0):
    """Two classes that are mirror images of each other: bright left or right half."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (2 * n, size, size), dtype=np.uint8)
    x[:n, :, : size // 2] += 150
    x[n:, :, size // 2 :] += 150
    return x, np.array(["left"] * n + ["right"] * n)


def test_mirrored_views_are_dropped_when_classes_are_mirror_images(tmp_path):
    x, y = _left_right(20)
    samples = from_arrays(x, (y == "right").astype(int))
    cfg = RunConfig(
        data=DataConfig(source="arrays", test_fraction=0.0, image_size=32),
        strategy=StrategyConfig(name="linear-probe"),
        backbone=BackboneConfig(name="toy-efficientnet", features="layers"),
    )
    data = prepare_data(cfg.data, QUIET, False, samples)
    result = fit(cfg, tmp_path / "run", progress=False, console=QUIET, data=data)
    spec = result.backbone.spec
    assert spec.extra["probe_features"]["tta"] == "none"  # mirrored views would merge classes
    assert result.metrics["train"]["accuracy"] > 0.95
    assert isinstance(result.backbone, ProbeFeaturesBackbone)
    rebuilt = backbone_from_spec(spec, 2)
    assert isinstance(rebuilt, ProbeFeaturesBackbone) and rebuilt.views == ("identity",)


def test_probe_features_concatenate_unit_scaled_layers_and_average_views():
    inner = create_backbone(BackboneConfig(name="toy-efficientnet"), 3, 32)
    bb = ProbeFeaturesBackbone(inner, 3, tta="hflip").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        one = bb.embed_view(x, "identity")
        flipped = bb.embed_view(x, "hflip")
        assert one.shape[1] == bb.spec.feature_dim
        n_layers = len(bb.layers)
        assert torch.allclose(one.norm(dim=1), torch.full((2,), n_layers**0.5), atol=1e-4)
        assert torch.allclose(bb.embed(x), (one + flipped) / 2, atol=1e-5)
        assert torch.allclose(bb.embed_view(x.flip(-1), "identity"), flipped, atol=1e-5)
        w, b = bb.head_weights()
        assert torch.allclose(bb(x), bb.embed(x) @ w.T + b, atol=1e-5)


def test_estimator_defaults_fit_a_few_dozen_separable_arrays():
    from headstart import TransferClassifier

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 60, (20, 24, 24)), rng.integers(190, 256, (20, 24, 24))])
    y = np.array(["dark"] * 20 + ["bright"] * 20)
    clf = TransferClassifier(backbone="toy-efficientnet").fit(x.astype(np.uint8), y)
    assert clf.strategy == "auto" and clf.metrics_["params"]["auto"]["strategy"]
    assert clf.score(x.astype(np.uint8), y) > 0.95
