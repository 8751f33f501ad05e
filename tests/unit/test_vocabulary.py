"""The vocabulary report of text backbones: subword tokenizers (the toy BERT's character
tokenizer splits a word of n letters into n pieces: every count below is exact) and word
vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from headstart.backbones import create_backbone
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.workflows.fit import fit

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_subword_report_counts_on_the_character_tokenizer():
    bb = create_backbone(BackboneConfig(name="toy-bert"), 2)
    # words (punctuation left out): cat x2 (3 pieces), dog (3), ibuprofen x2 (9), a (1),
    # and straße, whose ß the tokenizer lacks: one [UNK] piece
    report = bb.vocabulary_report(["Cat dog, ibuprofen!", "cat a ibuprofen straße"], top=5)
    assert report == {
        "kind": "subword",
        "vocabulary": len(bb.tokenizer),
        "tokens": 7,
        "distinct_words": 5,
        "pieces_per_word": pytest.approx(29 / 7),
        "split_word_rate": pytest.approx(5 / 7),
        "unk_rate": pytest.approx(1 / 7),
        # 3+ pieces, by frequency, then by pieces
        "most_fragmented": [["ibuprofen", 2, 9], ["cat", 2, 3], ["dog", 1, 3]],
    }


def test_word_vectors_report_counts_oov_tokens_and_words():
    bb = create_backbone(BackboneConfig(name="toy-vectors"), 2)
    # tokens: the drug was good , ibuprofen | ibuprofen zzzz helped: 9, 8 distinct,
    # out of the toy vocabulary: ibuprofen x2 and zzzz
    report = bb.vocabulary_report(["The drug was good, ibuprofen", "ibuprofen zzzz helped"])
    assert report["kind"] == "word vectors"
    assert (report["tokens"], report["distinct_words"]) == (9, 8)
    assert report["oov_token_rate"] == pytest.approx(3 / 9)
    assert report["oov_word_rate"] == pytest.approx(2 / 8)
    assert report["top_oov"][0] == ["ibuprofen", 2]


WORDS = {
    "positive": ["excellent", "wonderful", "love", "perfect"],
    "negative": ["terrible", "horrible", "broken", "refund"],
}


def _csv(path):
    rng = np.random.default_rng(0)
    rows = ["review,sentiment"]
    for label, words in WORDS.items():
        for _ in range(10):
            rows.append(f"{' '.join(rng.choice(words, size=5))},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("backbone", ["toy-bert", "toy-vectors"])
def test_text_fit_keeps_the_vocabulary_report(tmp_path, backbone):
    cfg = RunConfig(
        data=DataConfig(
            source=str(_csv(tmp_path / "r.csv")), text_cols=["review"], label_col="sentiment"
        ),
        backbone=BackboneConfig(name=backbone),
        strategy=StrategyConfig(name="linear-probe", head="logistic"),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    fit(cfg, tmp_path / "run", progress=False)
    vocab = json.loads((tmp_path / "run" / "metrics.json").read_text())["vocabulary"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert 'data-section="vocabulary"' in page
    if backbone == "toy-bert":
        assert vocab["kind"] == "subword" and vocab["split_word_rate"] == 1.0
        assert vocab["most_fragmented"][0][0] in page
    else:  # the toy vectors know love, excellent and terrible only
        assert vocab["kind"] == "word vectors" and vocab["oov_word_rate"] == pytest.approx(5 / 8)
        assert {w for w, _ in vocab["top_oov"]} == {
            "wonderful",
            "perfect",
            "horrible",
            "broken",
            "refund",
        }
        assert vocab["top_oov"][0][0] in page
