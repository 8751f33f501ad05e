"""Tokenisation for text backbones: tokenizers (saved, or the built-in character one),
texts tokenised once into a Dataset, and batches padded to their longest text.

A batch is a dict of int64 tensors of shape (N, T): ``input_ids``, ``attention_mask`` and,
when the tokenizer produces them, ``token_type_ids``; padded to the longest text in the
batch, not to ``max_length``. transformers is imported when a tokenizer is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from headstart.backbones.base import BackboneSpec
from headstart.errors import BackboneError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: the ``spec.extra["tokenizer"]`` of backbones using :func:`char_tokenizer`
BUILT_IN_CHARS = "built-in:chars"
_UNBOUNDED = 1_000_000  # tokenizers without a limit report model_max_length = 1e30

Batch = dict[str, torch.Tensor]


# -- transformers plumbing ------------------------------------------------------------------
@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for one call, then restore."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def char_tokenizer(model_max_length: int = 128) -> Any:
    """A self-contained character-level WordPiece tokenizer (lower-cased, BERT pre-split):
    special tokens, a-z, 0-9 and punctuation, each also as a ``##`` continuation."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=1000))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tk.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer saved with ``save_pretrained`` in a local folder (read offline)."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # no tokenizer files, or an unknown tokenizer class
        raise BackboneError(
            f"a tokenizer saved in {path} (tokenizer.json, or vocab.txt with its config)",
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            "save the tokenizer beside the model with tokenizer.save_pretrained(DIR)",
        ) from e


def add_words(tokenizer: Any, words: Sequence[str]) -> int:
    """Add ``words`` to the tokenizer as tokens of their own (after its vocabulary, in
    order), each matched only as a whole word of the normalised text (so an uncased
    tokenizer matches it in any case); returns how many were new."""
    from tokenizers import AddedToken

    return int(
        tokenizer.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in words])
    )


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of everything that decides the tokenisation (vocabulary, normaliser, ...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        doc = json.loads(backend.to_str())
        # call-time settings that every tokenizer(...) call overwrites: not the identity
        doc.pop("truncation", None)
        doc.pop("padding", None)
        content = json.dumps(doc, sort_keys=True)
    else:
        content = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()


def max_tokens(tokenizer: Any, max_positions: int | None = None) -> int:
    """The longest input the model takes: its position limit and the tokenizer's."""
    limits = [int(max_positions)] if max_positions else []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit is not None and 0 < tok_limit < _UNBOUNDED:
        limits.append(int(tok_limit))
    return min(limits) if limits else 512


def run_tokenizer(spec: BackboneSpec, run_dir: Path | None) -> Any:
    """The tokenizer a saved text run used: ``run_dir/tokenizer``, or the built-in one."""
    if run_dir is not None and (Path(run_dir) / "tokenizer").is_dir():
        return load_tokenizer(Path(run_dir) / "tokenizer")
    if spec.extra.get("tokenizer") == BUILT_IN_CHARS:
        tokenizer = char_tokenizer(int(spec.extra.get("max_length", 128)))
        add_words(tokenizer, [str(w) for w in spec.extra.get("added_tokens", [])])
        return tokenizer
    raise BackboneError(
        "the run's tokenizer in RUN/tokenizer (written by save_assets)",
        f"none in {run_dir}" if run_dir is not None else "no run folder given",
        "pass the run folder, or re-run `headstart fit` to write it",
    )


# -- data: tokenised once, padded per batch ------------------------------------------------
class TextDataset(Dataset[tuple[dict[str, torch.Tensor], int]]):
    """Texts tokenised once (truncated to ``max_length``, unpadded).

    Items are ``({"input_ids", "attention_mask"[, "token_type_ids"]}, label)`` with 1-D
    int64 tensors; ``lengths`` holds each item's token count and ``n_truncated`` how many
    texts were longer than ``max_length`` and cut.
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], labels: Any, max_length: int):
        self.max_length = max_length
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(texts):
            raise BackboneError(
                "one label per text",
                f"{len(texts)} texts and {len(self.labels)} labels",
                "pass labels of the same length as the texts",
            )
        self.input_ids, self.token_type_ids, self.n_truncated = _tokenize(
            tokenizer, list(texts), max_length
        )
        self.lengths = np.array([len(ids) for ids in self.input_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        ids = torch.from_numpy(self.input_ids[i])
        item = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.token_type_ids is not None:
            item["token_type_ids"] = torch.from_numpy(self.token_type_ids[i])
        return item, int(self.labels[i])


def _tokenize(
    tokenizer: Any, texts: list[str], max_length: int
) -> tuple[list[np.ndarray], list[np.ndarray] | None, int]:
    """Input ids (and token type ids) per text, truncated, and how many were truncated."""
    if not texts:
        return [], None, 0
    if getattr(tokenizer, "is_fast", False):
        # one pass: a truncated text comes back as several rows (its overflow)
        enc = tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            return_overflowing_tokens=True,
            return_attention_mask=False,
        )
        mapping = list(enc["overflow_to_sample_mapping"])
        first = np.unique(np.asarray(mapping), return_index=True)[1]
        n_truncated = int(np.sum(np.bincount(mapping, minlength=len(texts)) > 1))
        rows: list[int] = first.tolist()
    else:
        full = tokenizer(texts, verbose=False, return_attention_mask=False)["input_ids"]
        n_truncated = sum(len(ids) > max_length for ids in full)
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False)
        rows = list(range(len(texts)))
    ids = [np.asarray(enc["input_ids"][r], dtype=np.int64) for r in rows]
    types = None
    if "token_type_ids" in enc:
        types = [np.asarray(enc["token_type_ids"][r], dtype=np.int64) for r in rows]
    return ids, types, n_truncated


class PadCollate:
    """Pads a list of items to the longest one in it; returns (batch dict, labels).

    A plain class (not a closure) so that DataLoader workers can pickle it."""

    def __init__(
        self, pad_token_id: int, pad_token_type_id: int = 0, padding_side: str = "right"
    ) -> None:
        self.fill = {
            "input_ids": pad_token_id,
            "attention_mask": 0,
            "token_type_ids": pad_token_type_id,
        }
        self.left = padding_side == "left"

    def __call__(self, items: list[tuple[dict[str, torch.Tensor], int]]) -> tuple[Batch, Any]:
        dicts = [d for d, _ in items]
        longest = max((len(d["input_ids"]) for d in dicts), default=0)
        batch: Batch = {}
        for key in dicts[0] if dicts else ():
            out = torch.full((len(dicts), longest), self.fill.get(key, 0), dtype=torch.long)
            for i, d in enumerate(dicts):
                n = len(d[key])
                if self.left:
                    out[i, longest - n :] = d[key]
                else:
                    out[i, :n] = d[key]
            batch[key] = out
        labels = torch.as_tensor([y for _, y in items], dtype=torch.long)
        return batch, labels
