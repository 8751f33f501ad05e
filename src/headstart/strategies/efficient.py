"""Parameter-efficient fine-tuning: which few body tensors train (a *part*: LoRA adapters,
or biases and norms), shared by the strategies ``lora`` and ``bitfit`` and by ``freeze:N``
and ``gradual`` with ``--peft lora|bitfit``.

A strategy holding a part (``Strategy.part``) lists only the part's tensors in each
trainable body group (the head trains whole), trains them at ten times the body's rate of
full fine-tuning (``--backbone-lr-scale`` x 10, the head's rate by default: the BitFit and
LoRA papers train their few weights at rates about ten times those of full fine-tuning),
and keeps only what trained in its run folder, with the sha256 of the base weights;
loading builds the base model from those weights, checks the sha256 and puts the tensors
back (``Strategy.restore_model``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from headstart.backbones import Backbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies.base import Strategy

#: the parts ``--peft`` names
PEFT_PARTS = ("lora", "bitfit")


class Part:
    """The body tensors a parameter-efficient strategy trains."""

    LR_FACTOR: ClassVar[float] = 10.0

    def prepare(self, backbone: Backbone) -> None:
        """Add what trains (adapters), before the parameter groups are taken."""

    def trained_params(self, backbone: Backbone) -> set[int]:
        raise NotImplementedError

    def merge(self, backbone: Backbone) -> None:
        """Fold what :meth:`prepare` added into the model's weights."""

    def summary(self) -> dict[str, Any]:
        return {}


class NormsAndBiases(Part):
    """BitFit: the body's biases and its normalisation layers' weights."""

    def trained_params(self, backbone: Backbone) -> set[int]:
        return norm_and_bias_params(backbone)


def norm_and_bias_params(backbone: Backbone) -> set[int]:
    """The ids of the body's biases and the weights of its normalisation layers."""
    head = {id(p) for p in backbone.head().parameters()}
    ids: set[int] = set()
    for module in backbone.modules():
        is_norm = isinstance(
            module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm
        ) or type(module).__name__.endswith(("Norm", "Norm2d", "NormAct2d"))
        for name, p in module.named_parameters(recurse=False):
            if id(p) not in head and (is_norm or name == "bias"):
                ids.add(id(p))
    return ids


def make_part(cfg: StrategyConfig, strategy: str) -> Part | None:
    """The part ``cfg.peft`` names for ``strategy`` (freeze:N, gradual), or None."""
    if cfg.peft is None:
        return None
    if cfg.peft == "bitfit":
        return NormsAndBiases()
    if cfg.peft == "lora":
        from headstart.strategies.lora import LoraAdapters

        return LoraAdapters(cfg, None)
    raise ConfigError(
        f"--peft one of {', '.join(PEFT_PARTS)}",
        f"--peft {cfg.peft}",
        f"use --strategy {strategy} --peft lora",
    )


class ParameterEfficient(Strategy):
    """Base class of ``lora`` and ``bitfit``: a probe fits the head, then the part's
    tensors train with it."""

    phases: ClassVar[tuple[str, ...]] = ("probe", "train")

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        if cfg.peft is not None:
            raise ConfigError(
                "--peft only with freeze:N or gradual",
                f"--strategy {self.name} --peft {cfg.peft}",
                f"drop --peft: {self.name} is parameter-efficient already",
            )
        super().__init__(cfg, arg)
