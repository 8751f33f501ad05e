"""The Backbone contract every vision and text backbone satisfies.

A backbone is an ``nn.Module`` that maps a batch to class logits through a replaceable
head, exposes pooled embeddings (``embed``), and lists its parameters as ordered
layer groups from input to output, which every freezing and learning-rate strategy uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from headstart.errors import BackboneError


@dataclass
class BackboneSpec:
    """What a backbone needs from the data, and where its weights came from."""

    name: str
    arch: str
    modality: str = "image"
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    feature_dim: int = 0
    num_source_classes: int = 0
    weights: str = "random"
    weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


@dataclass
class LayerGroup:
    """A named, ordered group of parameters (stem, stages, head)."""

    name: str
    params: list[nn.Parameter]

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


class Backbone(nn.Module, ABC):
    """Pretrained feature extractor plus a replaceable classification head."""

    spec: BackboneSpec
    #: the body can be fine-tuned (False: a frozen graph, e.g. ONNX; only the head trains)
    trainable_body: ClassVar[bool] = True
    #: the views whose embeddings are averaged in evaluation (test-time augmentation)
    views: tuple[str, ...] = ("identity",)
    #: what a run folder stores instead of the whole state dict: the tensors a
    #: parameter-efficient strategy trained (None: the whole model is stored)
    stored_state: dict[str, torch.Tensor] | None = None

    @abstractmethod
    def forward(self, x: Any) -> torch.Tensor:
        """Class logits for a batch."""

    @abstractmethod
    def forward_features(self, x: Any) -> torch.Tensor:
        """Unpooled features of the last layer."""

    @abstractmethod
    def embed(self, x: Any) -> torch.Tensor:
        """Pooled features before the head, shape (N, feature_dim)."""

    def embed_view(self, x: Any, view: str) -> torch.Tensor:
        """The embedding of one view of the batch: ``identity`` or ``hflip`` (images
        mirrored left to right)."""
        if view == "hflip":
            x = torch.flip(x, dims=[-1])
        return self.embed(x)

    @abstractmethod
    def head(self) -> nn.Module:
        """The classification head (the last layer group)."""

    @abstractmethod
    def reset_head(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes."""

    @abstractmethod
    def layer_groups(self) -> list[LayerGroup]:
        """Parameters grouped from input to output; the last group is the head."""

    # -- preprocessing: how samples of this backbone's modality become batches ----------
    @abstractmethod
    def make_dataset(self, samples: Any, train: bool = False, augment: str = "none") -> Any:
        """A torch Dataset of (input, label) pairs for ``samples`` (images or texts),
        preprocessed as this backbone needs (transforms, or tokenisation done once)."""

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """How items of :meth:`make_dataset` form a batch (None: torch's default)."""
        return None

    def preprocess_id(self) -> str:
        """A stable description of the evaluation preprocessing, part of cache keys."""
        return ""

    def batch_order(self, dataset: Any) -> list[int] | None:
        """The order in which to embed ``dataset`` (e.g. by length, so padding is small);
        None keeps the dataset's order."""
        return None

    def vocabulary_report(self, texts: Any, top: int = 15) -> dict[str, Any] | None:
        """How well the backbone's vocabulary covers ``texts`` (text backbones): for word
        vectors the out-of-vocabulary shares and words, for subword tokenizers the pieces
        per word and the most fragmented words. None where it does not apply (images)."""
        return None

    def add_domain_tokens(self, texts: Any, n: int) -> list[str]:
        """Add the ``n`` most frequent over-fragmented words of ``texts`` to the tokenizer,
        returning them; only Hugging Face encoders can (see ``HFTextBackbone``)."""
        kind = str(self.spec.extra.get("kind", ""))
        what = _FIXED_VOCABULARY.get(kind, f"a {self.spec.modality} backbone")
        raise domain_tokens_error(self.spec.name, what)

    def save_assets(self, run_dir: Path) -> None:
        """Write what rebuilding the architecture needs besides the weights (JSON only)."""

    # -- the source task (e.g. ImageNet), for forgetting checks and source-head scores ---------
    def source_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The original source task's linear classifier as ``(weight, bias)``, float32 CPU
        tensors of shapes (S, D) and (S,), applied to :meth:`source_backbone`'s ``embed``
        features; None when the backbone was loaded without one (random or headless
        weights, text encoders, a cut network)."""
        return None

    def source_backbone(self) -> Backbone:
        """The backbone whose ``embed`` features :meth:`source_head` reads: this one, or
        for a wrapper whose features differ from the source network's (several layers'
        probe features), the network inside."""
        return self

    def load_head(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the head's linear weights (from a probe fitted on embeddings)."""
        head = self.head()
        if not isinstance(head, nn.Linear) or head.weight.shape != weight.shape:
            raise BackboneError(
                f"a linear head taking a weight of shape {tuple(weight.shape)}",
                f"{head}",
                "use a backbone whose classifier is a single linear layer",
            )
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)

    # -- features after each layer group (ranking layers, cutting the network) ---------------
    def dummy_batch(self) -> Any:
        """A batch of two neutral inputs, for forward passes that only probe shapes."""
        if self.spec.modality == "text":
            from torch.utils.data import default_collate

            from headstart.data import from_texts

            ds = self.make_dataset(from_texts(["a", "b"], ["x", "y"]))
            items = [ds[0], ds[1]]
            collate = self.collate_fn() or default_collate
            return collate(items)[0]
        size = self.spec.input_size
        return torch.zeros(2, 3, size, size)

    def layer_modules(self) -> dict[str, nn.Module]:
        """The module whose output ends each body layer group, by group name, input to
        output (the head excluded). Found from the parameters of each group: the deepest
        module holding only that group's parameters and its last one. Groups whose module
        does not run in ``forward_features`` (a norm inside the classifier block) are left
        out: no features can be taken there."""
        paths = self.__dict__.get("_layer_paths")  # computed once: names -> module paths
        if paths is None:
            named = list(self.named_parameters())
            name_of = {id(p): n for n, p in named}
            found: dict[str, str] = {}
            for group in self.layer_groups()[:-1]:
                names = [name_of[id(p)] for p in group.params if id(p) in name_of]
                if names and group.name not in found:
                    found[group.name] = _ending_module(names, [n for n, _ in named])
            if not found:
                raise BackboneError(
                    "a backbone whose body has layer groups to take features from",
                    f"{self.spec.name}, whose only trainable group is the head (a frozen graph)",
                    "rank or train its final features: use the name alone, without --layers "
                    "or @GROUP, or pick a PyTorch backbone",
                )
            modules = {n: self.get_submodule(path) for n, path in found.items()}
            runs = self._modules_that_run(modules)
            paths = {n: path for n, path in found.items() if n in runs}
            self.__dict__["_layer_paths"] = paths
        return {n: self.get_submodule(path) for n, path in paths.items()}

    @torch.no_grad()
    def _modules_that_run(self, modules: dict[str, nn.Module]) -> set[str]:
        ran: set[str] = set()
        handles = [
            m.register_forward_hook(lambda *_a, name=n: ran.add(name)) for n, m in modules.items()
        ]
        was_training = self.training
        device = next(self.parameters()).device
        try:
            self.eval()
            self.forward_features(to_device(self.dummy_batch(), device))
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
        return ran

    def pool_layer(self, hidden: torch.Tensor, x: Any, module: nn.Module) -> torch.Tensor:
        """A layer's output pooled to (N, C): the spatial mean of a (N, C, H, W) map, the
        mean over tokens of a (N, L, C) sequence. Maps are channels-last (N, H, W, C) where
        the module, or else the whole model, declares ``output_fmt = "NHWC"`` (timm's
        convention, e.g. Swin and MambaOut)."""
        if hidden.dim() == 4:
            fmt = getattr(module, "output_fmt", None)
            if fmt is None:
                fmt = getattr(getattr(self, "model", None), "output_fmt", None)
            if str(getattr(fmt, "value", fmt)) == "NHWC":
                return hidden.mean((1, 2))
            return hidden.mean((2, 3))
        if hidden.dim() == 3:
            return hidden.mean(1)
        return hidden.flatten(1)

    def layer_outputs(self, x: Any, layers: list[str]) -> dict[str, torch.Tensor]:
        """The raw outputs of the body layer groups ``layers``, from one forward pass that
        stops after the deepest one asked for."""
        modules = self.layer_modules()
        unknown = [n for n in layers if n not in modules]
        if unknown:
            raise BackboneError(
                f"layer groups of {self.spec.name} to take features from ({', '.join(modules)})",
                ", ".join(repr(n) for n in unknown),
                "use one of those names (`headstart backbones NAME` lists the groups)",
            )
        wanted = set(layers)
        last = max(wanted, key=list(modules).index)
        found: dict[str, torch.Tensor] = {}

        def hook_for(name: str) -> Callable[[nn.Module, Any, Any], None]:
            def hook(_m: nn.Module, _inp: Any, output: Any) -> None:
                while isinstance(output, (tuple, list)) or hasattr(output, "to_tuple"):
                    output = output[0]
                found[name] = output
                if name == last:
                    raise _StopForward

            return hook

        handles = [modules[n].register_forward_hook(hook_for(n)) for n in wanted]
        try:
            self.forward_features(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return {n: found[n] for n in layers}

    def embed_layers(self, x: Any, layers: list[str]) -> dict[str, torch.Tensor]:
        """Pooled features (N, C) after each of ``layers`` (names of body layer groups)."""
        modules = self.layer_modules()
        raw = self.layer_outputs(x, layers)
        return {n: self.pool_layer(raw[n], x, modules[n]) for n in layers}

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear head's (weight, bias), detached."""
        head = self.head()
        if not isinstance(head, nn.Linear):
            raise BackboneError(
                "a linear classifier head", f"{head}", "use a backbone with a linear head"
            )
        return head.weight.detach(), head.bias.detach()


_FIXED_VOCABULARY = {
    "vectors": "word vectors: whole words, no subword pieces to merge",
    "onnx": "a frozen ONNX graph: its embedding table cannot grow",
}


def domain_tokens_error(name: str, what: str) -> BackboneError:
    """The error of ``--add-domain-tokens`` on a backbone whose vocabulary cannot grow."""
    return BackboneError(
        "a Hugging Face encoder for --add-domain-tokens (e.g. minilm-l6, toy-bert, a "
        "transformers folder or hub name)",
        f"{name} ({what})",
        "pass --backbone minilm-l6 (or another transformers encoder); word vectors learn "
        "domain words from `headstart embed-train CORPUS --out VEC`, then --backbone VEC "
        "--oov domain; or drop --add-domain-tokens",
    )


class _StopForward(Exception):
    """Raised by a forward hook once the deepest layer asked for has run."""


def _ending_module(names: list[str], all_names: list[str]) -> str:
    """The module path whose output ends a group with parameters ``names`` (in order).

    Start from the longest common dotted prefix of the group's parameters (e.g.
    ``model.blocks.3``); if that module also holds parameters of other groups (a group
    made of siblings, like ``conv_stem`` and ``bn1`` under ``model``), go down towards
    the group's last parameter until the module is the group's own."""
    mine = set(names)
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    path = common
    last = parts[-1]
    while True:
        prefix = ".".join(path)
        inside = [n for n in all_names if not prefix or n.startswith(prefix + ".")]
        if set(inside) <= mine or len(path) >= len(last):
            return prefix
        path = last[: len(path) + 1]


def to_device(batch: Any, device: str | torch.device) -> Any:
    """Move a tensor, or a dict / list / tuple of tensors (a tokenised batch), to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
