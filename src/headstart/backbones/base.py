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

    @abstractmethod
    def forward(self, x: Any) -> torch.Tensor:
        """Class logits for a batch."""

    @abstractmethod
    def forward_features(self, x: Any) -> torch.Tensor:
        """Unpooled features of the last layer."""

    @abstractmethod
    def embed(self, x: Any) -> torch.Tensor:
        """Pooled features before the head, shape (N, feature_dim)."""

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

    def save_assets(self, run_dir: Path) -> None:
        """Write what rebuilding the architecture needs besides the weights (JSON only)."""

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

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear head's (weight, bias), detached."""
        head = self.head()
        if not isinstance(head, nn.Linear):
            raise BackboneError(
                "a linear classifier head", f"{head}", "use a backbone with a linear head"
            )
        return head.weight.detach(), head.bias.detach()


def to_device(batch: Any, device: str | torch.device) -> Any:
    """Move a tensor, or a dict / list / tuple of tensors (a tokenised batch), to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
