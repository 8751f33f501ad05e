"""How well a subword tokenizer's vocabulary covers a corpus, and which domain words to
add to it.

Texts become words as the tokenizer itself splits them before its model runs: its
normaliser, then its pre-tokenizer (BERT's splits on whitespace and punctuation); a
tokenizer without a pre-tokenizer is split by the regular expression ``\\w+|[^\\w\\s]``.
A word is such a piece holding a letter or a digit (a punctuation mark, always one piece,
is not counted). Each distinct whitespace-separated chunk of the texts is normalised and
pre-tokenised once, and each distinct word tokenised once, in one batched call without
special tokens: the cost grows with the vocabulary of the corpus, not its length.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from headstart.backbones.tokenization import quiet_transformers

_WORD = re.compile(r"\w+|[^\w\s]")
#: a domain word added to the tokenizer: letters only, at least this long and this frequent
DOMAIN_MIN_LETTERS = 4
DOMAIN_MIN_COUNT = 2


@dataclass(frozen=True)
class WordPieces:
    """A distinct word of the corpus: as the tokenizer reads it, how often it occurs, and
    the ids of its pieces."""

    word: str
    count: int
    ids: tuple[int, ...]

    @property
    def shown(self) -> str:
        """The word without the space a byte-level tokenizer keeps in front of it."""
        return self.word.strip()

    @property
    def pieces(self) -> int:
        return len(self.ids)


def word_counts(tokenizer: Any, texts: Iterable[str]) -> Counter[str]:
    """Occurrences of each word of ``texts``, keyed by the word as the tokenizer reads it
    (normalised: lower-cased by an uncased tokenizer; with the space a byte-level one
    marks word starts by)."""
    chunks: Counter[str] = Counter()
    for text in texts:
        chunks.update(str(text).split())
    backend: Any = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    words: Counter[str] = Counter()
    if pre is None:
        lower = bool(getattr(tokenizer, "do_lower_case", False))
        for chunk, n in chunks.items():
            for w in _WORD.findall(chunk.lower() if lower else chunk):
                words[w] += n
        return words
    normalizer = backend.normalizer
    for chunk, n in chunks.items():
        # a leading space, as a word inside a text has: byte-level and metaspace
        # pre-tokenizers mark it, BERT's drops it
        text = normalizer.normalize_str(" " + chunk) if normalizer else " " + chunk
        for _piece, (start, end) in pre.pre_tokenize_str(text):
            words[text[start:end]] += n
    return words


def word_pieces(tokenizer: Any, words: Sequence[str]) -> list[list[int]]:
    """The ids each word is tokenised into (no special tokens), in one batched call."""
    if not words:
        return []
    with quiet_transformers():  # a word longer than model_max_length is no error here
        enc = tokenizer(
            list(words),
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
    return [list(ids) for ids in enc["input_ids"]]


def corpus_words(tokenizer: Any, texts: Iterable[str]) -> list[WordPieces]:
    """Every distinct word of ``texts`` (pieces holding a letter or digit) with its count
    and pieces."""
    counts = word_counts(tokenizer, texts)
    words = [w for w in counts if any(ch.isalnum() for ch in w)]
    ids = word_pieces(tokenizer, words)
    return [WordPieces(w, counts[w], tuple(p)) for w, p in zip(words, ids, strict=True)]


def most_fragmented(words: Iterable[WordPieces]) -> list[WordPieces]:
    """The words split into 2 or more pieces, ranked by the pieces they cost beyond one
    token over the corpus (count x (pieces - 1)): a frequent 2-piece word (``acne``, 75
    times) ranks above a rare 4-piece one. Ties: the more frequent, then alphabetically."""
    split = [w for w in words if w.pieces >= 2]
    return sorted(split, key=lambda w: (-w.count * (w.pieces - 1), -w.count, w.shown))


def subword_report(tokenizer: Any, texts: Sequence[str], top: int = 15) -> dict[str, Any]:
    """The vocabulary report of a subword tokenizer on ``texts``: ``tokens`` (word
    occurrences), ``distinct_words``, ``pieces_per_word`` (mean pieces per occurrence),
    ``split_word_rate`` (share of occurrences split into 2 or more pieces), ``unk_rate``
    (share of occurrences with the unknown token among their pieces) and
    ``most_fragmented`` (``[word, count, pieces]``, ranked by :func:`most_fragmented`)."""
    words = corpus_words(tokenizer, texts)
    n = sum(w.count for w in words)
    unk = getattr(tokenizer, "unk_token_id", None)

    def share(k: int) -> float:
        return k / n if n else 0.0

    return {
        "kind": "subword",
        "vocabulary": len(tokenizer),
        "tokens": n,
        "distinct_words": len(words),
        "pieces_per_word": share(sum(w.count * w.pieces for w in words)),
        "split_word_rate": share(sum(w.count for w in words if w.pieces >= 2)),
        "unk_rate": share(sum(w.count for w in words if unk is not None and unk in w.ids)),
        "most_fragmented": [[w.shown, w.count, w.pieces] for w in most_fragmented(words)][:top],
    }


def domain_words(tokenizer: Any, texts: Sequence[str], n: int) -> list[WordPieces]:
    """The ``n`` words of ``texts`` to add to the tokenizer: letters only, at least
    :data:`DOMAIN_MIN_LETTERS` (4) long, seen at least :data:`DOMAIN_MIN_COUNT` (2) times
    and split into 2 or more pieces; ranked as the report's most fragmented words (by the
    pieces they cost: count x (pieces - 1)). Words are as the tokenizer reads them
    (lower-cased by an uncased tokenizer)."""
    merged: dict[str, WordPieces] = {}
    for w in corpus_words(tokenizer, texts):
        word = w.shown
        if len(word) < DOMAIN_MIN_LETTERS or not word.isalpha():
            continue
        seen = merged.get(word)
        if seen is None:
            merged[word] = WordPieces(word, w.count, w.ids)
        else:  # " word" and "word" (byte-level): the pieces of the commoner form
            ids = w.ids if w.count > seen.count else seen.ids
            merged[word] = WordPieces(word, seen.count + w.count, ids)
    eligible = [w for w in merged.values() if w.count >= DOMAIN_MIN_COUNT]
    return most_fragmented(eligible)[: max(int(n), 0)]
