"""The learning-rate range test: the suggestion rules on curves whose answer is known, the
sweep through the one loop (weights, trainability and random state put back bit for
bit), `headstart lr-find` and `fit --lr auto`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headstart.backbones import create_backbone
from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.errors import ConfigError
from headstart.strategies import build_strategy
from headstart.training import Trainer
from headstart.training.lr_find import (
    DIVERGE,
    RangeTest,
    rates,
    smooth,
    steepest_index,
    valley_index,
)
from headstart.workflows.fit import fit, range_test

runner = CliRunner()


def test_rates_grow_geometrically_from_start_to_end():
    r = rates(1e-6, 1.0, 7)
    assert r[0] == pytest.approx(1e-6) and r[-1] == pytest.approx(1.0)
    assert np.allclose(r[1:] / r[:-1], 10.0)


def test_smoothing_is_the_debiased_moving_average():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # debiased: no warm-up
    beta = 0.5
    s = smooth([1.0, 3.0], beta)
    assert s[1] == pytest.approx((beta * (1 - beta) * 1 + (1 - beta) * 3) / (1 - beta**2))


def test_valley_and_steepest_on_a_known_curve():
    # flat, then falling fastest at index 30, bottoming out at 45, then blowing up
    x = np.arange(60)
    loss = 2.0 - 1.5 / (1 + np.exp(-(x - 30) / 3.0)) + np.where(x > 45, 0.2 * (x - 45), 0.0)
    assert steepest_index(list(loss)) == 30
    v = valley_index(list(loss))
    assert 10 < v < 45 and loss[v] < loss[0]  # on the way down, before the bottom
    test = RangeTest(list(rates(1e-6, 1.0, 60)), list(loss), smoothed=list(loss))
    assert test.steepest == pytest.approx(test.lrs[30])
    assert test.suggestion == test.valley
    assert RangeTest(test.lrs, test.losses, list(loss), method="steepest").suggestion == (
        test.steepest
    )


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    bb = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 3, 32, 32, generator=g)
    y = torch.arange(48) % 3
    x[y == 1] += 1.0
    return bb, torch.utils.data.TensorDataset(x, y)


@pytest.mark.parametrize("strategy", ["finetune", "gradual", "ewc", "lora"])
def test_the_sweep_puts_weights_trainability_and_random_state_back_bitwise(strategy):
    bb, ds = _toy()
    s = build_strategy(StrategyConfig(name=strategy))
    bb = s.wrap_backbone(bb, 3)
    s.prepare_model(bb)
    groups = s.param_groups(bb)
    from headstart.strategies import apply_freeze

    apply_freeze(bb, groups)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    trains = [p.requires_grad for p in bb.parameters()]
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    cfg = TrainConfig(batch_size=8, checkpoint=False)
    test = Trainer(cfg).range_test(bb, groups, ds, s, steps=40, end=100.0)
    assert len(test.lrs) >= 10 and np.all(np.diff(test.lrs) > 0)
    after = bb.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    assert [p.requires_grad for p in bb.parameters()] == trains
    assert torch.equal(torch.rand(3), expected_draw)  # the random state as it was


def test_the_sweep_trains_and_stops_when_the_loss_diverges():
    bb, ds = _toy()
    groups = build_strategy(StrategyConfig(name="finetune")).param_groups(bb)
    cfg = TrainConfig(batch_size=8, checkpoint=False, label_smoothing=0.0)
    test = Trainer(cfg).range_test(bb, groups, ds, None, steps=120, start=1e-5, end=1e4)
    assert test.stopped.startswith("the loss diverged")
    assert len(test.lrs) < 120  # stopped before the end of the sweep
    assert test.smoothed[-1] > DIVERGE * min(test.smoothed)
    assert min(test.smoothed) < test.smoothed[0]  # it learned somewhere on the way
    assert test.lrs[0] < test.suggestion < test.lrs[-1]


def test_bad_sweep_settings_are_clear_errors():
    bb, ds = _toy()
    groups = build_strategy(StrategyConfig(name="finetune")).param_groups(bb)
    trainer = Trainer(TrainConfig(batch_size=8, checkpoint=False))
    for kwargs, match in (
        ({"start": 1.0, "end": 0.1}, "start rate < end rate"),
        ({"steps": 3}, "at least 10 steps"),
        ({"method": "minimum"}, "valley, steepest"),
    ):
        with pytest.raises(ConfigError, match=match):
            trainer.range_test(bb, groups, ds, None, **kwargs)


def _cfg(folder, strategy="lp-ft", **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(folder), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=2, batch_size=8, **train),
    )


def test_fit_lr_auto_trains_at_the_suggestion_as_fit_with_that_rate_would(image_folder, tmp_path):
    auto = fit(_cfg(image_folder, lr_find=True), tmp_path / "auto", progress=False)
    found = json.loads((tmp_path / "auto" / "lr_find.json").read_text())
    assert auto.metrics["params"]["lr_find"]["suggestion"] == found["suggestion"]
    import yaml

    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["train"]
    assert saved["lr"] == pytest.approx(found["suggestion"]) and saved["lr_find"] is True
    fixed = fit(_cfg(image_folder, lr=found["suggestion"]), tmp_path / "fixed", progress=False)
    # the sweep left nothing behind: the same run as one given the rate by hand
    assert auto.metrics["test"]["accuracy"] == fixed.metrics["test"]["accuracy"]
    a, b = auto.backbone.state_dict(), fixed.backbone.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert 'data-figure="lr-find"' in (tmp_path / "auto" / "report.html").read_text()


def test_lr_auto_in_a_config_file_means_the_range_test():
    cfg = TrainConfig(lr="auto")  # type: ignore[arg-type]
    assert cfg.lr_find and cfg.lr == TrainConfig().lr


def test_cli_lr_find_plots_and_suggests_and_trains_nothing(image_folder, tmp_path):
    out = tmp_path / "lr"
    args = ["lr-find", str(image_folder), "--backbone", "toy-efficientnet", "--image-size",
            "32", "--batch-size", "8", "--out", str(out), "--no-progress"]  # fmt: skip
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    test = json.loads((out / "lr_find.json").read_text())
    assert f"{test['suggestion']:.3g}" in r.output and "--lr auto" in r.output
    svg = (out / "lr_find.svg").read_text()
    assert svg.startswith("<svg") and "learning rate" in svg
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()


def test_lr_find_on_a_strategy_without_a_training_loop_is_a_clear_error(image_folder, tmp_path):
    with pytest.raises(ConfigError, match="trains weights in the training loop"):
        range_test(_cfg(image_folder, "linear-probe"), tmp_path / "lr", progress=False)


def test_a_bad_lr_on_the_command_line_is_a_clear_error(image_folder, tmp_path):
    r = runner.invoke(app, ["fit", str(image_folder), "--lr", "fast", "--out", str(tmp_path)])
    assert r.exit_code != 0
    assert "--lr as a number or auto" in r.output + str(r.exception)
