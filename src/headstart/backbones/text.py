"""Text backbones: a Hugging Face encoder (fine-tunable) or an ONNX graph (frozen) behind
the Backbone contract, with the tokenisation, padding and cache identity they share.

A batch is a dict of int64 tensors of shape (N, T): ``input_ids``, ``attention_mask`` and,
when the tokenizer produces them, ``token_type_ids``; padded to the longest text in the
batch, not to ``max_length``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import string
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.errors import BackboneError

POOLINGS = ("mean", "cls")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_UNBOUNDED = 1_000_000  # tokenizers without a limit report model_max_length = 1e30
_UNSAFE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")
# where BERT-like encoders keep their stack of transformer layers
_LAYER_LISTS = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer")

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


def _model_kwargs(config: Any) -> dict[str, Any]:
    """``add_pooling_layer=False`` where the model class takes it (no unused pooler)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        cls: Any = MODEL_MAPPING[type(config)]
    except KeyError:
        raise BackboneError(
            "a Hugging Face encoder architecture that AutoModel knows",
            f"model_type {getattr(config, 'model_type', '?')!r}",
            "use an encoder such as BERT, RoBERTa, DistilBERT or MiniLM",
        ) from None
    params = inspect.signature(cls).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in params else {}


def build_encoder(config: Any, pretrained_dir: str | Path | None = None) -> nn.Module:
    """A Hugging Face encoder in float32: random weights from ``config``, or the weights
    saved in ``pretrained_dir`` (read offline)."""
    from transformers import AutoModel

    kw = _model_kwargs(config)
    with quiet_transformers():
        if pretrained_dir is None:
            return AutoModel.from_config(config, dtype=torch.float32, **kw)
        return AutoModel.from_pretrained(
            str(pretrained_dir), config=config, dtype=torch.float32, local_files_only=True, **kw
        )


def config_from_dict(d: dict[str, Any]) -> Any:
    """A transformers config rebuilt from ``config.to_dict()`` (as kept in a spec)."""
    from transformers import AutoConfig

    d = dict(d)
    model_type = d.pop("model_type", None)
    if not model_type:
        raise BackboneError(
            "a Hugging Face config with a model_type",
            f"keys {sorted(d)[:8]}",
            "save the encoder with model.save_pretrained(DIR)",
        )
    try:
        return AutoConfig.for_model(model_type, **d)
    except ValueError as e:
        raise BackboneError(
            "a model_type this version of transformers knows",
            f"{model_type!r} ({e})",
            "upgrade transformers",
        ) from e


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """A copy holding only JSON (and YAML) types; anything else becomes its string."""
    out: dict[str, Any] = json.loads(json.dumps(d, default=str))
    return out


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


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens the attention mask keeps (sentence-transformers' convention)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


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
        texts = getattr(samples, "texts", None)
        if texts is None or isinstance(texts, str):
            raise BackboneError(
                "text samples with .texts (a list of strings) and .labels",
                f"a {type(samples).__name__}",
                "load texts with headstart.data (e.g. from_texts) for a text backbone",
            )
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

    def preprocess_id(self) -> str:
        return (
            f"text:tokenizer={tokenizer_sha256(self.tokenizer)}:max_length={self.max_length}"
            f":pooling={self.pooling}"
        )

    def save_assets(self, run_dir: Path) -> None:
        """The tokenizer, as ``run_dir/tokenizer`` (JSON and text files only)."""
        out = Path(run_dir) / "tokenizer"
        written = self.tokenizer.save_pretrained(str(out))
        unsafe = [Path(f).name for f in written if Path(f).suffix in _UNSAFE_SUFFIXES]
        if unsafe:
            for f in unsafe:
                (out / f).unlink(missing_ok=True)
            raise BackboneError(
                "a tokenizer that saves as JSON and text files",
                f"{type(self.tokenizer).__name__} wrote {unsafe}",
                "use a fast (tokenizer.json) tokenizer",
            )


class HFTextBackbone(TextBackbone):
    """A Hugging Face encoder (``AutoModel``, no pooler) plus its tokenizer; pooled by a
    masked mean over the tokens or by the first ([CLS]) token."""

    def __init__(
        self,
        spec: BackboneSpec,
        encoder: nn.Module,
        tokenizer: Any,
        num_classes: int,
        pooling: str = "mean",
        max_length: int = 256,
        drop_rate: float = 0.0,
    ) -> None:
        config: Any = encoder.config
        limit = max_tokens(tokenizer, getattr(config, "max_position_embeddings", None))
        super().__init__(
            spec,
            tokenizer,
            int(config.hidden_size),
            num_classes,
            min(int(max_length), limit),
            pooling,
            drop_rate,
        )
        self.encoder = encoder
        for name in ("dropout", "classifier"):  # input to output in the state dict too
            self._modules[name] = self._modules.pop(name)
        spec.extra["kind"] = "hf"
        spec.extra["hf_config"] = jsonable(config.to_dict())
        params = inspect.signature(encoder.forward).parameters
        self._inputs = {"input_ids", "attention_mask", "token_type_ids"} & set(params)

    def forward_features(self, x: Batch) -> torch.Tensor:
        inputs = {k: v for k, v in x.items() if k in self._inputs}
        return self.encoder(**inputs).last_hidden_state

    def embed(self, x: Batch) -> torch.Tensor:
        hidden = self.forward_features(x)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = x.get("attention_mask")
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return mean_pool(hidden, mask)

    def layer_groups(self) -> list[LayerGroup]:
        """``embeddings``, ``layer.0`` .. ``layer.{L-1}``, then ``head``. Parameters outside
        both (e.g. a final norm) join the group before the layers or form ``final``."""
        named = list(self.encoder.named_parameters())
        prefix = _layer_list_prefix(self.encoder)
        groups: dict[str, list[nn.Parameter]] = {}
        if prefix is None:  # not BERT-like: one group per top-level child
            for n, p in named:
                groups.setdefault(n.split(".")[0], []).append(p)
        else:
            seen_layer = False
            for n, p in named:
                if n.startswith(prefix + "."):
                    seen_layer = True
                    name = f"layer.{n[len(prefix) + 1 :].split('.')[0]}"
                elif n.startswith("embeddings.") or not seen_layer:
                    name = "embeddings"
                else:
                    name = "final"
                groups.setdefault(name, []).append(p)
        out = [LayerGroup(name, ps) for name, ps in groups.items()]
        out.append(LayerGroup("head", list(self.classifier.parameters())))
        return out


def _layer_list_prefix(encoder: nn.Module) -> str | None:
    for path in _LAYER_LISTS:
        try:
            mod = encoder.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            return path
    return None


class OnnxTextBackbone(TextBackbone):
    """A frozen ONNX sentence encoder run by onnxruntime on the CPU, plus a trainable linear
    head. Only the head trains: ``trainable_body`` is False and ``layer_groups`` is the
    head alone."""

    trainable_body: ClassVar[bool] = False

    def __init__(
        self,
        spec: BackboneSpec,
        onnx_path: str | Path,
        tokenizer: Any,
        num_classes: int,
        output_name: str = "461",
        max_length: int = 128,
        drop_rate: float = 0.0,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        session = _onnx_session(self.onnx_path)
        outputs = {o.name: o for o in session.get_outputs()}
        if output_name not in outputs:
            raise BackboneError(
                f"an ONNX output named {output_name!r} (the pooled embedding)",
                f"outputs {sorted(outputs)}",
                "pass the name of the graph's pooled output",
            )
        dim = outputs[output_name].shape[-1]
        if not isinstance(dim, int):
            raise BackboneError(
                "a pooled ONNX output of fixed width", f"shape {outputs[output_name].shape}", ""
            )
        super().__init__(
            spec,
            tokenizer,
            dim,
            num_classes,
            min(max_length, max_tokens(tokenizer)),
            "mean",
            drop_rate,
        )
        self.session: Any = session
        self.output_name = output_name
        # the per-token output, if the graph exposes one (rank 3, same width)
        self._hidden_name = next(
            (n for n, o in outputs.items() if len(o.shape) == 3 and o.shape[-1] == dim), None
        )
        spec.extra["kind"] = "onnx"
        spec.extra["onnx_output"] = output_name

    def _run(self, x: Batch, names: list[str]) -> list[np.ndarray]:
        ids = x["input_ids"]
        feeds = {}
        for inp in self.session.get_inputs():
            if inp.name in x:
                feeds[inp.name] = x[inp.name].detach().cpu().numpy().astype(np.int64)
            elif inp.name in ("attention_mask", "token_type_ids"):
                fill = 1 if inp.name == "attention_mask" else 0
                feeds[inp.name] = np.full(tuple(ids.shape), fill, dtype=np.int64)
            else:
                raise BackboneError(
                    f"a batch with the ONNX graph's input {inp.name!r}",
                    f"keys {sorted(x)}",
                    "tokenise with this backbone's make_dataset and collate_fn",
                )
        outs: list[np.ndarray] = self.session.run(names, feeds)
        return outs

    def embed(self, x: Batch) -> torch.Tensor:
        (out,) = self._run(x, [self.output_name])
        return torch.from_numpy(np.ascontiguousarray(out)).to(x["input_ids"].device)

    def forward_features(self, x: Batch) -> torch.Tensor:
        if self._hidden_name is None:
            raise BackboneError(
                "an ONNX graph with a per-token output", f"outputs of {self.onnx_path.name}", ""
            )
        (out,) = self._run(x, [self._hidden_name])
        return torch.from_numpy(np.ascontiguousarray(out)).to(x["input_ids"].device)

    def layer_groups(self) -> list[LayerGroup]:
        return [LayerGroup("head", list(self.classifier.parameters()))]

    # an InferenceSession does not pickle: copies open their own
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.session = _onnx_session(self.onnx_path)


def _onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise BackboneError("an ONNX model file", f"no file at {path}", "reinstall its package")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # truncated or not an ONNX file
        raise BackboneError(
            "a readable ONNX model", f"{path}: {e}", "reinstall the package that ships it"
        ) from e
