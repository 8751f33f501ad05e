"""``l2-sp``: fine-tuning held near the pretrained weights (Li, Grandvalet & Davoine 2018,
"Explicit inductive bias for transfer learning with convolutional networks").

Every step adds ``alpha * ||w - w0||^2`` over the backbone's body (``w0``: its weights
when training starts, taken from the context) and ``beta * ||w||^2`` over the new head.
Weight decay is off in every group: decay pulls towards zero, which is what the penalty
replaces. (The paper writes ``alpha / 2`` and ``beta / 2``; here the factors are as
written above.)

``--strategy l2-sp`` (alpha = beta = 0.01), ``l2-sp:ALPHA`` or ``l2-sp:ALPHA,BETA``.
"""

from __future__ import annotations

from typing import Any

import torch

from headstart.backbones import Backbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies.base import STRATEGIES, ParamGroup, StrategyContext, numeric_arg
from headstart.strategies.builtin import Finetune


@STRATEGIES.register(
    "l2-sp",
    help="Fine-tuning with a penalty alpha*||w - w0||^2 towards the pretrained weights and "
    "beta*||w||^2 on the new head (Li et al. 2018); l2-sp:ALPHA,BETA (default 0.01,0.01).",
)
class L2SP(Finetune):
    name = "l2-sp"
    takes_arg = True
    ALPHA = 0.01
    BETA = 0.01

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        self.alpha, self.beta = self._parse(arg)
        self._body: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self._head: list[torch.nn.Parameter] = []

    def _parse(self, arg: str | None) -> tuple[float, float]:
        alpha, beta = numeric_arg(self.name, arg, (self.ALPHA, self.BETA), ("ALPHA", "BETA"))
        return alpha, beta

    def param_groups(self, backbone: Backbone) -> list[ParamGroup]:
        groups = super().param_groups(backbone)
        for g in groups:
            g.weight_decay = 0.0
        return groups

    def setup(self, ctx: StrategyContext) -> None:
        start = ctx.initial_weights()
        head = {id(p) for p in ctx.model.head().parameters()}
        self._body = [(p, start[n]) for n, p in ctx.model.named_parameters() if id(p) not in head]
        self._head = list(ctx.model.head().parameters())

    def loss_term(
        self, ctx: StrategyContext, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        if not self._body and not self._head:
            raise ConfigError(
                "the pretrained weights, taken when training starts",
                "none (setup was not called)",
                "train through Trainer.fit with a StrategyContext",
            )
        dev = outputs.device
        body = sum(
            (((p - w0.to(dev)) ** 2).sum() for p, w0 in self._body),
            torch.zeros((), device=dev),
        )
        head = sum(((p**2).sum() for p in self._head), torch.zeros((), device=dev))
        return self.alpha * body + self.beta * head
