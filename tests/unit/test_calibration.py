"""Temperature scaling and expected calibration error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headstart.evaluation.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability,
    softmax,
)


def _calibrated_logits(n: int = 4000, k: int = 5, seed: int = 0):
    """Logits and labels drawn so that softmax(logits) is the true class distribution."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, k))
    p = softmax(torch.as_tensor(logits))
    labels = np.array([rng.choice(k, p=row) for row in p])
    return torch.as_tensor(logits, dtype=torch.float32), labels


def test_ece_by_hand():
    # two bins used: confidence 0.9 (2 of 2 right) and 0.6 (1 of 2 right)
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 0])
    # |1.0 - 0.9| * 2/4 + |0.5 - 0.6| * 2/4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.1)
    r = reliability(probs, labels)
    assert sum(r["count"]) == 4


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    logits, labels = _calibrated_logits()
    overconfident = logits * 4.0  # a miscalibrated model: same argmax, far too sure
    ece_before = expected_calibration_error(softmax(overconfident), labels)
    t = fit_temperature(overconfident[:2000], labels[:2000])  # fit on "validation"
    ece_after = expected_calibration_error(softmax(overconfident[2000:], t), labels[2000:])
    assert t == pytest.approx(4.0, rel=0.15)
    assert ece_before > 0.15
    assert ece_after < 0.04
    # the predicted classes do not move
    assert (softmax(overconfident, t).argmax(1) == overconfident.numpy().argmax(1)).all()


def test_temperature_of_an_underconfident_model_is_below_one():
    logits, labels = _calibrated_logits(seed=1)
    t = fit_temperature(logits / 3.0, labels)
    assert t == pytest.approx(1 / 3.0, rel=0.15)


def test_no_validation_error_leaves_the_temperature_at_one():
    logits, labels = _calibrated_logits(n=30, seed=2)
    right = logits.numpy().argmax(1)  # labels the model gets all right
    assert fit_temperature(logits, right) == 1.0
    assert fit_temperature(logits, labels) != 1.0  # with errors it is fitted


def test_temperature_without_data_is_one():
    assert fit_temperature(torch.zeros(0, 3), np.zeros(0, dtype=int)) == 1.0


def test_predictions_use_the_fitted_temperature(image_folder, tmp_path):
    from headstart import load
    from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
    from headstart.workflows.fit import fit

    cfg = RunConfig(
        data=DataConfig(source=str(image_folder), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="linear-probe", head="logistic"),
        train=TrainConfig(epochs=1),
    )
    out = tmp_path / "run"
    result = fit(cfg, out, progress=False)
    t = json.loads((out / "calibration.json").read_text())["temperature"]
    assert t == result.metrics["calibration"]["temperature"] and t > 0
    cal = result.metrics["calibration"]["test"]
    assert {"ece_before", "ece_after", "reliability_before"} <= set(cal)
    model = load(out)
    files = sorted((image_folder / "circle").glob("*.png"))[:4]
    proba = model.predict_proba(files)
    raw = torch.softmax(model.logits(model.samples(files)), 1).numpy()
    scaled = torch.softmax(model.logits(model.samples(files)) / t, 1).numpy()
    assert np.allclose(proba, scaled, atol=1e-6)
    assert (proba.argmax(1) == raw.argmax(1)).all()
    if abs(t - 1.0) > 1e-3:
        assert not np.allclose(proba, raw, atol=1e-4)
    top = model.predict(files)[0]
    assert top["probabilities"][0] == pytest.approx(proba[0].max(), abs=1e-6)
