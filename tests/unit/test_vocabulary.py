"""The vocabulary report of text backbones (subword tokenizers and word vectors) and
--add-domain-tokens on the toy BERT, whose character tokenizer splits a word of n letters
into n pieces: every count below is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headstart import load
from headstart.backbones import backbone_from_spec, create_backbone
from headstart.backbones.tokenization import run_tokenizer
from headstart.cli import app
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.errors import BackboneError, ConfigError
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


TEXTS = [
    "Ibuprofen helped the headache",
    "ibuprofen and paracetamol, then ibuprofen again",
    "the headache came back; paracetamol",
    "once: zzzzzzzzzz",  # seen once: never added
    "abc abc abc x2x2 x2x2",  # too short, and not letters only
]


def test_added_token_is_one_id_and_starts_as_the_mean_of_its_pieces():
    bb = create_backbone(BackboneConfig(name="toy-bert"), 2)
    tok = bb.tokenizer
    before_id = bb.preprocess_id()
    table = bb.encoder.get_input_embeddings().weight.detach().clone()
    pieces = {
        w: tok(w, add_special_tokens=False)["input_ids"] for w in ("paracetamol", "ibuprofen")
    }
    added = bb.add_domain_tokens(TEXTS, 2)
    # the most frequent words of 3+ pieces: ibuprofen x3, then the longer of headache and
    # paracetamol (both x2)
    assert added == ["ibuprofen", "paracetamol"]
    new = bb.encoder.get_input_embeddings().weight
    assert new.shape[0] == len(tok) == table.shape[0] + 2
    assert torch.equal(new[: table.shape[0]], table)  # the old rows untouched
    for word in added:
        (i,) = tok(word, add_special_tokens=False)["input_ids"]
        assert i >= table.shape[0]
        assert torch.allclose(new[i], table[pieces[word]].mean(0))
        # matched in any case (an uncased tokenizer), as a whole word only
        assert tok(word.capitalize(), add_special_tokens=False)["input_ids"] == [i]
        assert i not in tok(word + "x", add_special_tokens=False)["input_ids"]
    # the cache key changes with the tokenizer; the spec rebuilds the grown encoder
    assert bb.preprocess_id() != before_id
    assert bb.spec.extra["hf_config"]["vocab_size"] == len(tok)
    assert bb.spec.extra["added_tokens"] == added
    assert run_tokenizer(bb.spec, None).get_added_vocab() == tok.get_added_vocab()
    again = backbone_from_spec(bb.spec, 2)
    again.load_state_dict(bb.state_dict())
    assert again.tokenizer("ibuprofen", add_special_tokens=False)["input_ids"] == [len(tok) - 2]


def test_domain_words_follow_the_rule():
    bb = create_backbone(BackboneConfig(name="toy-bert"), 2)
    added = bb.add_domain_tokens(TEXTS, 10)
    # seen twice or more, letters only, 4 or more long: not zzzzzzzzzz (once), the and
    # abc (short), x2x2 (a digit); ibuprofen x3 first, then by pieces
    assert added == ["ibuprofen", "paracetamol", "headache"]
    assert bb.add_domain_tokens(TEXTS, 10) == []  # already whole tokens


def test_add_domain_tokens_is_a_clear_error_off_hugging_face_encoders(tmp_path):
    vectors = create_backbone(BackboneConfig(name="toy-vectors"), 2)
    with pytest.raises(BackboneError, match="minilm-l6") as e:
        vectors.add_domain_tokens(TEXTS, 3)
    assert "embed-train" in str(e.value)
    for name in ("toy-vectors", "toy-resnet"):
        cfg = RunConfig(
            data=DataConfig(source=str(tmp_path / "nothing.csv")),
            backbone=BackboneConfig(name=name, add_domain_tokens=3),
        )
        with pytest.raises(BackboneError, match="--add-domain-tokens"):
            fit(cfg, tmp_path / "run", progress=False)  # before any data is read
    with pytest.raises(ConfigError, match="add_domain_tokens >= 0"):
        BackboneConfig(name="toy-bert", add_domain_tokens=-1)


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


def test_fit_with_added_tokens_saves_a_run_that_predicts_the_same(tmp_path):
    data = _csv(tmp_path / "r.csv")
    cfg = RunConfig(
        data=DataConfig(source=str(data), text_cols=["review"], label_col="sentiment"),
        backbone=BackboneConfig(name="toy-bert", add_domain_tokens=3),
        strategy=StrategyConfig(name="finetune"),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    added = result.metrics["vocabulary"]["added_tokens"]
    assert len(added) == 3 and set(added) <= {w for ws in WORDS.values() for w in ws}
    assert (
        result.metrics["vocabulary"]["pieces_per_word_after"]
        < (result.metrics["vocabulary"]["pieces_per_word"])
    )
    model = load(tmp_path / "run", device="cpu")
    texts = ["excellent wonderful love", "Terrible refund, broken", *added]
    from headstart.features.predict import predict_logits

    bb = result.backbone.cpu().eval()
    ref = predict_logits(bb, bb.make_dataset(model.samples(texts)), 4)
    np.testing.assert_allclose(
        model.predict_proba(texts), torch.softmax(ref[0] / model.temperature, 1).numpy(), atol=1e-6
    )


def test_cli_add_domain_tokens(tmp_path):
    data = _csv(tmp_path / "r.csv")
    args = ["fit", str(data), "--text-col", "review", "--label-col", "sentiment"]
    args += ["--strategy", "linear-probe", "--head", "logistic", "--no-progress"]
    r = runner.invoke(
        app,
        [*args, "--backbone", "toy-bert", "--add-domain-tokens", "2", "--out", str(tmp_path / "a")],
    )
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "pieces per word" in out and "domain tokens 2 words added" in out
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert len(metrics["vocabulary"]["added_tokens"]) == 2
    r = runner.invoke(
        app,
        [
            *args,
            "--backbone",
            "toy-vectors",
            "--add-domain-tokens",
            "2",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert r.exit_code != 0 and isinstance(r.exception, BackboneError)
    assert "minilm-l6" in str(r.exception)
