"""Word-vector backbones: every file format (and the refusal of pickles), the fastText
n-gram hash against gensim's, SIF against a direct computation, tokenisation, OOV
policies, the contract and a run folder that round-trips to identical predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from headstart.backbones import (
    BackboneSpec,
    WordVectors,
    WordVectorsBackbone,
    backbone_from_spec,
    create_backbone,
    read_vectors,
)
from headstart.backbones.vectors_io import ngram_buckets
from headstart.backbones.word_vectors import SIF_A, TOY_WORDS, WordTokenizer, common_component
from headstart.config import BackboneConfig
from headstart.data import from_texts
from headstart.errors import BackboneError, ConfigError, UnsafeWeightsError

WORDS = ["the", "of", "drug", "pain", "good", "bad", "well-known", "1,000", "ibuprofen", "n't"]


def _vectors(n_words: int = len(WORDS), dim: int = 6, seed: int = 0) -> WordVectors:
    rng = np.random.default_rng(seed)
    return WordVectors(WORDS[:n_words], rng.normal(size=(n_words, dim)), "test")


def _toy(k: int = 3, **kw) -> WordVectorsBackbone:
    bb = create_backbone(BackboneConfig(name="toy-vectors", **kw), k)
    assert isinstance(bb, WordVectorsBackbone)
    return bb


def _batch(bb, texts):
    ds = bb.make_dataset(from_texts(list(texts), ["a"] * len(texts)))
    return bb.collate_fn()([ds[i] for i in range(len(ds))])[0]


# -- formats -------------------------------------------------------------------------------
def _kv(vectors: WordVectors):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vectors.dim)
    kv.add_vectors(vectors.words, vectors.vectors)
    return kv


@pytest.mark.parametrize("fmt", ["word2vec-text", "glove", "word2vec-bin", "folder", "gz"])
def test_every_vectors_format_reads_the_same_words_and_vectors(tmp_path, fmt):
    v = _vectors()
    if fmt == "word2vec-text":
        path = tmp_path / "v.txt"
        _kv(v).save_word2vec_format(str(path), binary=False)
    elif fmt == "gz":
        path = tmp_path / "v.txt.gz"
        _kv(v).save_word2vec_format(str(path), binary=False)
    elif fmt == "word2vec-bin":
        path = tmp_path / "v.bin"
        _kv(v).save_word2vec_format(str(path), binary=True)
    elif fmt == "glove":  # no header line
        path = tmp_path / "glove.txt"
        path.write_text(
            "".join(
                w + " " + " ".join(f"{x:.6f}" for x in row) + "\n"
                for w, row in zip(v.words, v.vectors, strict=True)
            )
        )
    else:
        path = v.save(tmp_path / "vec")
    got = read_vectors(path)
    assert got.words == v.words
    np.testing.assert_allclose(got.vectors, v.vectors, atol=1e-5)
    # and each is a backbone by its path
    bb = create_backbone(BackboneConfig(name=str(path)), 2)
    assert isinstance(bb, WordVectorsBackbone) and bb.spec.feature_dim == 6
    assert len(bb.spec.weights_sha256 or "") == 64


def test_fasttext_bin_keeps_its_ngrams_and_composes_unknown_words_as_gensim_does(tmp_path):
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    sentences = [["the", "drug", "helped", "my", "pain"], ["ibuprofen", "helped", "pain"]] * 30
    ft = FastText(vector_size=8, min_count=1, bucket=500, min_n=3, max_n=5, seed=1, workers=1)
    ft.build_vocab(sentences)
    ft.train(sentences, total_examples=len(sentences), epochs=2)
    path = tmp_path / "ft.bin"
    save_facebook_model(ft, str(path))
    v = read_vectors(path)
    assert v.ngrams is not None and v.ngrams.shape == (500, 8) and (v.minn, v.maxn) == (3, 5)
    bb = create_backbone(BackboneConfig(name=str(path), pooling="mean"), 2)
    assert bb.oov == "subword"  # the default when the vectors carry n-grams
    x = _batch(bb, ["paracetamol"])  # never seen: composed from n-grams
    from gensim.models.fasttext import load_facebook_vectors

    expected = load_facebook_vectors(str(path))["paracetamol"]
    np.testing.assert_allclose(bb.embed(x)[0].detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("word", ["hello", "naïve", "ibuprofen", "日本語", "a", "x" * 30])
def test_ngram_hash_matches_gensim(word):
    from gensim.models.fasttext import ft_ngram_hashes

    assert ngram_buckets(word, 3, 6, 2_000_000) == ft_ngram_hashes(word, 3, 6, 2_000_000)


def test_gensim_native_files_are_refused_never_unpickled(tmp_path):
    path = tmp_path / "vectors.model"
    _kv(_vectors()).save(str(path))  # gensim's native format: a pickle
    with pytest.raises(UnsafeWeightsError, match="pickle") as e:
        read_vectors(path)
    assert "save_word2vec_format" in str(e.value)
    with pytest.raises(UnsafeWeightsError):
        create_backbone(BackboneConfig(name=str(path)), 2)


def test_bad_vectors_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\nthe 1 2\n")
    with pytest.raises(BackboneError, match="could not be read"):
        read_vectors(bad)
    with pytest.raises(BackboneError, match="nothing at"):
        read_vectors(tmp_path / "missing.vec")
    with pytest.raises(BackboneError, match=r"vocab\.json"):
        read_vectors(tmp_path)


# -- tokenisation --------------------------------------------------------------------------
def test_default_tokenizer_splits_as_glove_corpora_were():
    tok = WordTokenizer([*WORDS, "do", "it", "'s", "well", "known", ","], "default", True)
    assert tok.split("I don't think it's 2.5 or 1,000 mg, well-known!") == [
        "i", "do", "n't", "think", "it", "'s", "2.5", "or", "1,000", "mg", ",", "well-known", "!",
    ]  # fmt: skip
    assert tok.lookup("well-known") == [WORDS.index("well-known")]
    assert tok.lookup("1000") is None and tok.lookup("1,000") == [WORDS.index("1,000")]
    # an unknown hyphenated word whose parts are known stands for its parts
    tok2 = WordTokenizer(["well", "known"], "default", True)
    assert tok2.lookup("well-known") == [0, 1]
    assert WordTokenizer(WORDS, "simple").split("Don't, 2.5!") == ["don", "t", "2", "5"]
    cased = WordTokenizer(["Paris", "the"], "default", lowercase=False)
    assert cased.split("The Paris") == ["The", "Paris"] and cased.lookup("The") == [1]


def test_oov_policies():
    texts = ["good drug", "good xyzzy drug", "xyzzy"]
    skip = _toy(oov="skip")
    unk = _toy(oov="unk")
    ds_skip = skip.make_dataset(from_texts(texts, ["a"] * 3))
    ds_unk = unk.make_dataset(from_texts(texts, ["a"] * 3))
    assert ds_skip.items[1] == ds_skip.items[0] and ds_skip.items[2] == []
    assert ds_unk.items[1][1] == [1] and ds_unk.items[2] == [[1]]
    x = _batch(skip, texts)
    assert torch.allclose(skip.embed(x)[0], skip.embed(x)[1])  # the unknown word dropped
    assert torch.equal(skip.embed(x)[2], torch.zeros(16))  # nothing left: zeros
    assert not torch.allclose(unk.embed(_batch(unk, texts))[0], unk.embed(_batch(unk, texts))[1])
    with pytest.raises(BackboneError, match="embed-train"):
        _toy(oov="subword")
    with pytest.raises(BackboneError, match="embed-train"):
        _toy(oov="domain")
    with pytest.raises(ConfigError):
        BackboneConfig(name="toy-vectors", oov="guess")
    with pytest.raises(BackboneError, match="sif"):
        create_backbone(BackboneConfig(name="toy-vectors", pooling="cls"), 2)


# -- pooling -------------------------------------------------------------------------------
def test_sif_equals_a_direct_computation():
    bb = _toy(pooling="sif")
    words = list(TOY_WORDS)
    table = {w: i for i, w in enumerate(words)}
    vecs = bb.embeddings.weight[2:].detach().double().numpy()
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    p = (1 / ranks) / (1 / ranks).sum()
    a = SIF_A
    # the common component: top eigenvector of the second moment of 10-word texts
    mu = sum(p[i] * a / (a + p[i]) * vecs[i] for i in range(len(words)))
    second = sum(
        p[i] * (a / (a + p[i])) ** 2 * np.outer(vecs[i], vecs[i]) for i in range(len(words))
    )
    m = np.outer(mu, mu) + (second - np.outer(mu, mu)) / 10
    u = np.linalg.eigh(m)[1][:, -1]
    texts = ["the drug helped my pain", "good game , great team !"]
    x = _batch(bb, texts)
    got = bb.embed(x).detach().double().numpy()
    for row, text in zip(got, texts, strict=True):
        toks = [table[w] for w in text.split()]
        v = np.mean([a / (a + p[i]) * vecs[i] for i in toks], axis=0)
        v = v - (v @ u) * u
        np.testing.assert_allclose(row, v, atol=1e-5)
    mean_bb = _toy(pooling="mean")
    np.testing.assert_allclose(
        mean_bb.embed(_batch(mean_bb, texts[:1]))[0].detach().numpy(),
        vecs[[table[w] for w in texts[0].split()]].mean(0),
        atol=1e-5,
    )
    max_bb = _toy(pooling="max")
    np.testing.assert_allclose(
        max_bb.embed(_batch(max_bb, texts[:1]))[0].detach().numpy(),
        vecs[[table[w] for w in texts[0].split()]].max(0),
        atol=1e-5,
    )


def test_common_component_is_the_first_principal_direction_of_sampled_texts():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, 8)) + rng.normal(size=8)  # a shared offset, as real vectors have
    ranks = np.arange(1, 301)
    p = (1 / ranks) / (1 / ranks).sum()
    s = SIF_A / (SIF_A + p)
    draws = rng.choice(300, size=(20000, 10), p=p)
    emb = (vecs[draws] * s[draws][..., None]).mean(1)
    top = np.linalg.svd(emb, full_matrices=False)[2][0]
    u = common_component(vecs, p)
    assert abs(float(top @ u)) > 0.99


# -- the contract and run folders ----------------------------------------------------------
def test_toy_vectors_contract(tmp_path):
    bb = _toy(4)
    x = _batch(bb, ["good drug", "bad pain , really bad", "the game"])
    assert bb(x).shape == (3, 4) and bb.embed(x).shape == (3, 16)
    assert bb.forward_features(x).shape == (3, x["input_ids"].shape[1], 16)
    assert [g.name for g in bb.layer_groups()] == ["embeddings", "head"]
    flat = [id(p) for g in bb.layer_groups() for p in g.params]
    assert sorted(flat) == sorted(id(p) for p in bb.parameters())
    assert bb.spec.modality == "text" and bb.spec.extra["kind"] == "vectors"
    assert bb.dummy_batch()["input_ids"].dim() == 3
    with pytest.raises(BackboneError, match="no layers"):
        bb.layer_modules()
    bb.reset_head(2)
    assert bb(x).shape == (3, 2)
    # rebuilt from its spec and saved vocabulary, with the state dict: identical outputs
    with torch.no_grad():
        bb.embeddings.weight.add_(0.01)
    bb.save_assets(tmp_path)
    spec = BackboneSpec.from_dict(yaml.safe_load(yaml.safe_dump(bb.spec.to_dict())))
    rebuilt = backbone_from_spec(spec, 2, tmp_path)
    rebuilt.load_state_dict(bb.state_dict())
    assert torch.equal(rebuilt(x), bb(x)) and rebuilt.preprocess_id() == bb.preprocess_id()
    with pytest.raises(BackboneError, match=r"vocab\.json"):
        backbone_from_spec(spec, 2, tmp_path / "nothing")


def test_a_vectors_run_folder_round_trips_to_identical_predictions(tmp_path):
    from headstart import load
    from headstart.config import DataConfig, RunConfig, StrategyConfig, TrainConfig
    from headstart.runfolder import read_temperature
    from headstart.workflows.fit import fit

    texts = ["good drug really good", "great help , good", "bad pain", "awful , terrible pain"] * 4
    labels = ["pos", "pos", "neg", "neg"] * 4
    src = tmp_path / "t.csv"
    import pandas as pd

    pd.DataFrame({"text": texts, "label": labels}).to_csv(src, index=False)
    cfg = RunConfig(
        data=DataConfig(source=str(src), test_fraction=0.25, val_fraction=0.0),
        backbone=BackboneConfig(name="toy-vectors"),
        strategy=StrategyConfig(name="finetune"),
        train=TrainConfig(epochs=2, batch_size=4),
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "vectors" / "vocab.json").is_file()
    before = result.backbone.embeddings.weight[2:].detach()
    assert not torch.allclose(before, _toy().embeddings.weight[2:])  # the rows trained
    model = load(tmp_path / "run")
    probe = ["good drug", "terrible pain", "unheard-of words"]
    got = model.predict_proba(probe)
    bb = result.backbone.eval()
    with torch.no_grad():
        logits = bb(_batch(bb, probe))
    expected = torch.softmax(logits / read_temperature(tmp_path / "run"), -1)
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), atol=1e-5)


# -- as any backbone: every head, rank, l2-sp -----------------------------------------------
def _fit(tmp_path, name: str, **kw):
    from rich.console import Console

    from headstart.config import DataConfig, RunConfig, StrategyConfig, TrainConfig
    from headstart.data import from_texts
    from headstart.data.loading import prepare_data
    from headstart.workflows.fit import fit

    texts = [f"{w} {x} {w}" for w in ("good", "bad", "pain") for x in TOY_WORDS[:10]]
    labels = [t.split()[0] for t in texts]
    cfg = RunConfig(
        data=DataConfig(source="arrays", test_fraction=0.3, val_fraction=0.0),
        backbone=BackboneConfig(name="toy-vectors"),
        strategy=StrategyConfig(name=name, **kw),
        train=TrainConfig(epochs=3, batch_size=8, lr=0.05),
    )
    quiet = Console(quiet=True)
    data = prepare_data(cfg.data, quiet, progress=False, source=from_texts(texts, labels))
    return fit(cfg, tmp_path / name, progress=False, console=quiet, data=data)


@pytest.mark.parametrize("head", ["linear", "logistic", "prototype", "ridge", "svm"])
def test_linear_probe_with_every_head(tmp_path, head):
    result = _fit(tmp_path, "linear-probe", head=head)
    assert result.metrics["test"]["accuracy"] == 1.0  # the class word is in every text


def test_l2sp_pulls_the_rows_toward_the_pretrained_vectors(tmp_path):
    start = _toy().embeddings.weight.detach().clone()
    moved = {
        s: float((_fit(tmp_path, s).backbone.embeddings.weight.detach() - start).norm())
        for s in ("finetune", "l2-sp:10")
    }
    assert 0 < moved["l2-sp:10"] < moved["finetune"]


def test_word_vectors_rank_beside_a_transformer():
    from rich.console import Console

    from headstart.config import DataConfig, RankConfig
    from headstart.data import from_texts
    from headstart.features import EmbeddingCache
    from headstart.workflows.rank import run_rank

    texts = [f"{w} {x} {w}" for w in ("good", "bad", "pain") for x in TOY_WORDS[:10]]
    res = run_rank(
        DataConfig(source="x"),
        RankConfig(backbones=["toy-vectors", "toy-bert"]),
        progress=False,
        console=Console(quiet=True),
        samples=from_texts(texts, [t.split()[0] for t in texts]),
        cache=EmbeddingCache(enabled=False),
    )
    scores = {r.candidate: r.scores["knn"] for r in res.rows}
    assert set(scores) == {"toy-vectors", "toy-bert"} and scores["toy-vectors"] > 0.9


def test_compare_runs_word_vectors_against_scratch(tmp_path):
    import json

    import pandas as pd

    from headstart.config import CompareConfig, DataConfig, RunConfig, TrainConfig
    from headstart.workflows.compare import run_compare

    texts = [f"{w} {x} {w}" for w in ("good", "bad", "pain") for x in TOY_WORDS[:20]]
    src = tmp_path / "t.csv"
    pd.DataFrame({"text": texts, "label": [t.split()[0] for t in texts]}).to_csv(src, index=False)
    base = RunConfig(
        data=DataConfig(source=str(src), test_fraction=0.3),
        backbone=BackboneConfig(name="toy-vectors"),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    spec = CompareConfig(strategies=["scratch", "linear-probe"], budgets=[4], seeds=1)
    result = run_compare(base, spec, tmp_path / "cmp", progress=False)
    assert len(result.cells) == 2 and not result.not_run
    doc = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    acc = {s: v["accuracy"]["mean"] for s, v in doc["budgets"]["4"]["strategies"].items()}
    assert acc["linear-probe"] == 1.0  # pretrained (toy) vectors: the class word decides
