"""Few-shot strategies in fit (prototypes, prototypes-ft, setfit), SetFit's pair sampling,
episodic meta-training and the few-shot evaluation command, on toy models."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from headstart import load
from headstart.backbones import create_backbone
from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    ContrastiveConfig,
    DataConfig,
    FewShotConfig,
    MetaConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.errors import ConfigError, DataError, RunFolderError
from headstart.features import compute_embeddings
from headstart.fewshot.contrastive import sample_pairs
from headstart.fewshot.protonet import protonet_logits
from headstart.heads import class_means
from headstart.training.procedures import contrastive_finetune
from headstart.workflows.fewshot import run_fewshot
from headstart.workflows.fit import fit
from headstart.workflows.meta_train import parse_classes, run_meta_train
from tests.conftest import make_image_folder

runner = CliRunner()
QUIET = Console(quiet=True)


def _cfg(source: Path | str, strategy: str, backbone: str = "toy-efficientnet", **kw) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), **kw),
        backbone=BackboneConfig(name=backbone),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=2, batch_size=8),
    )


def _texts(tmp_path: Path, per_class: int = 4) -> Path:
    words = {"sport": "match goal team", "business": "market shares bank", "politics": "vote law"}
    rows = [
        {"text": f"{w} {i}", "label": label} for label, w in words.items() for i in range(per_class)
    ]
    path = tmp_path / "support.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# -- prototypes ---------------------------------------------------------------------------------
def test_prototypes_head_points_at_the_class_means_of_the_training_embeddings(tmp_path):
    folder = make_image_folder(tmp_path / "five", n_per_class=5)
    result = fit(_cfg(folder, "prototypes"), tmp_path / "run", progress=False, console=QUIET)
    bb = result.backbone.eval()
    x = compute_embeddings(bb, bb.make_dataset(_train_samples(folder)), 8, progress=False)
    y = np.repeat(np.arange(3), 5)
    means = class_means(x.numpy(), y, 3)
    w = bb.head().weight.detach().cpu().numpy()
    cos = (w / np.linalg.norm(w, axis=1, keepdims=True)) @ (
        means / np.linalg.norm(means, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-5)  # each row is its class mean
    assert (bb.head().bias.detach() == 0).all()
    # five per class is the few-shot regime: nothing held out, leave-one-out reported
    assert result.metrics["train"]["n"] == 15
    assert result.metrics["leave_one_out"]["n"] == 15
    assert 0.0 <= result.metrics["leave_one_out"]["accuracy"] <= 1.0


def _train_samples(folder: Path):
    from headstart.data import resolve_images

    return resolve_images(str(folder))


def test_one_shot_fits_predicts_and_says_why_it_cannot_score_itself(tmp_path):
    folder = make_image_folder(tmp_path / "one", n_per_class=1)
    test = make_image_folder(tmp_path / "test", n_per_class=4, seed=3)
    result = fit(
        _cfg(folder, "prototypes", test=str(test)), tmp_path / "run", progress=False, console=QUIET
    )
    assert result.metrics["leave_one_out"] == {"n": 0, "unscored_singletons": 3}
    assert result.metrics["test"]["n"] == 12
    # each single example is its own prototype: the model gets every one of them right
    predictor = load(tmp_path / "run", device="cpu")
    files = sorted(folder.rglob("*.png"))
    predicted = [row["labels"][0] for row in predictor.predict(files)]
    assert predicted == [f.parent.name for f in files]


def test_a_normal_strategy_still_refuses_one_example_per_class(tmp_path):
    folder = make_image_folder(tmp_path / "one", n_per_class=1)
    with pytest.raises(DataError):
        fit(_cfg(folder, "linear-probe"), tmp_path / "run", progress=False, console=QUIET)


def test_prototypes_ft_fine_tunes_then_takes_the_prototypes_again(tmp_path):
    folder = make_image_folder(tmp_path / "five", n_per_class=5)
    before = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    result = fit(_cfg(folder, "prototypes-ft"), tmp_path / "run", progress=False, console=QUIET)
    bb = result.backbone.eval().cpu()
    body_changed = any(
        not torch.equal(a, b.cpu())
        for (n, a), (_, b) in zip(before.state_dict().items(), bb.state_dict().items(), strict=True)
        if "classifier" not in n and a.dtype.is_floating_point
    )
    assert body_changed
    x = compute_embeddings(bb, bb.make_dataset(_train_samples(folder)), 8, progress=False).numpy()
    means = class_means(x, np.repeat(np.arange(3), 5), 3)
    w = bb.head().weight.detach().numpy()
    cos = np.sum(w * means, 1) / np.linalg.norm(w, axis=1) / np.linalg.norm(means, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-4)


# -- setfit -------------------------------------------------------------------------------------
def test_pair_sampling_is_bounded_balanced_and_correct():
    y = np.repeat(np.arange(2000), 3)  # 2000 classes: 36 million pairs if enumerated
    t = time.perf_counter()
    pairs, target = sample_pairs(y, 500, seed=0)
    assert time.perf_counter() - t < 5
    assert pairs.shape == (500, 2) and target.shape == (500,)
    assert target.sum() == 250
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    np.testing.assert_array_equal(same, target == 1)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    # one example per class: no positive pair exists, so all are negative
    pairs1, target1 = sample_pairs(np.arange(10), 40, seed=1)
    assert target1.sum() == 0 and (pairs1[:, 0] != pairs1[:, 1]).all()
    np.testing.assert_array_equal(sample_pairs(y, 50, seed=3)[0], sample_pairs(y, 50, seed=3)[0])
    with pytest.raises(DataError, match="2 classes"):
        sample_pairs(np.zeros(5, dtype=int), 10)


def _pair_gap(bb, ds, labels) -> float:
    """Mean cosine of same-class pairs minus that of different-class pairs."""
    from headstart.features import compute_embeddings

    e = torch.nn.functional.normalize(compute_embeddings(bb, ds, 32, progress=False), dim=1)
    cos = (e @ e.T).numpy()
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return float(cos[same & off].mean() - cos[~same].mean())


def test_contrastive_fine_tuning_pulls_classes_together_and_apart():
    from headstart.data import from_texts

    bb = create_backbone(BackboneConfig(name="toy-bert"), 3, max_length=16)
    texts = [f"{w} {i}" for w in ("aa", "bb", "cc") for i in range(4)]
    labels = np.repeat(np.arange(3), 4)
    ds = bb.make_dataset(from_texts(texts, labels))
    gap_before = _pair_gap(bb, ds, labels)
    cfg = ContrastiveConfig(pairs_per_example=40, pairs_per_step=80, texts_per_step=8, lr=1e-3)
    done = contrastive_finetune(bb, ds, cfg, "cpu", progress=False)
    assert done["pairs"] == 480 and done["steps"] == 6
    assert done["texts_encoded"] == 6 * 8  # each text of a step once, not 2 x 480
    assert done["positive_pairs"] == 240
    assert done["last_loss"] < done["first_loss"]
    assert _pair_gap(bb, ds, labels) > gap_before + 0.05
    img = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    with pytest.raises(ConfigError, match="text encoder"):
        contrastive_finetune(img, ds, cfg, "cpu", progress=False)


def test_setfit_strategy_writes_a_run_folder_with_the_tuned_encoder(tmp_path):
    import yaml

    support = _texts(tmp_path)
    cfg = _cfg(support, "setfit", backbone="toy-bert", max_length=16)
    result = fit(cfg, tmp_path / "run", progress=False, console=QUIET)
    m = result.metrics
    done = m["params"]["contrastive"]
    assert done["pairs"] == 12 * 100 and done["steps"] == 3
    # three steps of 512 noisy pairs: whether the loss of the last ones is below the first
    # step's is a matter of the seed (the learning is tested on more steps above)
    assert all(0.0 <= done[k] <= 4.0 for k in ("first_loss", "last_loss"))  # cosines vs 0/1
    assert "contrastive" in m["weights"] and "leave_one_out" not in m
    pretrained = create_backbone(BackboneConfig(name="toy-bert"), 3, max_length=16)
    assert result.backbone.spec.weights_sha256 != pretrained.spec.weights_sha256
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["strategy"]["head"] == "prototype"  # the head that was fitted
    assert written["spec"]["weights_sha256"] == result.backbone.spec.weights_sha256
    predictor = load(tmp_path / "run", device="cpu")
    texts = pd.read_csv(support)["text"].tolist()
    proba = predictor.predict_proba(texts)
    assert proba.shape == (12, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)


def test_setfit_from_one_text_per_class(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame(
        {"text": ["goal match", "bank shares", "vote law"], "label": ["s", "b", "p"]}
    ).to_csv(path, index=False)
    result = fit(_cfg(path, "setfit", backbone="toy-bert", max_length=16), tmp_path / "run",
                 progress=False, console=QUIET)  # fmt: skip
    assert result.metrics["params"]["contrastive"]["positive_pairs"] == 0  # none can exist
    assert result.metrics["train"]["accuracy"] == 1.0  # each text is its class's prototype


def test_prototype_head_conflicts_are_refused(tmp_path):
    folder = make_image_folder(tmp_path / "five", n_per_class=5)
    cfg = _cfg(folder, "prototypes")
    cfg.strategy.head = "logistic"
    with pytest.raises(ConfigError, match="no other head"):
        fit(cfg, tmp_path / "a", progress=False, console=QUIET)
    cfg = _cfg(folder, "finetune")
    cfg.strategy.head = "prototype"
    with pytest.raises(ConfigError, match="prototype"):
        fit(cfg, tmp_path / "b", progress=False, console=QUIET)


def test_leave_one_out_leaves_the_example_out_of_its_own_prototype():
    from headstart.heads.prototypes import leave_one_out_predictions, nearest_prototype

    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 1.0]])
    y = np.array([0, 0, 0, 1, 1])
    # with itself in its class mean, (0.6, 0.8) is nearer class 0; without, class 1
    assert nearest_prototype(x[2:3], class_means(x, y, 2))[0] == 0
    np.testing.assert_array_equal(leave_one_out_predictions(x, y), [0, 0, 1, 1, 1])


# -- meta-learning and few-shot evaluation ------------------------------------------------------
def test_protonet_logits_put_each_query_nearest_its_own_prototype():
    centres = torch.eye(3) * 5
    support = centres.repeat_interleave(2, 0) + 0.01 * torch.randn(6, 3)
    query = centres.repeat_interleave(4, 0) + 0.01 * torch.randn(12, 3)
    logits, target = protonet_logits(torch.cat([support, query]), 3, 2, torch.tensor(10.0))
    assert logits.shape == (12, 3)
    np.testing.assert_array_equal(target.numpy(), np.repeat(np.arange(3), 4))
    assert (logits.argmax(1) == target).all()


def test_parse_classes():
    names = [f"c{i}" for i in range(10)]
    assert parse_classes("0-4", names) == [0, 1, 2, 3, 4]
    assert parse_classes("5,7,c9", names) == [5, 7, 9]
    with pytest.raises(ConfigError):
        parse_classes("3-12", names)
    with pytest.raises(ConfigError):
        parse_classes("bag", names)
    with pytest.raises(ConfigError, match="low to high"):
        parse_classes("5-3", names)
    # a class named like a number is that class, not the index
    assert parse_classes("002,003", ["001", "002", "003"]) == [1, 2]
    assert parse_classes("2", ["001", "002", "003"]) == [2]  # no such name: an index


def _toy_meta(**kw) -> MetaConfig:
    """Meta-training of the toy EfficientNet on digits 0-2, checkpointed every 2 episodes."""
    base = {"classes": [0, 1, 2], "backbone": "toy-efficientnet", "image_size": 32, "ways": 3}
    return MetaConfig(**{**base, "checkpoint_every": 2, **kw})


def test_meta_train_writes_a_backbone_that_fewshot_uses(tmp_path):
    mcfg = _toy_meta(shots=2, queries=3, episodes=6, val_episodes=10)
    m = run_meta_train("digits", mcfg, tmp_path / "meta", console=QUIET, progress=False)
    assert m["classes"] == ["0", "1", "2"]
    assert not (tmp_path / "meta" / "checkpoint" / "last.safetensors").exists()
    assert 0 <= m["source_val_after"]["mean"] <= 1 and m["source_val_after"]["n"] == 10
    fcfg = FewShotConfig(
        backbones=["toy-efficientnet", str(tmp_path / "meta")],
        strategies=["prototypes", "logistic"],
        ways=3,
        shots=[1, 2],
        queries=3,
        episodes=12,
        classes=[5, 6, 7, 8],
        pool=10,
        image_size=32,
    )
    doc = run_fewshot("digits", fcfg, tmp_path / "fs", console=QUIET, progress=False)
    rows = doc["results"]
    assert len(rows) == 2 * 2 * 2
    assert {r["backbone"] for r in rows} == {"toy-efficientnet", str(tmp_path / "meta")}
    assert all(0 <= r["mean"] <= 1 and r["n"] == 12 and r["ci95"] >= 0 for r in rows)
    base = [r["mean"] for r in rows if r["backbone"] == "toy-efficientnet"]
    meta = [r["mean"] for r in rows if r["backbone"] != "toy-efficientnet"]
    assert base != meta  # the trained backbone's own embeddings, not the cached base ones
    assert json.loads((tmp_path / "fs" / "fewshot.json").read_text())["classes"][0] == "5"


def test_meta_train_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import headstart.strategies.steps as steps  # the protonet step of the training loop

    mcfg = _toy_meta(shots=1, queries=2, episodes=4, val_episodes=5)
    calls = {"n": 0}
    real = steps.protonet_logits

    def crash_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(steps, "protonet_logits", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_meta_train("digits", mcfg, tmp_path / "meta", console=QUIET, progress=False)
    assert (tmp_path / "meta" / "checkpoint" / "last.safetensors").is_file()
    calls["n"] = 10  # no more crashes
    console = Console(record=True, width=200)
    m = run_meta_train("digits", mcfg, tmp_path / "meta", console=console, progress=False)
    assert "from episode 2" in console.export_text()
    # the same weights as a run that never stopped
    whole = run_meta_train("digits", mcfg, tmp_path / "whole", console=QUIET, progress=False)
    assert whole["loss_last_20"] == pytest.approx(m["loss_last_20"], abs=1e-5)
    # the score before training, measured by the interrupted run, survives the resume
    assert m["source_val_before"] == pytest.approx(whole["source_val_before"])
    from safetensors.torch import load_file

    a = load_file(tmp_path / "meta" / "model.safetensors")
    b = load_file(tmp_path / "whole" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    # other settings do not continue that checkpoint
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        run_meta_train("digits", mcfg, tmp_path / "again", console=QUIET, progress=False)
    calls["n"] = 10
    other = dataclasses.replace(mcfg, lr=1e-3)
    with pytest.raises(RunFolderError, match="same meta-training settings"):
        run_meta_train("digits", other, tmp_path / "again", console=QUIET, progress=False)


def test_fewshot_and_meta_train_commands(tmp_path):
    r = runner.invoke(
        app,
        [
            "meta-train", "digits", "--classes", "0-2", "--backbone", "toy-efficientnet",
            "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "2",
            "--image-size", "32", "--out", str(tmp_path / "meta"), "--no-progress",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "fewshot", "digits", "--classes", "5-9", "--ways", "3", "--shots", "1",
            "--episodes", "5", "--pool", "20", "--image-size", "32", "--backbone",
            f"toy-efficientnet,{tmp_path / 'meta'}", "--out", str(tmp_path / "fs"),
            "--no-progress",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "95% CI" in r.output
    r = runner.invoke(app, ["fewshot", "digits", "--strategy", "magic", "--no-progress"])
    assert isinstance(r.exception, ConfigError) and "prototypes" in str(r.exception)


def test_fewshot_runs_every_strategy_on_texts_and_maps_episode_classes(tmp_path, monkeypatch):
    import headstart.workflows.fewshot as evaluate

    words = ["alpha", "beta", "gamma", "delta"]

    def bag_of_words(texts: list[str]) -> torch.Tensor:  # an encoder with known answers
        return torch.tensor(
            [[float(t.replace(".", " ").split().count(w)) for w in words] for t in texts]
        )

    rows = [{"text": f"{w} {w} {i}", "label": w} for w in words for i in range(8)]
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    kw = {"ways": 3, "shots": [1], "queries": 2, "episodes": 3, "pool": 8, "max_length": 16}
    ft = FewShotConfig(backbones=["toy-bert"], strategies=["prototypes-ft"], **kw)
    (row,) = run_fewshot(str(path), ft, None, console=QUIET, progress=False)["results"]
    assert row["n"] == 3 and 0 <= row["mean"] <= 1
    # setfit still trains the real toy encoder; the embeddings every strategy scores with are
    # replaced, so that any mix-up of episode classes shows as a wrong answer
    monkeypatch.setattr(
        evaluate, "embed_samples", lambda _b, samples, *a, **k: bag_of_words(samples.texts)
    )
    monkeypatch.setattr(evaluate, "embed_texts", lambda _b, t, *a, **k: bag_of_words(t).numpy())
    fcfg = FewShotConfig(
        backbones=["toy-bert"],
        strategies=["prototypes", "logistic", "zeroshot", "setfit"],
        **kw,
    )
    doc = run_fewshot(str(path), fcfg, None, console=QUIET, progress=False)
    got = {r["strategy"]: r for r in doc["results"]}
    assert set(got) == set(fcfg.strategies)
    assert all(r["n"] == 3 and r["mean"] == 1.0 for r in got.values()), {
        k: r["mean"] for k, r in got.items()
    }
    image = dataclasses.replace(fcfg, backbones=["toy-efficientnet"])
    with pytest.raises(ConfigError, match="a text backbone for text data"):
        run_fewshot(str(path), image, None, console=QUIET, progress=False)


def test_meta_train_refuses_a_freeze_that_leaves_nothing_to_train(tmp_path):
    with pytest.raises(ConfigError, match="nothing to train"):
        run_meta_train("digits", _toy_meta(shots=1, queries=2, episodes=2, freeze=99),
                       tmp_path / "m", console=QUIET, progress=False)  # fmt: skip


def test_an_image_run_folder_is_a_backbone_for_fit(tmp_path):
    mcfg = _toy_meta(shots=1, queries=2, episodes=2, val_episodes=3)
    run_meta_train("digits", mcfg, tmp_path / "meta", console=QUIET, progress=False)
    cfg = RunConfig(
        data=DataConfig(source="digits", per_class=2, max_test=50),
        backbone=BackboneConfig(name=str(tmp_path / "meta")),
        strategy=StrategyConfig(name="prototypes"),
    )
    result = fit(cfg, tmp_path / "run", progress=False, console=QUIET)
    spec = result.backbone.spec
    assert spec.arch == "test_efficientnet" and spec.input_size == 32  # the run's own size
    assert spec.weights.startswith("file:") and "meta" in spec.weights
    # its body is the meta-trained one, not the toy it started from
    meta = load(tmp_path / "meta", device="cpu").backbone.state_dict()
    # a frozen probe reads the backbone through its several-layer features wrapper
    got = getattr(result.backbone, "inner", result.backbone).state_dict()
    body = [k for k in meta if "classifier" not in k and meta[k].dtype.is_floating_point]
    assert all(torch.equal(meta[k], got[k].cpu()) for k in body)
    toy = create_backbone(BackboneConfig(name="toy-efficientnet"), 3, 32).state_dict()
    assert any(not torch.equal(toy[k], meta[k]) for k in body)


def test_setfit_refuses_an_image_backbone_before_writing_anything(tmp_path):
    images = make_image_folder(tmp_path / "images", n_per_class=3)
    with pytest.raises(ConfigError, match="trainable text encoder"):
        fit(_cfg(images, "setfit"), tmp_path / "run", progress=False, console=QUIET)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_auto_head_is_each_strategy_s_own():
    from headstart.strategies import build_strategy

    def head(strategy: str, asked: str = "auto") -> str:
        return build_strategy(StrategyConfig(name=strategy, head=asked)).head_name()

    assert head("setfit") == "prototype" and head("setfit", "linear") == "linear"
    assert head("linear-probe") == "linear" and head("prototypes") == "prototype"
    assert head("linear-probe", "prototype") == "prototype"


def test_setfit_steps_hold_distinct_texts():
    from headstart.fewshot.contrastive import step_texts as _step_texts

    labels = np.repeat(np.arange(4), 25)
    steps = _step_texts(labels, 10, 30, seed=0)
    assert all(len(set(t.tolist())) == 30 for t in steps)
    assert set(np.concatenate(steps).tolist()) == set(range(100))  # every text takes part
