"""Ranking candidates and their layers on toy models: one row per layer group, LEEP's
"not applicable", the recommendation, the cache, the cut backbone and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from headstart import load
from headstart.backbones import CutBackbone, create_backbone
from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    DataConfig,
    RankConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    default_of,
)
from headstart.data import from_texts
from headstart.errors import ConfigError, HeadstartError
from headstart.features import EmbeddingCache, calibrate_batchnorm
from headstart.workflows.fit import fit
from headstart.workflows.rank import RankRow, _score_row, order_rows, run_rank

QUIET = Console(quiet=True)
runner = CliRunner()


def _rank(source, *backbones, cache=None, out=None, **kw):
    return run_rank(
        DataConfig(source=str(source)),
        RankConfig(backbones=list(backbones), **kw),
        out,
        cache=cache or EmbeddingCache(enabled=False),
        progress=False,
        console=QUIET,
    )


def test_layers_give_one_row_per_layer_group(image_folder, tmp_path):
    groups = list(create_backbone(BackboneConfig(name="toy-efficientnet"), 3).layer_modules())
    out = tmp_path / "rank"
    res = run_rank(
        DataConfig(source=str(image_folder)),
        RankConfig(backbones=["toy-efficientnet"], layers="all"),
        out,
        progress=False,
        console=QUIET,
    )
    assert sorted(r.candidate for r in res.rows) == sorted(f"toy-efficientnet@{g}" for g in groups)
    assert len(groups) >= 5
    # the features after the stem are narrower than the final ones
    dims = {r.layer: r.dim for r in res.rows}
    assert dims[groups[0]] < dims[groups[-1]]
    doc = json.loads((out / "rank.json").read_text())
    assert doc["recommended"] == res.recommended and doc["n"] == 36
    assert doc["rows"][0]["candidate"] == res.recommended
    html = (out / "report.html").read_text()
    assert 'data-figure="rank-scores"' in html and res.recommended in html
    # every row has every score and the seconds it took
    for r in res.rows:
        assert set(r.seconds) == set(default_of(RankConfig, "scores"))


def test_named_layers_and_unknown_layer(image_folder):
    res = _rank(image_folder, "toy-efficientnet", layers="blocks.1,blocks.3")
    assert [r.layer for r in res.rows] == ["blocks.1", "blocks.3"]
    with pytest.raises(ConfigError, match=r"blocks\.9"):
        _rank(image_folder, "toy-efficientnet", layers="blocks.9")
    with pytest.raises(HeadstartError, match="nope"):
        _rank(image_folder, "toy-efficientnet@nope")


def test_leep_is_not_applicable_without_a_source_head(image_folder):
    res = _rank(image_folder, "toy-efficientnet", "toy-efficientnet@blocks.2")
    full, layer = (next(r for r in res.rows if r.layer == x) for x in (None, "blocks.2"))
    assert full.scores["leep"] is not None and full.scores["nce"] is not None  # source head
    assert layer.scores["leep"] is None
    assert "not applicable" in layer.notes["leep"] and "intermediate layer" in layer.notes["leep"]


def test_text_candidates_have_no_source_head(tmp_path):
    texts = [f"{w} {i} about {w}" for w in ("cats", "dogs", "fish") for i in range(8)]
    labels = [t.split()[0] for t in texts]
    res = run_rank(
        DataConfig(source="x"),
        RankConfig(backbones=["toy-bert", "toy-bert@layer.0"]),
        progress=False,
        console=QUIET,
        samples=from_texts(texts, labels),
        cache=EmbeddingCache(enabled=False),
    )
    assert len(res.rows) == 2
    reasons = {r.candidate: r.notes["leep"].split("; ")[1] for r in res.rows}
    assert reasons["toy-bert"] == "toy-bert is a text encoder without a source classification head"
    assert "intermediate layer" in reasons["toy-bert@layer.0"]
    for r in res.rows:
        assert r.scores["logme"] is not None and r.scores["knn"] is not None


def test_random_features_rank_last_where_the_signal_is_known():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    signal = np.eye(4)[y] @ rng.normal(size=(4, 32)) * 2 + rng.normal(size=(100, 32))
    weak = np.eye(4)[y] @ rng.normal(size=(4, 32)) * 0.5 + rng.normal(size=(100, 32))
    random = rng.normal(size=(100, 32))
    scores = ["logme", "hscore", "hscore-shrink", "knn", "linear"]
    rows = []
    for name, x in (("random", random), ("signal", signal), ("weak", weak)):
        row = RankRow(name, name, None, True, 32)
        _score_row(row, x, y, None, scores)
        rows.append(row)
    for s in scores:
        assert [r.candidate for r in order_rows(rows, s)] == ["signal", "weak", "random"], s


def test_ranking_with_a_random_candidate_and_the_cache(image_folder, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = _rank(image_folder, "toy-efficientnet", "random:toy-efficientnet", cache=cache)
    by_name = {r.candidate: r for r in first.rows}
    assert set(by_name) == {"toy-efficientnet", "random:toy-efficientnet"}
    assert by_name["random:toy-efficientnet"].scores["leep"] is None  # random: no source head
    assert not by_name["toy-efficientnet"].cached
    again = _rank(image_folder, "toy-efficientnet", cache=cache)
    assert again.rows[0].cached and cache.hits == 1
    assert again.rows[0].scores["logme"] == pytest.approx(
        by_name["toy-efficientnet"].scores["logme"]
    )


def test_max_per_class_subsamples(image_folder):
    res = _rank(image_folder, "toy-efficientnet", max_per_class=5, scores=["knn"], score="knn")
    assert res.n == 15


def test_recommending_score_must_be_computed():
    with pytest.raises(ConfigError, match="recommending score"):
        RankConfig(backbones=["a"], scores=["knn"], score="logme")


def test_layer_outputs_stop_after_the_deepest_layer_asked_for():
    bb = create_backbone(BackboneConfig(name="toy-efficientnet"), 3).eval()
    modules = bb.layer_modules()
    calls = []
    last = list(modules.values())[-1]
    handle = last.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    out = bb.embed_layers(x, ["blocks.1"])
    assert out["blocks.1"].shape[0] == 2 and not calls
    full = bb.embed_layers(x, [list(modules)[-1]])
    handle.remove()
    assert calls and torch.allclose(full[list(modules)[-1]], bb.embed(x), atol=1e-5)


def test_calibrated_batchnorm_holds_the_data_statistics():
    bb = create_backbone(BackboneConfig(name="toy-resnet", pretrained=False), 3)
    x = torch.rand(12, 3, 32, 32)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(12, dtype=torch.long))
    assert calibrate_batchnorm(bb, ds, batch_size=4, progress=False) > 0
    bn = bb.model.conv1[1]  # the first BatchNorm: its input is the first convolution's output
    with torch.no_grad():
        pre = bb.model.conv1[0](x)
    torch.testing.assert_close(bn.running_mean, pre.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert bn.momentum == 0.1  # restored


def test_a_cut_backbone_trains_and_reloads(image_folder, tmp_path):
    out = tmp_path / "run"
    cfg = RunConfig(
        data=DataConfig(source=str(image_folder)),
        backbone=BackboneConfig(name="toy-efficientnet@blocks.2"),
        strategy=StrategyConfig(name="lp-ft", head="logistic"),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    result = fit(cfg, out, progress=False, console=QUIET)
    bb = result.backbone
    assert isinstance(bb, CutBackbone)
    assert [g.name for g in bb.layer_groups()][-2:] == ["blocks.2", "head"]
    after_cut = next(bb.inner.model.blocks[3].parameters())
    assert not after_cut.requires_grad
    model = load(out, device="cpu")
    files = sorted((image_folder / "circle").glob("*.png"))[:4]
    ref = result.backbone.cpu().eval()(
        torch.stack([model.backbone.make_dataset(model.samples(files))[i][0] for i in range(4)])
    )
    proba = model.predict_proba(files)
    np.testing.assert_allclose(proba, torch.softmax(ref / model.temperature, 1).detach(), atol=1e-5)
    # a linear probe of the cut network gets its own cache entries, not the whole network's
    assert bb.preprocess_id().endswith(":cut=blocks.2")


def test_cli_rank_prints_the_table_and_the_recommendation(image_folder, tmp_path):
    out = tmp_path / "rk"
    r = runner.invoke(
        app,
        [
            "rank",
            str(image_folder),
            "--backbones",
            "toy-efficientnet,toy-resnet",
            "--out",
            str(out),
            "--no-progress",
        ],
        env={"COLUMNS": "160"},
    )
    assert r.exit_code == 0, r.output
    assert (
        "recommended" in r.output
        and "logme" in r.output
        and "n/a" not in r.output.split("recommended")[1]
    )
    doc = json.loads((out / "rank.json").read_text())
    assert {row["candidate"] for row in doc["rows"]} == {"toy-efficientnet", "toy-resnet"}
    assert f"recommended {doc['recommended']}" in " ".join(r.output.split())
    bad = runner.invoke(app, ["rank", str(image_folder)])
    assert isinstance(bad.exception, ConfigError) and "at least one candidate" in str(bad.exception)
    bad = runner.invoke(
        app,
        [
            "rank",
            str(image_folder),
            "-b",
            "toy-efficientnet",
            "--scores",
            "lgme",
            "--score",
            "lgme",
        ],
    )
    assert isinstance(bad.exception, HeadstartError) and "logme" in str(bad.exception)


@pytest.mark.parametrize(
    ("arch", "size", "widths"),
    [
        ("swin_tiny_patch4_window7_224", 224, [96, 96, 192, 384, 768, 768]),  # NHWC stages
        ("test_mambaout", 64, [16, 16, 32, 48, 64]),  # channels-last throughout
        ("test_convnext", 64, [24, 24, 32, 48, 64]),  # a norm inside the classifier block
    ],
)
def test_layer_features_are_channel_means_on_other_layouts(arch, size, widths):
    bb = create_backbone(BackboneConfig(name=arch, pretrained=False), 3, image_size=size).eval()
    modules = bb.layer_modules()
    assert "head" not in modules  # a group that only runs in forward_head is not offered
    feats = bb.embed_layers(torch.randn(2, 3, size, size), list(modules))
    assert [f.shape[1] for f in feats.values()] == widths


def test_a_group_outside_forward_features_is_a_clear_error():
    bb = create_backbone(BackboneConfig(name="mobilenetv3_small_100", pretrained=False), 3, 64)
    assert "conv_head" not in " ".join(bb.layer_modules())
    with pytest.raises(HeadstartError, match="conv_head"):
        CutBackbone(bb, "conv_head", 3)


def test_cached_layer_features_equal_fresh_ones(image_folder, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = _rank(image_folder, "toy-efficientnet", layers="blocks.1,blocks.3", cache=cache)
    again = _rank(image_folder, "toy-efficientnet", layers="blocks.1,blocks.3", cache=cache)
    assert not first.rows[0].cached and all(r.cached for r in again.rows)
    assert cache.hits == 2  # one entry per layer
    for a, b in zip(first.rows, again.rows, strict=True):
        assert a.candidate == b.candidate and a.scores == b.scores
    # the two layers are stored apart (and apart from the final embedding)
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.safetensors"))) == 2


def test_every_candidate_is_checked_before_any_features(image_folder, monkeypatch):
    import headstart.workflows.rank as rank_mod

    computed = []
    monkeypatch.setattr(rank_mod, "_features", lambda *a, **k: computed.append(a) or ({}, False))
    with pytest.raises(HeadstartError, match="toy-efficientnet@GROUP"):
        _rank(image_folder, "toy-resnet", "toy-efficientnet@nope")
    with pytest.raises(HeadstartError, match="layer group names"):
        _rank(image_folder, "toy-resnet", layers=" , ")
    assert computed == []


def test_repeated_candidates_give_one_row(image_folder):
    res = _rank(
        image_folder,
        "toy-efficientnet",
        "toy-efficientnet@blocks.2",
        layers="all",
        scores=["knn"],
        score="knn",
    )
    names = [r.candidate for r in res.rows]
    assert len(names) == len(set(names)) == 6
