"""``lwf``: fine-tuning that keeps the pretrained model's outputs on the new data
(Learning without Forgetting, Li & Hoiem 2016).

A frozen copy of the backbone as it was when training starts (the teacher) sees every
training batch; the loss adds ``lambda`` times the distance between the trained model's
outputs and the teacher's on that batch:

- a backbone loaded with its source head (an ImageNet classifier): the source head on
  both models' pooled features, and the KL divergence ``KL(softmax(z0 / T) ||
  softmax(z / T))`` averaged over the batch (Li & Hoiem's temperature-scaled
  cross-entropy less the teacher's entropy, a constant: the same gradients);
- a backbone without one (text encoders, random, headless or cut weights): the pooled
  features themselves, as the mean squared distance between the two L2-normalised
  features (``2 - 2 cos``), what a sentence encoder's similarities depend on.

Defaults from the paper: ``lambda`` = 1, ``T`` = 2. ``--strategy lwf``, ``lwf:LAMBDA``
or ``lwf:LAMBDA,T``. The teacher costs one forward pass per batch and one copy of the
backbone in memory.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.nn import functional as F

from headstart.backbones import Backbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies.base import STRATEGIES, StrategyContext, numeric_arg
from headstart.strategies.builtin import Finetune
from headstart.strategies.head_inputs import HeadInputs


def distillation(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher / T) || softmax(logits / T))``, the mean over the batch."""
    p0 = F.log_softmax(teacher.float() / temperature, 1)
    p = F.log_softmax(logits.float() / temperature, 1)
    return F.kl_div(p, p0, reduction="batchmean", log_target=True)


def feature_distance(features: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The mean over the batch of ``||f / |f| - f0 / |f0| ||^2`` (``2 - 2 cos``)."""
    a = F.normalize(features.float(), dim=1)
    b = F.normalize(teacher.float(), dim=1)
    return ((a - b) ** 2).sum(1).mean()


@STRATEGIES.register(
    "lwf",
    help="Fine-tuning that keeps the pretrained model's outputs on the new data (Learning "
    "without Forgetting): lambda * KL of the source head's outputs at temperature T, or of "
    "the pooled features where there is no source head; lwf:LAMBDA,T (default 1,2).",
)
class LwF(Finetune):
    name = "lwf"
    takes_arg = True
    LAMBDA = 1.0
    TEMPERATURE = 2.0

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        lam, temperature = numeric_arg(
            self.name, arg, (self.LAMBDA, self.TEMPERATURE), ("LAMBDA", "T")
        )
        if temperature <= 0:
            raise ConfigError(
                "a temperature T above 0", f"{self.name}:{arg}", "use e.g. --strategy lwf:1,2"
            )
        self.lam, self.temperature = lam, temperature
        self.teacher: Backbone | None = None
        self.source: tuple[torch.Tensor, torch.Tensor] | None = None
        self._student = HeadInputs()
        self._teacher = HeadInputs()

    @property
    def mode(self) -> str:
        return "source-head" if self.source is not None else "features"

    def setup(self, ctx: StrategyContext) -> None:
        model = ctx.model
        head = model.source_head()
        # the source head reads the final features; a wrapper's head reads other ones
        self.source = head if head is not None and model.source_backbone() is model else None
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher
        self._student.attach(model)
        self._teacher.attach(teacher)

    def teardown(self, ctx: StrategyContext) -> None:
        self._student.detach()
        self._teacher.detach()
        self.teacher = None

    def loss_term(
        self, ctx: StrategyContext, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        if self.teacher is None:
            raise ConfigError(
                "the starting model, copied when training starts",
                "none (setup was not called)",
                "train through Trainer.fit with a StrategyContext",
            )
        features = self._student.take("lwf")
        x = batch[0]
        if next(self.teacher.parameters()).device != outputs.device:
            self.teacher.to(outputs.device)
        with torch.no_grad():
            self.teacher(x)
        before = self._teacher.take("lwf's teacher")
        if self.source is None:
            return self.lam * feature_distance(features, before)
        w, b = (t.to(outputs.device) for t in self.source)
        return self.lam * distillation(
            F.linear(features.float(), w, b), F.linear(before.float(), w, b), self.temperature
        )

    def summary(self) -> dict[str, Any]:
        what = (
            f"KL of the source head's outputs at temperature {self.temperature:g}"
            if self.mode == "source-head"
            else "no source head: mean squared distance of the L2-normalised pooled features"
        )
        return {"lwf": {"target": self.mode, "what": what, "lambda": self.lam}}
