"""``headstart embed-train``: word vectors trained on a domain corpus from pretrained ones
(gensim), on the toy vectors and a small synthetic corpus."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from headstart.backbones import create_backbone
from headstart.backbones.vectors_io import ngram_buckets, read_vectors
from headstart.backbones.word_vectors import TOY_WORDS
from headstart.cli import app
from headstart.config import BackboneConfig, EmbedTrainConfig
from headstart.errors import BackboneError, ConfigError, DataError, RunFolderError

pytest.importorskip("gensim")

from headstart.workflows.embed_train import embed_train

DRUG_CONTEXT = ("drug", "dose", "pain", "headache", "helped", "sleep", "side", "effects")
SPORT_CONTEXT = ("team", "game", "match", "win", "player", "season", "goal", "won")
#: made-up domain words: two drugs and a sport, each always among its own context words
DOMAIN = {"zorblax": DRUG_CONTEXT, "quvidine": DRUG_CONTEXT, "flumpball": SPORT_CONTEXT}
RARE = "blorptastic"  # once in the corpus: below min_count 2 (set here), never learned


def _corpus(n: int = 240, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = list(DOMAIN)
    docs = []
    for i in range(n):
        word = names[i % len(names)]
        context = list(rng.choice(DOMAIN[word], size=5, replace=False))
        context.insert(int(rng.integers(0, 6)), word)
        docs.append("the " + " ".join(context) + " .")
    docs.append(f"the {RARE} game .")
    return docs


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "reviews.txt"
    path.write_text("\n".join(_corpus()) + "\n\n", encoding="utf-8")  # a blank line: skipped
    return path


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _train(corpus: Path, out: Path, **options: object):
    settings: dict[str, object] = {
        "init": "toy-vectors",
        "epochs": 5,
        "buckets": 2000,
        "min_count": 2,
    }
    cfg = EmbedTrainConfig(**{**settings, **options})  # type: ignore[arg-type]
    return embed_train(corpus, out, cfg, console=_quiet(), progress=False)


def _toy() -> np.ndarray:
    from headstart.backbones.word_vectors import WordVectorsFamily

    vectors, _ = WordVectorsFamily().load(BackboneConfig(name="toy-vectors"))
    return vectors.vectors


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# -- (a) the pretrained words keep their vectors ----------------------------------------------
def test_slow_keeps_each_shared_word_within_max_shift(corpus_file, tmp_path):
    result = _train(corpus_file, tmp_path / "vec", keep="slow", max_shift=0.01, epochs=10)
    pre = _toy()
    new = read_vectors(tmp_path / "vec").vectors[: len(pre)]
    shift = np.linalg.norm(new - pre, axis=1) / np.linalg.norm(pre, axis=1)
    assert shift.max() <= 0.01 + 1e-5
    assert shift.max() > 0.009  # they did train, and the projection held them back
    assert result.info["shared_shift_max"] > 0.01  # before the projection
    assert result.info["shared_projected"] > 0
    in_corpus = {w for doc in _corpus() for w in doc.split()}
    untouched = [i for i, w in enumerate(TOY_WORDS) if w not in in_corpus]
    np.testing.assert_array_equal(new[untouched], pre[untouched])


@pytest.mark.parametrize("model", ["word2vec", "fasttext"])
def test_frozen_keeps_the_pretrained_vectors_exactly(corpus_file, tmp_path, model):
    result = _train(corpus_file, tmp_path / "vec", keep="frozen", model=model)
    pre = _toy()
    np.testing.assert_array_equal(read_vectors(tmp_path / "vec").vectors[: len(pre)], pre)
    assert result.info["shared_shift_max"] == 0.0  # gensim's lock factors held them still
    assert result.info["slow_factor"] == 0.0


# -- (b) the domain words are learned ----------------------------------------------------------
def test_domain_words_are_learned_near_their_contexts(corpus_file, tmp_path):
    result = _train(corpus_file, tmp_path / "vec")
    vectors = read_vectors(tmp_path / "vec")
    n = len(TOY_WORDS)
    assert vectors.words[:n] == list(TOY_WORDS)  # the init's order: Zipf ranks still hold
    assert vectors.words[n:] == list(DOMAIN)  # 80 occurrences each, in order of first use
    assert RARE not in vectors.words
    assert vectors.n_pretrained == n and vectors.counts is None
    docs = _corpus()
    tokens = sum(len(d.split()) for d in docs)
    assert result.info["oov_token_rate_before"] == pytest.approx(len(docs) / tokens)
    assert result.info["oov_token_rate_after"] == pytest.approx(1 / tokens)  # the rare word
    assert result.info["domain_words"] == 3 and result.info["domain_words_too_rare"] == 1

    row = {w: vectors.vectors[i] for i, w in enumerate(vectors.words)}
    drug = _unit(np.mean([_unit(row[w]) for w in DRUG_CONTEXT], 0))
    sport = _unit(np.mean([_unit(row[w]) for w in SPORT_CONTEXT], 0))
    for word, own, other in (("zorblax", drug, sport), ("flumpball", sport, drug)):
        v = _unit(row[word])
        assert v @ own > v @ other + 0.2, word
    assert _unit(row["zorblax"]) @ _unit(row["quvidine"]) > _unit(row["zorblax"]) @ _unit(
        row["flumpball"]
    )


def test_the_same_seed_gives_the_same_vectors(corpus_file, tmp_path):
    _train(corpus_file, tmp_path / "a")
    _train(corpus_file, tmp_path / "b")
    a, b = read_vectors(tmp_path / "a"), read_vectors(tmp_path / "b")
    np.testing.assert_array_equal(a.vectors, b.vectors)


# -- (c) the folder is a backbone ---------------------------------------------------------------
def test_the_folder_loads_as_a_backbone_with_domain_oov(corpus_file, tmp_path):
    result = _train(corpus_file, tmp_path / "vec")
    bb = create_backbone(BackboneConfig(name=str(tmp_path / "vec")), 3)
    assert bb.oov == "domain"  # type: ignore[attr-defined]
    assert bb.n_pretrained == len(TOY_WORDS)  # type: ignore[attr-defined]
    assert bb.spec.extra["n_pretrained"] == len(TOY_WORDS)
    assert bb.text_rows("Zorblax helped")[0] == [len(TOY_WORDS) + 2]  # row of the domain word
    report = bb.vocabulary_report(_corpus())  # type: ignore[attr-defined]
    assert report["oov_token_rate"] == pytest.approx(result.info["oov_token_rate_after"])
    info = read_vectors(tmp_path / "vec").info
    assert info["init"] == "toy-vectors" and info["model"] == "word2vec"
    for key in ("epochs", "window", "min_count", "keep", "max_shift", "documents", "tokens"):
        assert key in info
    assert info["seconds"] > 0 and info["documents"] == len(_corpus())


def test_fasttext_folder_carries_ngrams_that_compose_unseen_words(corpus_file, tmp_path):
    result = _train(corpus_file, tmp_path / "vec", model="fasttext", buckets=2000)
    vectors = read_vectors(tmp_path / "vec")
    assert vectors.ngrams is not None and vectors.ngrams.shape == (2000, vectors.dim)
    assert (vectors.minn, vectors.maxn) == (3, 6)
    assert result.info["ngrams_start"] == "shared words"
    bb = create_backbone(BackboneConfig(name=str(tmp_path / "vec")), 3)
    assert bb.oov == "subword"  # type: ignore[attr-defined]
    bb = create_backbone(BackboneConfig(name=str(tmp_path / "vec"), oov="subword"), 3)
    rows = bb.text_rows("zorblaxine")  # never in the corpus
    assert len(rows) == 1 and min(rows[0]) >= len(vectors.words) + 2  # n-gram rows
    batch = bb.collate_fn()([bb.make_dataset(_Texts(["zorblaxine"]))[0]])[0]  # type: ignore[misc]
    emb = bb.embed(batch)
    assert float(emb.detach().abs().sum()) > 0
    # the unseen word shares n-grams with zorblax, so it lands nearer it than flumpball
    pieces = ngram_buckets("zorblaxine", 3, 6, 2000)
    composed = _unit(vectors.ngrams[pieces].mean(0))
    row = {w: vectors.vectors[i] for i, w in enumerate(vectors.words)}
    assert composed @ _unit(row["zorblax"]) > composed @ _unit(row["flumpball"])
    # the n-grams live in the pretrained space: composed from its n-grams alone, a corpus
    # word is nearest its own pretrained vector
    pre = _toy()
    unit_pre = pre / np.linalg.norm(pre, axis=1, keepdims=True)
    corpus_words = sorted({w for d in _corpus() for w in d.split()} & set(TOY_WORDS))
    own = 0
    for word in corpus_words:
        v = vectors.ngrams[ngram_buckets(word, 3, 6, 2000)].mean(0)
        own += int(np.argmax(unit_pre @ v) == TOY_WORDS.index(word))
    assert own >= 0.8 * len(corpus_words), (own, len(corpus_words))


class _Texts:
    def __init__(self, texts: list[str]):
        self.texts = texts
        self.labels = np.zeros(len(texts), dtype=np.int64)


# -- (d) the command ---------------------------------------------------------------------------
def test_cli_writes_the_folder_and_prints_the_summary(corpus_file, tmp_path):
    out = tmp_path / "vec"
    result = CliRunner().invoke(
        app,
        [
            *("embed-train", str(corpus_file), "--init", "toy-vectors", "--out", str(out)),
            "--epochs",
            "3",
            *("--min-count", "2", "--no-progress"),
        ],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    assert read_vectors(out).words[len(TOY_WORDS) :] == list(DOMAIN)
    text = " ".join(result.output.split())
    assert "3 domain words learned" in text
    docs = _corpus()
    before, after = len(docs), 1  # one domain word per document; the rare one stays OOV
    tokens = sum(len(d.split()) for d in docs)
    rates = f"{100 * before / tokens:.2f}% -> {100 * after / tokens:.2f}%"
    assert f"OOV token rate of the corpus: {rates}" in text
    assert f"next: headstart fit DATA --backbone {out}" in text


def test_a_table_and_its_text_column(tmp_path):
    import pandas as pd

    table = tmp_path / "reviews.csv"
    pd.DataFrame({"review": _corpus(), "stars": 1}).to_csv(table, index=False)
    result = _train(table, tmp_path / "vec", text_cols=["review"], epochs=2)
    assert result.domain_words == list(DOMAIN)


# -- (e) bad inputs ----------------------------------------------------------------------------
def test_a_missing_corpus_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"nothing at .*missing.txt.*check the path"):
        _train(tmp_path / "missing.txt", tmp_path / "vec")
    assert not (tmp_path / "vec").exists()  # nothing left behind


def test_an_empty_corpus_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"non-empty document.*all empty"):
        _train(empty, tmp_path / "vec")
    table = tmp_path / "t.csv"
    table.write_text("text,notes\n,a\n,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"all empty.*Fix: pass --text-col"):
        _train(table, tmp_path / "vec")


def test_a_corpus_of_another_vocabulary_is_a_clear_error(tmp_path):
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("zzq qqz\nqqz zzq\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"sharing words with the init vectors.*--init"):
        _train(foreign, tmp_path / "vec")


def test_an_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match=r"word2vec, fasttext.*'glove'.*--model word2vec"):
        EmbedTrainConfig(model="glove")
    result = CliRunner().invoke(app, ["embed-train", "x.txt", "--out", "o", "--model", "glove"])
    assert isinstance(result.exception, ConfigError)
    assert "--model word2vec" in str(result.exception)
    with pytest.raises(ConfigError, match=r"--keep slow"):
        EmbedTrainConfig(keep="thawed")


def test_without_gensim_the_error_says_how_to_install_it(
    corpus_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "gensim", None)  # import gensim -> ImportError
    with pytest.raises(BackboneError, match=r"pip install 'headstart\[embeddings\]'"):
        _train(corpus_file, tmp_path / "vec")
    # the command prints it as written (the brackets are no console markup)
    from headstart.cli import main

    args = [str(corpus_file), "--init", "toy-vectors", "--out", str(tmp_path / "v")]
    monkeypatch.setattr(sys, "argv", ["headstart", "embed-train", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert "pip install 'headstart[embeddings]'" in " ".join(capsys.readouterr().err.split())


def test_out_holding_other_files_or_earlier_vectors(corpus_file, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.md").write_text("mine")
    with pytest.raises(RunFolderError, match=r"notes.md.*another --out"):
        _train(corpus_file, busy)
    assert (busy / "notes.md").read_text() == "mine"
    _train(corpus_file, tmp_path / "vec", epochs=1)
    with pytest.raises(RunFolderError, match=r"--overwrite"):
        _train(corpus_file, tmp_path / "vec", epochs=1)
    cfg = EmbedTrainConfig(init="toy-vectors", epochs=1, keep="frozen")
    embed_train(
        corpus_file, tmp_path / "vec", cfg, console=_quiet(), progress=False, overwrite=True
    )
    assert read_vectors(tmp_path / "vec").info["keep"] == "frozen"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "vec"]  # no temporary left


def test_an_init_that_is_not_word_vectors(corpus_file, tmp_path):
    with pytest.raises(BackboneError, match=r"not word vectors.*--init glove-6b-50d"):
        _train(corpus_file, tmp_path / "vec", init="minilm-l6")


def test_init_vectors_with_ngrams_keep_them(corpus_file, tmp_path):
    """Vectors that carry fastText n-grams (a .bin, or an earlier fasttext run) start the
    n-grams from their own; frozen keeps them, and word2vec passes them on."""
    _train(corpus_file, tmp_path / "first", model="fasttext", buckets=1500)
    first = read_vectors(tmp_path / "first")
    assert first.ngrams is not None
    result = _train(
        corpus_file,
        tmp_path / "ft",
        init=str(tmp_path / "first"),
        model="fasttext",
        keep="frozen",
    )
    again = read_vectors(tmp_path / "ft")
    assert result.info["ngrams_start"] == "init" and result.info["buckets"] == 1500
    assert again.ngrams is not None
    np.testing.assert_array_equal(again.ngrams, first.ngrams)
    np.testing.assert_array_equal(again.vectors, first.vectors)  # nothing new to learn
    assert again.n_pretrained == len(first.words)
    _train(corpus_file, tmp_path / "w2v", init=str(tmp_path / "first"))
    assert np.array_equal(read_vectors(tmp_path / "w2v").ngrams, first.ngrams)  # type: ignore[arg-type]


def test_min_count_one_learns_a_word_seen_once(corpus_file, tmp_path):
    _train(corpus_file, tmp_path / "vec", min_count=1)
    vectors = read_vectors(tmp_path / "vec")
    assert RARE in vectors.words[vectors.n_pretrained :]
    assert EmbedTrainConfig().min_count == 1  # the default
