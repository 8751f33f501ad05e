"""Few-, one- and zero-shot on the real offline backbones, with small data."""

from __future__ import annotations

import pytest
from rich.console import Console

from headstart import load
from headstart.config import (
    BackboneConfig,
    DataConfig,
    FewShotConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    ZeroShotConfig,
)
from headstart.workflows.fewshot import run_fewshot
from headstart.workflows.fit import fit
from headstart.workflows.zeroshot import run_zeroshot

pytestmark = pytest.mark.slow
QUIET = Console(quiet=True)
BBC = ["business", "entertainment", "politics", "sports", "tech"]


def test_zero_shot_bbc_news_from_the_label_names(tmp_path):
    zcfg = ZeroShotConfig(
        labels=BBC, templates=["This article is about {}."], max_examples=150, max_length=128
    )
    res = run_zeroshot("bbc-news:test", zcfg, tmp_path / "zs", console=QUIET, progress=False)
    assert res.metrics is not None and res.metrics["accuracy"] > 0.8  # chance is 0.2
    rows = load(tmp_path / "zs", device="cpu").predict(["The striker scored twice in the final."])
    assert rows[0]["labels"][0] == "sports"


def test_setfit_on_bbc_news_with_four_labels_per_class(tmp_path):
    cfg = RunConfig(
        data=DataConfig(
            source="bbc-news", test="bbc-news:test", per_class=4, max_test=100, max_length=64
        ),
        backbone=BackboneConfig(name="minilm-l6"),
        strategy=StrategyConfig(name="setfit"),
        train=TrainConfig(seed=0),
    )
    result = fit(cfg, tmp_path / "run", progress=False, console=QUIET)
    assert result.metrics["test"]["accuracy"] > 0.75
    c = result.metrics["params"]["contrastive"]
    assert c["last_loss"] < c["first_loss"]


def test_one_shot_prototypes_on_fashion_mnist_with_efficientnet(tmp_path):
    cfg = RunConfig(
        data=DataConfig(
            source="fashion-mnist", test="fashion-mnist:test", per_class=1, max_test=300,
            image_size=64,
        ),
        backbone=BackboneConfig(name="efficientnet_lite0"),
        strategy=StrategyConfig(name="prototypes"),
    )  # fmt: skip
    result = fit(cfg, tmp_path / "run", progress=False, console=QUIET)
    assert result.metrics["test"]["accuracy"] > 0.35  # one image per class; chance is 0.1


def test_fewshot_episodes_on_fashion_mnist_held_out_classes():
    fcfg = FewShotConfig(
        backbones=["efficientnet_lite0"],
        strategies=["prototypes"],
        shots=[5],
        episodes=40,
        classes=[5, 6, 7, 8, 9],
        pool=40,
    )
    doc = run_fewshot("fashion-mnist", fcfg, None, console=QUIET, progress=False)
    (row,) = doc["results"]
    assert row["mean"] > 0.6 and 0 < row["ci95"] < 0.1
