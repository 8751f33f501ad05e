"""``lora``: low-rank adapters on the body's linear and convolutional layers, through the
``peft`` library (LoRA, Hu et al. 2022), beside the head; a probe fits the head first.

Each targeted layer ``W`` gains ``(alpha / r) * B A`` with ``A`` (r x in) and ``B``
(out x r, zero at the start), and only ``A``, ``B`` and the head train. After training
the adapters are merged into the weights, so the model predicts, evaluates and exports as
a plain one; the run folder keeps only the adapters, the head and the buffers, with the
base weights' sha256, and loading merges them again.

``--strategy lora`` or ``lora:R``, ``lora:R,ALPHA``, ``lora:R,ALPHA,DROPOUT``;
``--lora-targets`` names the layers (module names or their last parts, comma-separated).
Defaults that work on any backbone: every linear layer and every convolution that is not
depthwise in the body; rank 8, lowered (4, 2, 1) until the adapters are at most
:data:`ADAPTER_BUDGET` of the backbone's weights (MiniLM-L6 keeps 8 at 1.5%,
EfficientNet-Lite0 gets 2); alpha twice the rank; dropout 0.1 (the paper's, on small
models).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from headstart.backbones import Backbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies.base import STRATEGIES, numeric_arg
from headstart.strategies.efficient import ParameterEfficient, Part

#: the default rank is lowered until the adapters are at most this share of the weights
ADAPTER_BUDGET = 0.015
RANK = 8
DROPOUT = 0.1


def adaptable_layers(backbone: Backbone, targets: list[str] | None = None) -> dict[str, nn.Module]:
    """The body's linear and non-depthwise convolutional layers, by module name; with
    ``targets`` only those whose name is one of them or ends with ``.`` and one of them."""
    head = {id(m) for m in backbone.head().modules()}
    layers: dict[str, nn.Module] = {
        name: m
        for name, m in backbone.named_modules()
        if id(m) not in head
        and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))
    }
    if targets is None:
        return layers
    chosen: dict[str, nn.Module] = {
        n: m for n, m in layers.items() if any(n == t or n.endswith("." + t) for t in targets)
    }
    if not chosen:
        shown = sorted({n.rsplit(".", 1)[-1] for n in layers})[:12]
        raise ConfigError(
            "--lora-targets naming linear or convolutional layers of the backbone's body",
            f"{', '.join(targets)}, which match none",
            f"use names such as {', '.join(shown)} (or leave --lora-targets out for all)",
        )
    return chosen


def adapter_size(layers: dict[str, nn.Module], rank: int) -> int:
    """The number of adapter weights ``rank`` adds to ``layers`` (A and B of each)."""
    total = 0
    for m in layers.values():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += rank * (m.in_channels * kh * kw + m.out_channels)
        elif isinstance(m, nn.Linear):
            total += rank * (m.in_features + m.out_features)
    return total


class LoraAdapters(Part):
    """LoRA adapters through peft: chosen layers, rank, alpha and dropout from the
    strategy argument ``R,ALPHA,DROPOUT`` (``arg``) and ``cfg.lora_targets``."""

    def __init__(self, cfg: StrategyConfig, arg: str | None) -> None:
        labels = ("R", "ALPHA", "DROPOUT")
        rank, alpha, dropout = numeric_arg("lora", arg, (0.0, 0.0, DROPOUT), labels)
        if arg is not None and (rank < 1 or rank != int(rank) or dropout >= 1):
            raise ConfigError(
                "lora:R with R a whole rank of at least 1 (ALPHA > 0, DROPOUT below 1)",
                f"lora:{arg}",
                "use e.g. --strategy lora:8,16,0.1",
            )
        self.cfg = cfg
        self.asked_rank = int(rank) or None  # None: the default, fitted to the budget
        self.asked_alpha = alpha or None
        self.dropout = dropout
        self.rank = self.asked_rank or RANK
        self.alpha = self.asked_alpha or 2.0 * self.rank
        self.targets: list[str] = []
        self.adapter_weights = 0
        self._tuner: Any = None

    def _choose(self, backbone: Backbone) -> dict[str, nn.Module]:
        asked = self.cfg.lora_targets
        names = [t.strip() for t in asked.split(",") if t.strip()] if asked else None
        layers = adaptable_layers(backbone, names)
        if not layers:
            raise ConfigError(
                "a backbone with linear or convolutional layers for LoRA",
                f"{backbone.spec.name}, without any in its body",
                "use --strategy bitfit or finetune with it",
            )
        total = sum(p.numel() for p in backbone.parameters())
        if self.asked_rank is None:
            while self.rank > 1 and adapter_size(layers, self.rank) > ADAPTER_BUDGET * total:
                self.rank //= 2
            self.alpha = self.asked_alpha or 2.0 * self.rank
        self.adapter_weights = adapter_size(layers, self.rank)
        return layers

    def prepare(self, backbone: Backbone) -> None:
        if self._tuner is not None:
            return
        from peft import LoraConfig
        from peft.tuners.lora import LoraModel

        layers = self._choose(backbone)
        self.targets = sorted(layers)
        config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # a float works: scale alpha/r
            lora_dropout=self.dropout,
            target_modules=self.targets,
        )
        self._tuner = LoraModel(backbone, config, "default")

    def trained_params(self, backbone: Backbone) -> set[int]:
        return {id(p) for n, p in backbone.named_parameters() if ".lora_" in n}

    def merge(self, backbone: Backbone) -> None:
        if self._tuner is None:
            return
        self._tuner.merge_and_unload()
        self._tuner = None
        backbone.__dict__.pop("peft_config", None)  # the tuner's note on the model

    def summary(self) -> dict[str, Any]:
        return {
            "lora": {
                "rank": self.rank,
                "alpha": self.alpha,
                "dropout": self.dropout,
                "layers": len(self.targets),
                "adapter_weights": self.adapter_weights,
            }
        }


@STRATEGIES.register(
    "lora",
    help="Parameter-efficient: a probe, then low-rank adapters (LoRA, via peft) on the body's "
    "linear and convolutional layers train with the head, merged after training; "
    "lora:R,ALPHA,DROPOUT (default rank 8 within 1.5% of the weights, alpha 2R, 0.1); "
    "--lora-targets picks the layers; the run folder keeps only the adapters and the head.",
)
class LoRA(ParameterEfficient):
    name = "lora"
    takes_arg = True

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        self.part = LoraAdapters(cfg, arg)
