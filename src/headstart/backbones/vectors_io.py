"""Word vectors on disk: reading the common formats and headstart's own.

Read (never unpickled):

- **headstart's own vectors folder**: ``vectors.safetensors`` (``vectors`` V x D float32;
  optional ``counts`` (V,) and fastText ``ngrams`` B x D) plus ``vocab.json`` (the words, in
  row order, and what made them). Written by :meth:`WordVectors.save`, by ``headstart
  embed-train`` and into every run folder of a word-vector backbone.
- **word2vec** text (first line ``V D``) or binary, **fastText** ``.vec`` (word2vec text)
  and ``.bin`` (Facebook's binary model, with its character n-grams), **GloVe** text (no
  header line); ``.gz`` / ``.bz2`` compressed text too. These go through gensim (the
  ``embeddings`` extra), whose readers parse the formats and execute nothing.
- gensim's native ``.model`` / ``.kv`` files are pickles: refused, with the two lines
  that convert them.

The fastText n-gram hash (FNV-1a over the UTF-8 bytes, with fastText's signed-byte quirk)
is written here, so that composing a vector for an unknown word needs no gensim at
prediction time; a test checks it against gensim's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import BackboneError, UnsafeWeightsError

VOCAB_FILE = "vocab.json"
TENSORS_FILE = "vectors.safetensors"
FORMAT = "headstart-word-vectors/1"
#: suffixes of vector files read through gensim (compressed text included)
TEXT_SUFFIXES = (".txt", ".vec", ".w2v", ".glove", ".gz", ".bz2")
BINARY_SUFFIXES = (".bin",)
PICKLE_SUFFIXES = (".model", ".kv", ".pkl", ".pickle", ".npy_pickle")
_FASTTEXT_MAGIC = 793712314  # first int32 of Facebook's fastText .bin
_CONVERT = (
    "convert it once in Python: `from gensim.models import KeyedVectors; "
    "KeyedVectors.load(PATH).save_word2vec_format('vectors.txt')` (a FastText model: "
    "`FastText.load(PATH)` then `ft.wv.save_word2vec_format(...)`, or save the .bin with "
    "`gensim.models.fasttext.save_facebook_model`), then pass the .txt or .bin"
)


@dataclass
class WordVectors:
    """A vocabulary and its vectors, plus what composes vectors for unknown words.

    ``words[i]`` owns row ``i`` of ``vectors``. ``counts`` are corpus frequencies when known
    (vectors trained by ``embed-train``); None means the rows are in frequency order and a
    Zipf law of the rank stands in (GloVe, word2vec and fastText files are written so).
    ``ngrams`` (B x D) are fastText's hashed character n-gram vectors, ``minn``..``maxn``
    characters long. ``n_pretrained``: the first rows came from pretrained vectors and the
    rest were learned on a domain corpus (None: all are the source's own)."""

    words: list[str]
    vectors: np.ndarray
    source: str
    counts: np.ndarray | None = None
    ngrams: np.ndarray | None = None
    minn: int = 3
    maxn: int = 6
    n_pretrained: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise BackboneError(
                "one vector per word (a V x D matrix)",
                f"{len(self.words)} words and vectors of shape {self.vectors.shape}",
                "write the vectors file again from its source",
            )
        if self.counts is not None:
            self.counts = np.asarray(self.counts, dtype=np.int64).reshape(-1)
        if self.ngrams is not None:
            self.ngrams = np.ascontiguousarray(self.ngrams, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def lowercase(self) -> bool:
        """True when (nearly) no word has a capital letter: look words up lower-cased."""
        sample = self.words[: min(len(self.words), 50_000)]
        upper = sum(1 for w in sample if w != w.lower())
        return upper <= 0.01 * max(len(sample), 1)

    def probabilities(self) -> np.ndarray:
        """The unigram probability of each word: from ``counts``, else Zipf's law of the
        frequency rank, p(rank r) proportional to 1 / (r + 1)."""
        if self.counts is not None and self.counts.sum() > 0:
            c = self.counts.astype(np.float64) + 1.0  # words never seen in the corpus
            return c / c.sum()
        ranks = np.arange(1, len(self.words) + 1, dtype=np.float64)
        p = 1.0 / ranks
        return p / p.sum()

    # -- headstart's own format -------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``vectors.safetensors`` and ``vocab.json`` into ``folder`` (atomically)."""
        import torch

        from headstart.storage import write_json, write_safetensors

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"vectors": torch.from_numpy(self.vectors)}
        if self.counts is not None:
            tensors["counts"] = torch.from_numpy(self.counts)
        if self.ngrams is not None:
            tensors["ngrams"] = torch.from_numpy(self.ngrams)
        write_safetensors(tensors, folder / TENSORS_FILE)
        doc = {
            "format": FORMAT,
            "source": self.source,
            "dim": self.dim,
            "minn": self.minn,
            "maxn": self.maxn,
            "n_pretrained": self.n_pretrained,
            "info": self.info,
            "words": self.words,
        }
        write_json(folder / VOCAB_FILE, doc)
        return folder


def is_vectors_folder(path: Path) -> bool:
    return path.is_dir() and (path / VOCAB_FILE).is_file() and (path / TENSORS_FILE).is_file()


def looks_like_vectors_file(path: Path) -> bool:
    """A path that names word vectors by its suffix (existing or not)."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    return path.suffix.lower() in TEXT_SUFFIXES + BINARY_SUFFIXES + PICKLE_SUFFIXES or any(
        suffixes.endswith(s) for s in (".txt.gz", ".vec.gz", ".txt.bz2")
    )


def read_vectors(path: str | Path) -> WordVectors:
    """Word vectors from a headstart folder or a word2vec / fastText / GloVe file."""
    path = Path(path).expanduser()
    if is_vectors_folder(path):
        return _read_folder(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(
            "word vectors in a format that loads without running code (word2vec text or "
            "binary, fastText .vec/.bin, GloVe text, or a headstart vectors folder)",
            f"{path.name}, a gensim native file: those are Python pickles, which headstart "
            "never loads",
            _CONVERT,
        )
    if path.is_dir():
        raise BackboneError(
            f"a word vectors folder ({TENSORS_FILE} and {VOCAB_FILE}) or a vectors file",
            f"the folder {path} without them",
            "pass the vectors file itself, or a folder written by `headstart embed-train`",
        )
    if not path.is_file():
        raise BackboneError(
            "an existing word vectors file or folder", f"nothing at {path}", "check the path"
        )
    try:
        import gensim  # noqa: F401
    except ImportError:
        raise BackboneError(
            "gensim installed, to read word2vec, fastText and GloVe files",
            "gensim is not installed",
            "pip install 'headstart[embeddings]' (or pip install gensim)",
        ) from None
    try:
        if path.suffix.lower() in BINARY_SUFFIXES:
            return _read_binary(path)
        return _read_text(path)
    except (BackboneError, MemoryError):
        raise
    except Exception as e:  # a malformed file: say which and where
        raise BackboneError(
            "a word2vec (text or binary), fastText (.vec, .bin) or GloVe text file",
            f"{path.name} that could not be read ({type(e).__name__}: {e})",
            "check the file: text formats have one word and its numbers per line",
        ) from e


def _read_folder(folder: Path) -> WordVectors:
    from safetensors.numpy import load_file

    try:
        doc = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TENSORS_FILE))
    except Exception as e:
        raise BackboneError(
            f"a readable {VOCAB_FILE} and {TENSORS_FILE}",
            f"{folder}: {type(e).__name__}: {e}",
            "write the vectors again (`headstart embed-train`)",
        ) from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "vectors" not in tensors:
        raise BackboneError(
            f"a headstart vectors folder (format {FORMAT})",
            f"{folder / VOCAB_FILE} with format "
            f"{doc.get('format') if isinstance(doc, dict) else doc!r}",
            "write the vectors again with this version (`headstart embed-train`)",
        )
    return WordVectors(
        words=[str(w) for w in doc["words"]],
        vectors=tensors["vectors"],
        source=str(doc.get("source", f"dir:{folder}")),
        counts=tensors.get("counts"),
        ngrams=tensors.get("ngrams"),
        minn=int(doc.get("minn", 3)),
        maxn=int(doc.get("maxn", 6)),
        n_pretrained=doc.get("n_pretrained"),
        info=dict(doc.get("info") or {}),
    )


def _read_text(path: Path) -> WordVectors:
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(
        str(path), binary=False, no_header=not _has_header(path), unicode_errors="replace"
    )
    fmt = "glove" if not _has_header(path) else "word2vec-text"
    return WordVectors(
        list(kv.index_to_key), kv.vectors, f"file:{path.resolve()}", info={"format": fmt}
    )


def _has_header(path: Path) -> bool:
    """word2vec text starts with ``V D``; GloVe text starts with a word and its numbers."""
    from gensim import utils

    with utils.open(str(path), "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").split()
    return len(first) == 2 and all(p.isdigit() for p in first)


def _read_binary(path: Path) -> WordVectors:
    with open(path, "rb") as f:
        magic = int(np.frombuffer(f.read(4).ljust(4, b"\0"), dtype="<i4")[0])
    if magic == _FASTTEXT_MAGIC:
        from gensim.models.fasttext import load_facebook_vectors

        ft = load_facebook_vectors(str(path))
        return WordVectors(
            list(ft.index_to_key),
            ft.vectors,
            f"file:{path.resolve()}",
            ngrams=np.asarray(ft.vectors_ngrams),
            minn=int(ft.min_n),
            maxn=int(ft.max_n),
            info={"format": "fasttext-bin", "bucket": int(ft.bucket)},
        )
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(path), binary=True, unicode_errors="replace")
    return WordVectors(
        list(kv.index_to_key), kv.vectors, f"file:{path.resolve()}", info={"format": "word2vec-bin"}
    )


# -- fastText character n-grams ------------------------------------------------------------
def _fnv1a(data: bytes) -> int:
    """fastText's hash: FNV-1a over the bytes, each byte sign-extended as fastText's C++
    ``int8`` is (gensim reproduces the same quirk)."""
    h = 2166136261
    for b in data:
        h = (h ^ ((b - 256) & 0xFFFFFFFF if b >= 128 else b)) & 0xFFFFFFFF
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def ngram_buckets(word: str, minn: int, maxn: int, buckets: int) -> list[int]:
    """The n-gram rows fastText composes ``word``'s vector from: every substring of
    ``<word>`` of ``minn`` to ``maxn`` characters, hashed into ``buckets`` rows."""
    if buckets <= 0 or maxn < minn or maxn <= 0:
        return []
    chars = f"<{word}>"
    out = []
    for i in range(len(chars)):
        for n in range(minn, min(maxn, len(chars) - i) + 1):
            out.append(_fnv1a(chars[i : i + n].encode("utf-8")) % buckets)
    return out
