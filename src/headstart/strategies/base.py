"""The Strategy contract: what trains, at which learning rate, and when.

A strategy turns a backbone's layer groups into typed :class:`ParamGroup` objects and may
add a loss term or change the groups at the start of an epoch. It never runs a loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from headstart.backbones import Backbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.registry import Registry


@dataclass
class ParamGroup:
    """One layer group as the optimiser sees it."""

    name: str
    params: list[nn.Parameter]
    trainable: bool
    lr_scale: float = 1.0
    weight_decay: float | None = None  # None: the training config's value

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


class Strategy:
    """Base class; subclasses set the class flags and override ``trainable_groups``."""

    name: ClassVar[str] = ""
    #: the backbone starts from pretrained weights (False: random init, the baseline)
    uses_pretrained: ClassVar[bool] = True
    #: only the head is fitted, on cached embeddings of the frozen backbone
    frozen_backbone: ClassVar[bool] = False
    #: fit the head on cached embeddings first, then train with ``param_groups``
    probe_first: ClassVar[bool] = False
    #: the backbone's learning rate equals the head's (no pretrained features to protect)
    full_backbone_lr: ClassVar[bool] = False
    #: takes an argument after a colon, as ``freeze:3``
    takes_arg: ClassVar[bool] = False
    #: works from one labelled example per class; with fewer than
    #: ``FEW_SHOT_HOLDOUT`` examples in a class nothing is held out of the labelled data
    few_shot: ClassVar[bool] = False
    #: the head this strategy always fits (None: the config's ``head``)
    fixed_head: ClassVar[str | None] = None
    #: the head it fits when the config says auto (None: a torch linear layer)
    preferred_head: ClassVar[str | None] = None
    #: the body is first trained on sampled pairs (SetFit), then frozen for the head
    contrastive: ClassVar[bool] = False
    #: after fine-tuning, the head is fitted again on the new embeddings (prototypes)
    refit_head: ClassVar[bool] = False

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        if arg is not None and not self.takes_arg:
            raise ConfigError(
                f"strategy {self.name!r} without an argument",
                f"{self.name}:{arg}",
                f"use --strategy {self.name}",
            )
        self.cfg = cfg
        self.arg = arg
        self.epoch = 0

    # -- what trains ------------------------------------------------------------------
    def trainable_groups(self, n_groups: int, epoch: int) -> list[bool]:
        """Which of the ``n_groups`` layer groups (head last) train in ``epoch``."""
        return [True] * n_groups

    def param_groups(self, backbone: Backbone) -> list[ParamGroup]:
        """Every layer group, in order; frozen ones have ``trainable=False``.

        The list (and so the optimiser's layout) is the same in every epoch; strategies
        that unfreeze over time flip ``requires_grad`` in :meth:`on_epoch_start`.
        """
        groups = backbone.layer_groups()
        flags = self.trainable_groups(len(groups), self.epoch)
        scales = self.lr_scales(len(groups))
        return [
            ParamGroup(g.name, g.params, t, s)
            for g, t, s in zip(groups, flags, scales, strict=True)
        ]

    def lr_scales(self, n_groups: int) -> list[float]:
        """Head at 1; body groups at ``backbone_lr_scale`` x ``layer_decay``^depth."""
        base = 1.0 if self.full_backbone_lr else self.cfg.backbone_lr_scale
        decay = self.cfg.layer_decay or 1.0
        return [base * decay ** (n_groups - 1 - i) for i in range(n_groups - 1)] + [1.0]

    # -- hooks the training loop calls ----------------------------------------------------
    def on_epoch_start(self, epoch: int, backbone: Backbone) -> None:
        """Apply this epoch's freezing: ``requires_grad`` and frozen BatchNorm statistics.

        Called by the loop right after ``model.train()``.
        """
        self.epoch = epoch
        pretrained = backbone.spec.weights_sha256 is not None  # random init has no statistics
        frozen_stats = pretrained and self.cfg.bn_stats == "frozen"
        apply_freeze(backbone, self.param_groups(backbone), all_bn_stats=frozen_stats)

    def own_modules(self) -> list[nn.Module]:
        """Modules the strategy trains beside the model (a domain discriminator): the
        trainer puts them on the model's device before it builds the optimiser."""
        return []

    def extra_loss(self, batch: Any, outputs: torch.Tensor) -> torch.Tensor | None:
        """An extra loss term added to the cross-entropy (none by default)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arg": self.arg, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ConfigError(
                f"a checkpoint of strategy {self.name!r}",
                f"one of {state.get('name')!r}",
                "resume with the strategy the run was started with",
            )
        self.epoch = int(state["epoch"])

    def head_name(self) -> str:
        """The head fitted on embeddings: the config's, or with ``auto`` the strategy's
        own (its fixed or preferred head, else a torch linear layer)."""
        asked = self.cfg.head
        if self.fixed_head is not None:
            if asked not in (AUTO_HEAD, self.fixed_head):
                raise ConfigError(
                    f"no other head than {self.fixed_head!r} with strategy {self.name!r}",
                    f"--head {asked}",
                    f"drop --head, or use --strategy linear-probe --head {asked}",
                )
            return self.fixed_head
        if asked == AUTO_HEAD:
            return self.preferred_head or "linear"
        if asked == "prototype" and not (self.frozen_backbone or self.probe_first):
            raise ConfigError(
                "a strategy that fits a head on embeddings for --head prototype "
                "(linear-probe, lp-ft, prototypes, prototypes-ft, setfit)",
                f"--strategy {self.describe()}, which trains its head from scratch",
                "use --strategy prototypes or prototypes-ft",
            )
        return asked

    def describe(self) -> str:
        return self.name + (f":{self.arg}" if self.arg else "")


def apply_freeze(backbone: Backbone, groups: list[ParamGroup], all_bn_stats: bool = False) -> None:
    """Set ``requires_grad`` per group and put BatchNorm layers of frozen groups in eval mode,
    so that their running statistics stay as pretrained.

    With ``all_bn_stats`` every BatchNorm layer normalises with its pretrained statistics
    (its scale and shift still train where the group does). On a small target dataset whose
    images differ from the source's, batch statistics in training and running statistics
    in evaluation disagree and fine-tuning first destroys the pretrained features; keeping
    the statistics avoids that (the advice of the Keras transfer-learning guide).
    """
    frozen: set[int] = set()
    for g in groups:
        for p in g.params:
            p.requires_grad_(g.trainable)
            if not g.trainable:
                frozen.add(id(p))
    for m in backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            all_bn_stats or id(m.weight) in frozen
        ):
            m.eval()


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
#: the head setting that lets each strategy pick its own
AUTO_HEAD = "auto"


def build_strategy(cfg: StrategyConfig) -> Strategy:
    """``cfg.name`` is a registered name, optionally with an argument: ``freeze:3``."""
    name, _, arg = cfg.name.partition(":")
    cls = STRATEGIES.get(name)
    return cls(cfg, arg or None)
