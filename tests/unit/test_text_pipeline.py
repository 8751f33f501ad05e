"""The text workflow end to end on the tiny toy BERT: CLI, run folder, estimator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from headstart import PretrainedEmbedder, TransferClassifier, load
from headstart.cli import app
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.errors import BackboneError, ConfigError, DataError
from headstart.workflows.fit import fit

runner = CliRunner()


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


WORDS = {
    "positive": ["great", "excellent", "love", "works", "perfect", "happy"],
    "negative": ["broken", "awful", "hate", "died", "refund", "angry"],
    "neutral": ["okay", "average", "fine", "arrived", "normal", "box"],
}


def _texts(n_per_class: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in WORDS.items():
        for _ in range(n_per_class):
            texts.append(" ".join(rng.choice(words, size=rng.integers(3, 9))))
            labels.append(label)
    return texts, labels


def _csv(path, n_per_class=12, seed=0):
    import pandas as pd

    texts, labels = _texts(n_per_class, seed)
    pd.DataFrame({"review": texts, "sentiment": labels, "id": range(len(texts))}).to_csv(
        path, index=False
    )
    return path


def test_cli_text_workflow(tmp_path):
    data = _csv(tmp_path / "reviews.csv")
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "fit",
            str(data),
            "--text-col",
            "review",
            "--label-col",
            "sentiment",
            "--backbone",
            "toy-bert",
            "--strategy",
            "finetune",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "checked 36 texts" in flat(r.output)
    assert (out / "tokenizer").is_dir() and (out / "model.safetensors").is_file()
    every = [p for p in out.rglob("*") if p.is_file() and p.name != ".headstart.lock"]
    allowed = {".safetensors", ".json", ".yaml", ".jsonl", ".txt", ".html"}
    assert {p.suffix for p in every} <= allowed

    r = runner.invoke(
        app,
        [
            "predict",
            str(out),
            "The battery died after two days",
            "Works great",
            "--top-k",
            "2",
            "--output",
            str(tmp_path / "p.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [row["input"] for row in rows] == ["The battery died after two days", "Works great"]
    assert all(len(row["labels"]) == 2 for row in rows)

    new = _csv(tmp_path / "new.csv", n_per_class=3, seed=5)
    r = runner.invoke(
        app,
        [
            "predict",
            str(out),
            str(new),
            "--text-col",
            "review",
            "--output",
            str(tmp_path / "p.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 10 and lines[1].split(",")[0].endswith("new.csv:row 1")

    r = runner.invoke(app, ["evaluate", str(out), str(new), "--output", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["n"] == 9


def _cfg(source, strategy="linear-probe", head="logistic", **data):
    return RunConfig(
        data=DataConfig(source=str(source), text_cols=["review"], label_col="sentiment", **data),
        backbone=BackboneConfig(name="toy-bert"),
        strategy=StrategyConfig(name=strategy, head=head),
        train=TrainConfig(epochs=1, batch_size=8),
    )


@pytest.mark.parametrize("strategy", ["linear-probe", "lp-ft", "freeze:1", "gradual"])
def test_text_strategies_and_identical_predictions_after_reload(tmp_path, strategy):
    data = _csv(tmp_path / "reviews.csv")
    result = fit(_cfg(data, strategy), tmp_path / "run", progress=False)
    assert result.metrics["test"]["n"] > 0
    model = load(tmp_path / "run", device="cpu")
    texts, _ = _texts(2, seed=9)
    again = load(tmp_path / "run", device="cpu")
    np.testing.assert_array_equal(model.predict_proba(texts), again.predict_proba(texts))
    # the reloaded model predicts what the trained one predicts
    import torch

    from headstart.features.predict import predict_logits

    samples = model.samples(texts)
    ref = predict_logits(result.backbone.cpu().eval(), result.backbone.make_dataset(samples), 4)
    np.testing.assert_allclose(
        model.predict_proba(texts), torch.softmax(ref[0] / model.temperature, 1).numpy(), atol=1e-6
    )


def test_long_texts_are_truncated_with_a_count(tmp_path):
    data = _csv(tmp_path / "reviews.csv")
    r = runner.invoke(
        app,
        [
            "fit",
            str(data),
            "--text-col",
            "review",
            "--label-col",
            "sentiment",
            "--backbone",
            "toy-bert",
            "--strategy",
            "linear-probe",
            "--head",
            "logistic",
            "--max-length",
            "12",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "truncated" in r.output and "to 12 tokens" in flat(r.output)


def test_text_preflight_through_the_cli(tmp_path):
    import pandas as pd

    texts, labels = _texts()
    texts[4] = ""
    texts[20] = "   "
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(tmp_path / "r.csv", index=False)
    args = [
        "fit",
        str(tmp_path / "r.csv"),
        "--text-col",
        "review",
        "--label-col",
        "sentiment",
        "--backbone",
        "toy-bert",
        "--strategy",
        "linear-probe",
        "--head",
        "logistic",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and "row 5" in str(r.exception) and "row 21" in str(r.exception)
    r = runner.invoke(app, [*args, "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert "2 bad skipped" in flat(r.output)


def test_unseen_labels_in_an_evaluation_file_are_listed(tmp_path):
    import pandas as pd

    data = _csv(tmp_path / "reviews.csv")
    fit(_cfg(data), tmp_path / "run", progress=False)
    pd.DataFrame({"review": ["fine", "meh"], "sentiment": ["positive", "mixed"]}).to_csv(
        tmp_path / "eval.csv", index=False
    )
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run"), str(tmp_path / "eval.csv")])
    assert r.exit_code != 0
    assert isinstance(r.exception, DataError) and "mixed" in str(r.exception)


def test_image_backbone_on_texts_is_a_clear_error(tmp_path):
    cfg = _cfg(_csv(tmp_path / "reviews.csv"))
    cfg.backbone.name = "toy-resnet"
    with pytest.raises(ConfigError, match="a text backbone for text data"):
        fit(cfg, tmp_path / "run", progress=False)


def test_estimator_and_embedder_take_lists_of_strings(tmp_path):
    texts, labels = _texts()
    clf = TransferClassifier(backbone="toy-bert", strategy="linear-probe", head="logistic")
    clf.fit(texts, labels)
    assert set(clf.classes_) == set(WORDS)
    proba = clf.predict_proba(texts[:5])
    assert proba.shape == (5, 3)
    assert 0.0 <= clf.score(texts, labels) <= 1.0
    clf.save(tmp_path / "m")
    again = TransferClassifier.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(again.predict_proba(texts[:5]), proba)
    Z = PretrainedEmbedder(backbone="toy-bert").fit_transform(texts)
    assert Z.shape == (36, 32)


def test_cls_pooling_takes_the_first_token():
    import torch

    from headstart.backbones import create_backbone
    from headstart.data import from_texts

    texts = ["works great", "the battery died after two days"]
    mean = create_backbone(BackboneConfig(name="toy-bert"), 2)
    cls = create_backbone(BackboneConfig(name="toy-bert", pooling="cls"), 2)
    ds = cls.make_dataset(from_texts(texts))
    batch, _ = cls.collate_fn()([ds[0], ds[1]])
    cls.eval()
    with torch.no_grad():
        hidden = cls.forward_features(batch)
        torch.testing.assert_close(cls.embed(batch), hidden[:, 0])
        assert not torch.allclose(mean.eval().embed(batch), hidden[:, 0])
    with pytest.raises(ConfigError):
        BackboneConfig(name="toy-bert", pooling="median")
    # max pools word vectors, not a transformer encoder's tokens
    with pytest.raises(BackboneError, match="mean or cls"):
        create_backbone(BackboneConfig(name="toy-bert", pooling="max"), 2)
