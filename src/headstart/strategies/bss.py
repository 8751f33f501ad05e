"""``bss``: fine-tuning with Batch Spectral Shrinkage (Chen, Wang, Fu, Long & Wang 2019,
"Catastrophic forgetting meets negative transfer").

Each step adds ``eta * sum_{i<=k} s_{-i}^2``, the squares of the ``k`` smallest singular
values of the batch's pooled features (the matrix the head reads, batch x features):
the directions the small target data barely spans, where fine-tuning would otherwise
learn what does not transfer, are shrunk. Defaults from the paper: ``eta`` = 0.001,
``k`` = 1. ``--strategy bss``, ``bss:ETA`` or ``bss:ETA,K``.
"""

from __future__ import annotations

from typing import Any

import torch

from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies.base import STRATEGIES, StrategyContext, numeric_arg
from headstart.strategies.builtin import Finetune
from headstart.strategies.head_inputs import HeadInputs


def spectral_shrinkage(features: torch.Tensor, k: int) -> torch.Tensor:
    """The sum of the squares of the ``k`` smallest singular values of ``features``
    (all of them when the matrix has fewer)."""
    s = torch.linalg.svdvals(features.float())
    return (s[-k:] ** 2).sum()


@STRATEGIES.register(
    "bss",
    help="Fine-tuning with Batch Spectral Shrinkage (Chen et al. 2019): eta times the "
    "squared k smallest singular values of each batch's features; bss:ETA,K "
    "(default 0.001,1).",
)
class BSS(Finetune):
    name = "bss"
    takes_arg = True
    ETA = 0.001
    K = 1

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        eta, k = numeric_arg(self.name, arg, (self.ETA, float(self.K)), ("ETA", "K"))
        if k < 1 or k != int(k):
            raise ConfigError(
                "K a whole number of singular values, at least 1",
                f"{self.name}:{arg}",
                "use e.g. --strategy bss:0.001,1",
            )
        self.eta, self.k = eta, int(k)
        self._features = HeadInputs()

    def setup(self, ctx: StrategyContext) -> None:
        self._features.attach(ctx.model)

    def teardown(self, ctx: StrategyContext) -> None:
        self._features.detach()

    def loss_term(
        self, ctx: StrategyContext, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        return self.eta * spectral_shrinkage(self._features.take("bss"), self.k)

    def summary(self) -> dict[str, Any]:
        return {"bss": {"eta": self.eta, "k": self.k}}
