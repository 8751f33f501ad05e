"""Feature-level domain adaptation: cheap, closed-form baselines as strategies.

They need no adversary and no target labels, cost one pass over each domain (seconds on
cached features), and are the plainest strong baselines any deep method must beat:

- ``feature-std``: each domain's pooled features standardised by its own mean and spread;
  the head is fitted on the standardised source and applied to the standardised target.
- ``feature-coral``: closed-form CORAL (Sun et al. 2016): the source features re-coloured
  with the target's covariance; the head fitted on them reads the target as it is.
- ``adabn``: AdaBN (Li et al. 2016): the head fitted on features under BatchNorm statistics
  of the source, then every BatchNorm layer's statistics re-estimated on the target
  (only statistics change, no weight).

Each runs on the frozen pretrained backbone (``phases = ("align",)``); the ``ft-`` forms
fine-tune first as lp-ft does (``("probe", "train", "align")``) and align the fine-tuned
model's features. On images ``headstart adapt`` runs the ``ft-`` forms on its source-only
run instead of training it again, so they add seconds, not a second training (a text run
folder cannot be trained from, so on text they are left out of ``--method all``).

The run's model is the *target-domain* model: its head (and for AdaBN its statistics)
reads target inputs. What the same model is on the source domain (the head before the
target's statistics were folded in, the source BatchNorm statistics) is written beside it
as ``source_side.safetensors``; the label-free selection of ``headstart adapt`` scores
source validation data with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from rich.console import Console
from torch import nn

from headstart.adaptation.alignment import AffineMap, coral_map, standardize_domains
from headstart.backbones import Backbone
from headstart.backbones.weights import sha256_state
from headstart.errors import ConfigError
from headstart.features import calibrate_batchnorm
from headstart.features.embedder import Embedder
from headstart.heads.probe import fit_probe
from headstart.storage import write_safetensors
from headstart.strategies.base import STRATEGIES, Strategy

SOURCE_SIDE_FILE = "source_side.safetensors"


@dataclass
class AlignContext:
    """What an alignment reads: the model as trained so far, its embedder (cached
    embeddings of the unchanged backbone), the labelled source splits and the unlabelled
    target samples (labels already removed)."""

    model: Backbone
    emb: Embedder
    train: Any
    val: Any
    target: Any
    num_classes: int
    seed: int = 0
    batch_size: int = 64
    device: str | torch.device = "cpu"
    progress: bool = False
    console: Console = field(default_factory=lambda: Console(quiet=True))
    #: the backbone's weights are the ones the cache key names (nothing trained yet)
    cached: bool = True

    def views(self, samples: Any, what: str) -> list[np.ndarray]:
        """The embeddings of each view of ``samples`` by the model as it is now."""
        if self.cached:
            return [v.numpy() for v in self.emb.views(samples, what)]
        return [self.emb.uncached(samples, what).numpy()]

    def features(self, samples: Any, what: str) -> np.ndarray:
        """The evaluation embeddings (views averaged) of ``samples``."""
        views = self.views(samples, what)
        return np.mean(views, axis=0) if len(views) > 1 else views[0]


@dataclass
class SourceSide:
    """The run's model as it reads the source domain: a linear head on the backbone's
    features and, for AdaBN, the BatchNorm statistics of the source."""

    weight: np.ndarray
    bias: np.ndarray
    batchnorm: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        tensors = {
            "head.weight": torch.as_tensor(self.weight, dtype=torch.float32),
            "head.bias": torch.as_tensor(self.bias, dtype=torch.float32),
            **{f"batchnorm.{k}": v.detach().cpu().contiguous() for k, v in self.batchnorm.items()},
        }
        write_safetensors(tensors, folder / SOURCE_SIDE_FILE)

    def probs(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, dtype=np.float64) @ self.weight.T + self.bias
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return np.asarray(p / p.sum(1, keepdims=True))

    def apply_batchnorm(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Put the source statistics into ``model``; returns the ones replaced."""
        return swap_batchnorm(model, self.batchnorm)


def read_source_side(folder: str | Path) -> SourceSide | None:
    """The source side a feature-level run wrote, or None for any other run."""
    path = Path(folder) / SOURCE_SIDE_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    t = load_file(str(path))
    bn = {k.removeprefix("batchnorm."): v for k, v in t.items() if k.startswith("batchnorm.")}
    return SourceSide(t["head.weight"].double().numpy(), t["head.bias"].double().numpy(), bn)


def batchnorm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics of every BatchNorm layer of ``model``, by buffer name."""
    return {
        f"{name}.{b}": getattr(m, b).detach().clone()
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in ("running_mean", "running_var", "num_batches_tracked")
        if getattr(m, b, None) is not None
    }


def swap_batchnorm(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy ``state`` (buffers by name) into ``model``; returns the values replaced."""
    buffers = dict(model.named_buffers())
    old: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name not in buffers:
            raise ConfigError(
                "BatchNorm statistics of the run's own backbone",
                f"a statistic {name!r} the backbone does not have",
                "read the source side with the backbone of the run that wrote it",
            )
        old[name] = buffers[name].detach().clone()
        buffers[name].copy_(value.to(buffers[name].device))
    return old


class FeatureAlignment(Strategy):
    """A head fitted on source features mapped by a closed-form alignment (``maps``)."""

    name = "feature-alignment"
    phases: ClassVar[tuple[str, ...]] = ("align",)
    #: registered beside the adaptation methods: needs unlabelled target data
    image_only: ClassVar[bool] = False
    #: the strategy ``headstart adapt`` runs on its source-only run instead of this one
    on_source_only: ClassVar[str | None] = None

    def check_inputs(self, target: Any) -> None:
        if target is None:
            raise ConfigError(
                f"unlabelled target-domain data for the alignment strategy {self.name!r}",
                "none",
                f"pass --target DATA to `headstart fit --strategy {self.name}` (target= in "
                f"Python), or compare it with `headstart adapt --target DATA --method "
                f"{self.name}`",
            )

    def maps(self, source: np.ndarray, target: np.ndarray) -> tuple[AffineMap, AffineMap]:
        raise NotImplementedError

    def align(self, ctx: AlignContext) -> tuple[SourceSide, dict[str, Any]]:
        """Fit the head for the target domain; return the source side and a summary."""
        y = np.asarray(ctx.train.labels)
        train_views = ctx.views(ctx.train, "train")
        src = np.mean(train_views, axis=0) if len(train_views) > 1 else train_views[0]
        tgt = ctx.features(ctx.target, "target")
        to_shared_s, to_shared_t = self.maps(src, tgt)
        fit = fit_probe([to_shared_s(v) for v in train_views], y, ctx.num_classes, seed=ctx.seed)
        w, b = fit.weight.double().numpy(), fit.bias.double().numpy()
        wt, bt = to_shared_t.fold(w, b)
        device = next(ctx.model.head().parameters()).device
        ctx.model.load_head(
            torch.as_tensor(wt, dtype=torch.float32, device=device),
            torch.as_tensor(bt, dtype=torch.float32, device=device),
        )
        side = SourceSide(*to_shared_s.fold(w, b))
        summary = {"source_rows": len(src), "target_rows": len(tgt), "c": fit.c}
        ctx.console.print(
            f"[bold]align[/] {self.describe()}: head fitted on {len(src)} source embeddings "
            f"aligned with {len(tgt)} unlabelled target embeddings (C={fit.c:g})"
        )
        return side, summary


@STRATEGIES.register(
    "feature-std",
    help="Domain adaptation, closed form: each domain's features standardised by its own "
    "mean and spread; the head fitted on the source (needs unlabelled target data).",
)
class FeatureStandardization(FeatureAlignment):
    name = "feature-std"

    def maps(self, source: np.ndarray, target: np.ndarray) -> tuple[AffineMap, AffineMap]:
        return standardize_domains(source, target)


@STRATEGIES.register(
    "feature-coral",
    help="Domain adaptation, closed form: CORAL (Sun et al. 2016), the source features "
    "re-coloured with the target's covariance; the head fitted on them.",
)
class FeatureCoral(FeatureAlignment):
    name = "feature-coral"

    def maps(self, source: np.ndarray, target: np.ndarray) -> tuple[AffineMap, AffineMap]:
        d = source.shape[1]
        return coral_map(source, target), AffineMap(np.ones(d), np.zeros(d))


@STRATEGIES.register(
    "adabn",
    help="Domain adaptation, closed form: AdaBN (Li et al. 2016), the head fitted under "
    "the source's BatchNorm statistics, then the statistics re-estimated on the target.",
)
class AdaBN(FeatureAlignment):
    name = "adabn"
    #: needs BatchNorm layers: left out of ``adapt --method all`` on text encoders
    image_only = True

    @property
    def frozen_features(self) -> bool:
        return False  # the statistics change: the backbone's own final features

    @property
    def loop_trains(self) -> bool:
        return True  # after the run the cached embeddings are not the model's

    def check_backbone(self, backbone: Backbone, modality: str) -> None:
        super().check_backbone(backbone, modality)
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
            raise ConfigError(
                "a backbone with BatchNorm layers for adabn",
                f"{backbone.spec.name}, which has none",
                "use feature-std or feature-coral (they align the pooled features instead)",
            )

    def align(self, ctx: AlignContext) -> tuple[SourceSide, dict[str, Any]]:
        model = ctx.model
        data = model.make_dataset(ctx.train)
        n = calibrate_batchnorm(model, data, ctx.batch_size, ctx.device, ctx.progress)
        ctx.cached = False
        x = ctx.emb.uncached(ctx.train, "train").numpy()
        fit = fit_probe(x, np.asarray(ctx.train.labels), ctx.num_classes, seed=ctx.seed)
        device = next(model.head().parameters()).device
        model.load_head(fit.weight.to(device), fit.bias.to(device))
        side = SourceSide(
            fit.weight.double().numpy(), fit.bias.double().numpy(), batchnorm_state(model)
        )
        target = model.make_dataset(ctx.target)
        calibrate_batchnorm(model, target, ctx.batch_size, ctx.device, ctx.progress)
        model.spec.weights_sha256 = sha256_state(model.state_dict())
        model.spec.weights += " + BatchNorm statistics of the target (AdaBN)"
        ctx.console.print(
            f"[bold]align[/] adabn: head fitted under source statistics, then {n} BatchNorm "
            f"layers re-estimated on {len(ctx.target)} unlabelled target examples"
        )
        return side, {"batchnorm_layers": n, "target_rows": len(ctx.target), "c": fit.c}


class _AfterFinetune:
    """The ``ft-`` form of an alignment: lp-ft on the source first, then the alignment of
    the fine-tuned model (``headstart adapt`` runs the alignment on its source-only run)."""

    phases: ClassVar[tuple[str, ...]] = ("probe", "train", "align")


@STRATEGIES.register("ft-feature-std", help="lp-ft, then feature-std on the fine-tuned features.")
class FinetunedFeatureStandardization(_AfterFinetune, FeatureStandardization):
    name = "ft-feature-std"
    on_source_only = "feature-std"


@STRATEGIES.register(
    "ft-feature-coral", help="lp-ft, then feature-coral on the fine-tuned features."
)
class FinetunedFeatureCoral(_AfterFinetune, FeatureCoral):
    name = "ft-feature-coral"
    on_source_only = "feature-coral"


@STRATEGIES.register("ft-adabn", help="lp-ft, then adabn on the fine-tuned model.")
class FinetunedAdaBN(_AfterFinetune, AdaBN):
    name = "ft-adabn"
    on_source_only = "adabn"


#: the feature-level adaptation strategies, cheapest first
ALIGNMENTS: list[type[FeatureAlignment]] = [
    FeatureStandardization,
    FeatureCoral,
    AdaBN,
    FinetunedFeatureStandardization,
    FinetunedFeatureCoral,
    FinetunedAdaBN,
]
