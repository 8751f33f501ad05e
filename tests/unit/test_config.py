"""Configs: validation on construction, YAML round trip, unknown keys rejected."""

from __future__ import annotations

import pytest

from headstart.config import (
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    default_of,
    help_for,
)
from headstart.errors import ConfigError
from headstart.registry import Registry


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig(
        data=DataConfig(source="digits", per_class=5),
        strategy=StrategyConfig(name="freeze:2", layer_decay=0.5),
        train=TrainConfig(epochs=3, lr=3e-4),
    )
    cfg.to_yaml(tmp_path / "c.yaml")
    assert RunConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_unknown_keys_and_sections_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"train": {"epochs": 2, "epoch": 3}})
    with pytest.raises(ConfigError, match="unknown section"):
        RunConfig.from_dict({"trian": {}})
    (tmp_path / "bad.yaml").write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="valid YAML"):
        RunConfig.from_yaml(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TrainConfig(epochs=0), "epochs > 0"),
        (lambda: TrainConfig(label_smoothing=1.5), "label_smoothing in"),
        (lambda: TrainConfig(device="gpu"), "device to be one of"),
        (lambda: DataConfig(val_fraction=0.6, test_fraction=0.5), "val_fraction \\+ test_fraction"),
        (lambda: DataConfig(augment="heavy"), "augment to be one of"),
        (lambda: StrategyConfig(layer_decay=1.5), "layer_decay in"),
        (lambda: StrategyConfig(bn_stats="train"), "bn_stats to be one of"),
    ],
)
def test_invalid_values_say_what_was_expected(make, match):
    with pytest.raises(ConfigError, match=match) as e:
        make()
    assert "Fix:" in str(e.value)


def test_help_and_defaults_come_from_the_fields():
    assert "macro-F1" in help_for(TrainConfig, "patience")
    assert default_of(TrainConfig, "epochs") == TrainConfig().epochs


def test_registry_names_and_duplicates():
    r: Registry[int] = Registry("thing")
    r.add("alpha", 1)
    r.add("beta", 2)
    assert r.names("a*") == ["alpha"] and "beta" in r and len(r) == 2
    with pytest.raises(ConfigError):
        r.add("alpha", 3)
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        r.get("alpah")
