"""The pooled features a backbone's head reads, caught on the way in.

Strategies that regularise the features (a distillation target, a spectral penalty) need
the embedding of the batch the loop just ran. A forward pre-hook on ``Backbone.head()``
catches it from the training forward pass itself, so no strategy runs the model twice.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headstart.backbones import Backbone
from headstart.errors import ConfigError


class HeadInputs:
    """Catches what ``model.head()`` receives; :meth:`take` hands back the latest batch."""

    def __init__(self) -> None:
        self._caught: list[torch.Tensor] = []
        self._hook: Any = None

    def attach(self, model: Backbone) -> None:
        self.detach()
        self._hook = model.head().register_forward_pre_hook(self._catch)

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._caught.clear()

    def _catch(self, _module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self._caught.append(inputs[0])

    def take(self, what: str) -> torch.Tensor:
        """The features of the last forward pass (the older ones are dropped)."""
        if not self._caught:
            raise ConfigError(
                f"the features the backbone's head read, for {what}",
                "none (the head did not run, or setup was not called)",
                "train through Trainer.fit with a StrategyContext, on a backbone whose "
                "forward pass goes through its head()",
            )
        last = self._caught[-1]
        self._caught.clear()
        return last
