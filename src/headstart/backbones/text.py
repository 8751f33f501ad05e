"""Text backbones: what every text backbone shares (the tokenizer, dataset, padding,
cache identity and a linear head on the pooled embedding). The families are
:mod:`headstart.backbones.hf_text` (a fine-tunable Hugging Face encoder) and
:mod:`headstart.backbones.onnx_text` (a frozen ONNX graph); tokenisation lives in
:mod:`headstart.backbones.tokenization`, re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.backbones.base import Backbone, BackboneSpec
from headstart.backbones.subwords import subword_report
from headstart.backbones.tokenization import (
    SPECIAL_TOKENS,
    Batch,
    PadCollate,
    TextDataset,
    char_tokenizer,
    load_tokenizer,
    max_tokens,
    quiet_transformers,
    run_tokenizer,
    tokenizer_sha256,
)
from headstart.errors import BackboneError
from headstart.storage import replaced_folder

__all__ = [
    "POOLINGS",
    "SPECIAL_TOKENS",
    "Batch",
    "PadCollate",
    "TextBackbone",
    "TextDataset",
    "char_tokenizer",
    "load_tokenizer",
    "max_tokens",
    "mean_pool",
    "quiet_transformers",
    "run_tokenizer",
    "tokenizer_sha256",
]

POOLINGS = ("mean", "cls")
_UNSAFE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens the attention mask keeps (sentence-transformers' convention)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def texts_of(samples: Any) -> Any:
    """``samples.texts``, or the error a text backbone gives for samples without texts."""
    texts = getattr(samples, "texts", None)
    if texts is None or isinstance(texts, str):
        raise BackboneError(
            "text samples with .texts (a list of strings) and .labels",
            f"a {type(samples).__name__}",
            "load texts with headstart.data (e.g. from_texts) for a text backbone",
        )
    return texts


# -- the backbones ----------------------------------------------------------------------------
class TextBackbone(Backbone):
    """What every text backbone shares: the tokenizer (not a module, not in the state dict),
    dataset / collate / batch order / cache identity, and a linear head on the pooled
    embedding. Subclasses implement ``embed``, ``forward_features`` and ``layer_groups``."""

    def __init__(
        self,
        spec: BackboneSpec,
        tokenizer: Any,
        feature_dim: int,
        num_classes: int,
        max_length: int,
        pooling: str,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise BackboneError(
                f"pooling to be one of {', '.join(POOLINGS)}", repr(pooling), "use mean or cls"
            )
        self.spec = spec
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        spec.modality = "text"
        spec.input_size = self.max_length
        spec.feature_dim = int(feature_dim)
        spec.extra["pooling"] = pooling
        spec.extra["max_length"] = self.max_length
        spec.extra.setdefault("tokenizer", type(tokenizer).__name__)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.spec.feature_dim, num_classes)

    def forward(self, x: Batch) -> torch.Tensor:
        emb = self.embed(x)
        return self.classifier(self.dropout(emb.to(self.classifier.weight.dtype)))

    def head(self) -> nn.Module:
        return self.classifier

    def reset_head(self, num_classes: int) -> None:
        old = self.classifier.weight
        self.classifier = nn.Linear(self.spec.feature_dim, num_classes).to(old.device)

    # -- preprocessing ------------------------------------------------------------------------
    def make_dataset(self, samples: Any, train: bool = False, augment: str = "none") -> Any:
        """Tokenise ``samples.texts`` once (``augment`` does not apply to text)."""
        texts = texts_of(samples)
        return TextDataset(self.tokenizer, texts, samples.labels, self.max_length)

    def pool_layer(self, hidden: torch.Tensor, x: Any, module: nn.Module) -> torch.Tensor:
        """A layer's token states pooled as the final embedding is (mask mean or [CLS])."""
        if hidden.dim() != 3:
            return super().pool_layer(hidden, x, module)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = x.get("attention_mask") if isinstance(x, dict) else None
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return mean_pool(hidden, mask)

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        return PadCollate(pad_id, int(getattr(tok, "pad_token_type_id", 0) or 0), tok.padding_side)

    def batch_order(self, dataset: Any) -> list[int] | None:
        """Longest texts first, so each batch pads little."""
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            return None
        return np.argsort(-np.asarray(lengths), kind="stable").tolist()

    def vocabulary_report(self, texts: Any, top: int = 15) -> dict[str, Any]:
        """How the tokenizer splits the words of ``texts``: pieces per word, the share of
        words split and of words with an unknown piece, and the most fragmented words
        (:func:`~headstart.backbones.subwords.subword_report`)."""
        return subword_report(self.tokenizer, list(texts), top)

    def preprocess_id(self) -> str:
        return (
            f"text:tokenizer={tokenizer_sha256(self.tokenizer)}:max_length={self.max_length}"
            f":pooling={self.pooling}"
        )

    def save_assets(self, run_dir: Path) -> None:
        """The tokenizer, as ``run_dir/tokenizer`` (JSON and text files only)."""
        final = Path(run_dir) / "tokenizer"
        with replaced_folder(final) as out:  # a kill leaves the old folder or the new one
            written = self.tokenizer.save_pretrained(str(out))
            unsafe = [Path(f).name for f in written if Path(f).suffix in _UNSAFE_SUFFIXES]
        if unsafe:
            for f in unsafe:
                (final / f).unlink(missing_ok=True)
            raise BackboneError(
                "a tokenizer that saves as JSON and text files",
                f"{type(self.tokenizer).__name__} wrote {unsafe}",
                "use a fast (tokenizer.json) tokenizer",
            )
