"""Word vectors trained on a domain corpus, starting from pretrained ones (gensim).

What ``headstart embed-train`` runs. The corpus is split into words by the backbone's own
:class:`~headstart.backbones.word_vectors.WordTokenizer` (mode ``default``, lower-cased as
the init vectors are), and every word the init vectors know is written as the vocabulary
entry the backbone will look it up as (``Don't`` -> ``do`` ``n't``; ``1,000`` -> ``1000``
when only that is known; a hyphenated word as its known parts), so the contexts gensim
sees are the rows the backbone will use.

Training (gensim's CBOW, negative sampling):

- **shared words** (corpus words the init vectors have, however rare, kept in gensim's
  vocabulary as anchors) start at their pretrained vectors. ``frozen``: gensim's per-word
  lock factor is 0, so they never move; ``slow``: it is 0.1, then each vector is projected
  back within ``max_shift`` of its length from the pretrained one. The lock factors are
  gensim's own (``wv.vectors_lockf`` for word2vec; ``wv.vectors_vocab_lockf`` and
  ``wv.vectors_ngrams_lockf`` for fastText), which gensim 4.4 applies per row in its
  Cython updates (``word2vec_inner.pyx``: ``syn0[row] += lockf[index % len(lockf)] *
  work``; ``fasttext_inner.pyx`` the same for the vocabulary and n-gram rows), so no
  callback restores anything; ``info`` records how far the shared vectors moved before the
  projection (0 under ``frozen``).
- **domain words** (not in the init vocabulary, seen ``min_count`` times or more) start at
  the average of the pretrained vectors around their occurrences (``window`` words each
  side, each weighted by SIF's a / (a + p(w)), the common component removed), not at
  gensim's random vector: with 2 to 15 occurrences per word, as in a corpus of a few
  hundred reviews, training alone leaves them far from their meaning.
- **fastText n-grams**: the init vectors' own when they carry them (a fastText ``.bin``),
  under the same lock factor as the shared words; otherwise each n-gram row starts at the
  mean pretrained vector of the shared words whose n-grams hash to it, and trains freely
  (started at gensim's random vectors, the n-grams learn a space of their own, unlike the
  pretrained one). A domain word's vector is fastText's composite (its own vector and its
  n-grams, averaged), a shared word's its own (full-word) vector; the n-gram buckets hash as
  :func:`~headstart.backbones.vectors_io.ngram_buckets` does (fastText's FNV-1a, as
  gensim's ``ft_ngram_hashes``), so ``--oov subword`` composes unseen words from them.

Measured (30 epochs, ``slow``): 150 GloVe words of the drug-reviews train texts (seen 2
to 15 times) hidden from the init vectors and learned back; the median rank of each one's
true GloVe vector among the 4351 corpus words', by cosine to the learned vector, over two
draws of the hidden words: word2vec 734 and 639 from gensim's random start, 368 and 336
from the context average; fastText 1141 and 949 with random n-grams and start, 178 and
227 as here.

The result: the init words in their order (so SIF's Zipf-by-rank frequencies still hold),
then the domain words, most frequent first; ``n_pretrained`` the number of init words.
gensim (the ``embeddings`` extra) is imported here only when vectors are trained.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headstart.backbones.vectors_io import WordVectors
from headstart.backbones.word_vectors import (
    SIF_A,
    WordTokenizer,
    common_component,
    vocabulary_coverage,
)
from headstart.errors import BackboneError, DataError

MODELS = ("word2vec", "fasttext")
KEEP = ("frozen", "slow")
#: gensim's lock factor of the shared words under ``keep="slow"`` (a tenth of the rate)
SLOW_FACTOR = 0.1
#: the character n-grams of fastText's vectors trained here (gensim's and fastText's own)
MIN_N, MAX_N = 3, 6
INSTALL = "pip install 'headstart[embeddings]' (or pip install gensim)"


def require_gensim() -> None:
    """gensim importable, or the error that says how to install it."""
    try:
        import gensim  # noqa: F401
    except ImportError:
        raise BackboneError(
            "gensim installed, to train word vectors (embed-train)",
            "gensim is not installed",
            INSTALL,
        ) from None


@dataclass
class TrainSettings:
    """How the vectors are trained (the fields of ``EmbedTrainConfig`` that reach gensim)."""

    model: str = "word2vec"
    epochs: int = 30
    window: int = 5
    min_count: int = 2
    keep: str = "slow"
    max_shift: float = 0.25
    buckets: int = 100_000
    seed: int = 0
    workers: int = 1


@dataclass
class TrainedVectors:
    """The new vectors and what training found (counts, rates, shifts)."""

    vectors: WordVectors
    stats: dict[str, Any] = field(default_factory=dict)
    #: the domain words learned, most frequent first
    domain_words: list[str] = field(default_factory=list)


def corpus_words(
    texts: Sequence[str], tokenizer: WordTokenizer, words: Sequence[str]
) -> list[list[str]]:
    """Each text as the words gensim trains on: ``tokenizer``'s tokens, a token it finds
    written as the vocabulary entry (``words[i]``) it stands for, others as they are."""
    docs = []
    for text in texts:
        doc: list[str] = []
        for token in tokenizer.split(str(text)):
            found = tokenizer.lookup(token)
            if found is None:
                doc.append(token)
            else:
                doc.extend(words[i] for i in found)
        docs.append(doc)
    return docs


def train_vectors(
    init: WordVectors,
    texts: Sequence[str],
    settings: TrainSettings,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainedVectors:
    """Vectors for ``init``'s words and the domain words of ``texts`` (see the module)."""
    require_gensim()
    if settings.model not in MODELS or settings.keep not in KEEP:
        raise BackboneError(
            f"model in {MODELS} and keep in {KEEP}",
            f"model={settings.model!r}, keep={settings.keep!r}",
            "pass --model word2vec or fasttext, --keep slow or frozen",
        )
    t0 = time.perf_counter()
    tokenizer = WordTokenizer(init.words, "default", init.lowercase)
    before = vocabulary_coverage(tokenizer, texts)
    if before["tokens"] == 0:
        raise DataError(
            "a corpus with words in it",
            f"{len(texts)} documents without a single word",
            "pass a corpus of texts (one document per line of a .txt file, or a text column)",
        )
    docs = corpus_words(texts, tokenizer, init.words)
    counts: Counter[str] = Counter(w for doc in docs for w in doc)
    index = tokenizer.index
    shared = [w for w in counts if w in index]
    if not shared:
        raise DataError(
            f"a corpus sharing words with the init vectors ({init.source})",
            f"none of its {len(counts)} distinct words among their {len(init.words)} words",
            "start from vectors of the corpus's language (--init)",
        )
    domain = [w for w in counts if w not in index and counts[w] >= settings.min_count]
    model = _build(settings, init, docs, set(index))
    keys: list[str] = list(model.wv.index_to_key)
    is_shared = np.array([k in index for k in keys])
    rows = np.array([index.get(k, -1) for k in keys])
    own = model.wv.vectors if settings.model == "word2vec" else model.wv.vectors_vocab
    own[is_shared] = init.vectors[rows[is_shared]]
    _start_domain_words(own, keys, is_shared, docs, init, settings.window)
    factor = 0.0 if settings.keep == "frozen" else SLOW_FACTOR
    lockf = np.where(is_shared, factor, 1.0).astype(np.float32)
    ngram_source = None
    if settings.model == "word2vec":
        model.wv.vectors_lockf = lockf
    else:
        ngram_source = _start_ngrams(model, init, is_shared, rows)
        model.wv.vectors_vocab_lockf = lockf
        model.wv.vectors_ngrams_lockf = np.full(
            1, factor if ngram_source == "init" else 1.0, dtype=np.float32
        )
        model.wv.adjust_vectors()
    model.train(
        docs,
        total_examples=model.corpus_count,
        epochs=settings.epochs,
        callbacks=[_epoch_callback(on_epoch)] if on_epoch is not None else [],
    )
    trained_own = model.wv.vectors if settings.model == "word2vec" else model.wv.vectors_vocab
    trained = np.array(trained_own[is_shared], dtype=np.float32)
    pretrained = init.vectors[rows[is_shared]]
    shift = np.linalg.norm(trained - pretrained, axis=1) / np.maximum(
        np.linalg.norm(pretrained, axis=1), 1e-12
    )
    out = init.vectors.copy()
    n_projected = 0
    if settings.keep == "slow":
        kept, n_projected = project(trained, pretrained, settings.max_shift)
        out[rows[is_shared]] = kept
    order = sorted(range(len(domain)), key=lambda i: -counts[domain[i]])  # stable: first seen
    domain = [domain[i] for i in order]
    where = {k: i for i, k in enumerate(keys)}
    learned = np.asarray(model.wv.vectors, dtype=np.float32)
    new = np.stack([learned[where[w]] for w in domain]) if domain else out[:0]
    if not np.isfinite(new).all() or not np.isfinite(out).all():
        raise BackboneError(
            "finite word vectors after training",
            "NaN or infinite values",
            "train again with fewer --epochs or another --seed",
        )
    ngrams, minn, maxn = init.ngrams, init.minn, init.maxn
    if settings.model == "fasttext":
        ngrams = np.asarray(model.wv.vectors_ngrams, dtype=np.float32)
        minn, maxn = int(model.wv.min_n), int(model.wv.max_n)
    words = [*init.words, *domain]
    after = vocabulary_coverage(WordTokenizer(words, "default", init.lowercase), texts)
    stats: dict[str, Any] = {
        "documents": len(texts),
        "tokens": before["tokens"],
        "distinct_words": before["distinct_words"],
        "shared_words": len(shared),
        "domain_words": len(domain),
        "domain_words_too_rare": sum(
            1 for w in counts if w not in index and counts[w] < settings.min_count
        ),
        "oov_token_rate_before": before["oov_token_rate"],
        "oov_token_rate_after": after["oov_token_rate"],
        "shared_shift_median": float(np.median(shift)) if shift.size else 0.0,
        "shared_shift_max": float(shift.max()) if shift.size else 0.0,
        "shared_projected": n_projected,
        "slow_factor": factor,
        "domain_start": "context average",
        "train_seconds": time.perf_counter() - t0,
    }
    if settings.model == "fasttext":
        stats.update(buckets=int(ngrams.shape[0]) if ngrams is not None else 0)
        stats.update(ngrams_start=ngram_source, minn=minn, maxn=maxn)
    vectors = WordVectors(
        words=words,
        vectors=np.concatenate([out, new]),
        source=f"embed-train:{init.source}",
        counts=None,
        ngrams=ngrams,
        minn=minn,
        maxn=maxn,
        n_pretrained=len(init.words),
    )
    return TrainedVectors(vectors, stats, domain)


def project(new: np.ndarray, pretrained: np.ndarray, max_shift: float) -> tuple[np.ndarray, int]:
    """Each row of ``new`` moved back toward its ``pretrained`` row until it is at most
    ``max_shift`` times that row's length away; and how many rows had to move."""
    delta = new - pretrained
    dist = np.linalg.norm(delta, axis=1)
    radius = max_shift * np.linalg.norm(pretrained, axis=1)
    over = dist > radius
    scale = np.ones_like(dist)
    scale[over] = radius[over] / dist[over]
    return (pretrained + delta * scale[:, None]).astype(np.float32), int(over.sum())


def _build(
    settings: TrainSettings, init: WordVectors, docs: list[list[str]], known: set[str]
) -> Any:
    """The gensim model with its vocabulary: every shared word (however rare) and the
    words seen ``min_count`` times."""
    from gensim.models import FastText, Word2Vec
    from gensim.utils import RULE_DEFAULT, RULE_KEEP

    common = {
        "vector_size": init.dim,
        "window": settings.window,
        "min_count": settings.min_count,
        "workers": settings.workers,
        "seed": settings.seed,
        "epochs": settings.epochs,
        "sg": 0,
        "negative": 5,
        "hs": 0,
    }
    if settings.model == "word2vec":
        model = Word2Vec(**common)
    else:
        carried = init.ngrams is not None
        model = FastText(
            **common,
            bucket=int(init.ngrams.shape[0]) if init.ngrams is not None else settings.buckets,
            min_n=init.minn if carried else MIN_N,
            max_n=init.maxn if carried else MAX_N,
        )

    def keep_shared(word: str, count: int, min_count: int) -> int:
        return int(RULE_KEEP if word in known else RULE_DEFAULT)

    model.build_vocab(docs, trim_rule=keep_shared)
    return model


def _start_domain_words(
    own: np.ndarray,
    keys: list[str],
    is_shared: np.ndarray,
    docs: list[list[str]],
    init: WordVectors,
    window: int,
) -> None:
    """Each domain word's row of ``own`` set to the SIF-weighted average of the pretrained
    vectors within ``window`` words of its occurrences, without the common component (left
    at gensim's random start when no pretrained word is ever near it)."""
    position = {k: i for i, k in enumerate(keys) if not is_shared[i]}
    if not position:
        return
    index = {w: i for i, w in enumerate(init.words)}
    p = init.probabilities()
    weight = SIF_A / (SIF_A + p)
    total = np.zeros((len(keys), init.dim), dtype=np.float64)
    mass = np.zeros(len(keys), dtype=np.float64)
    for doc in docs:
        rows = [index.get(w, -1) for w in doc]
        for i, w in enumerate(doc):
            k = position.get(w)
            if k is None:
                continue
            for j in range(max(0, i - window), min(len(doc), i + window + 1)):
                r = rows[j]
                if j != i and r >= 0:
                    total[k] += weight[r] * init.vectors[r]
                    mass[k] += weight[r]
    hit = mass > 0
    if not hit.any():
        return
    start = total[hit] / mass[hit, None]
    u = common_component(init.vectors, p).astype(np.float64)
    own[hit] = (start - np.outer(start @ u, u)).astype(own.dtype)


def _start_ngrams(model: Any, init: WordVectors, is_shared: np.ndarray, rows: np.ndarray) -> str:
    """fastText's n-gram rows: the init vectors' own (``"init"``), or each the mean of the
    pretrained vectors of the shared words whose n-grams hash to it (``"shared words"``)."""
    wv = model.wv
    if init.ngrams is not None:
        wv.vectors_ngrams[:] = init.ngrams
        return "init"
    total = np.zeros(wv.vectors_ngrams.shape, dtype=np.float64)
    n = np.zeros(len(total), dtype=np.float64)
    for k in np.flatnonzero(is_shared):
        buckets = np.asarray(wv.buckets_word[k], dtype=np.int64)
        np.add.at(total, buckets, init.vectors[rows[k]])
        np.add.at(n, buckets, 1.0)
    hit = n > 0
    wv.vectors_ngrams[hit] = (total[hit] / n[hit, None]).astype(wv.vectors_ngrams.dtype)
    return "shared words"


def _epoch_callback(on_epoch: Callable[[int], None]) -> Any:
    from gensim.models.callbacks import CallbackAny2Vec

    class _Epochs(CallbackAny2Vec):
        def __init__(self) -> None:
            self.epoch = 0

        def on_epoch_end(self, model: Any) -> None:
            self.epoch += 1
            on_epoch(self.epoch)

    return _Epochs()
