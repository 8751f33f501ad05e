"""The built-in transfer strategies (one small class each)."""

from __future__ import annotations

from headstart.backbones import Backbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies.base import STRATEGIES, ParamGroup, Strategy, fixed_head
from headstart.strategies.efficient import make_part


@STRATEGIES.register("linear-probe", help="Frozen backbone; a head fitted on cached embeddings.")
class LinearProbe(Strategy):
    name = "linear-probe"
    phases = ("probe",)

    def trainable_groups(self, n_groups: int, epoch: int) -> list[bool]:
        return [False] * (n_groups - 1) + [True]


@STRATEGIES.register("finetune", help="Everything trains (backbone at a lower learning rate).")
class Finetune(Strategy):
    name = "finetune"


@STRATEGIES.register(
    "lp-ft", help="Linear probe first, then fine-tune everything from that head (Kumar et al.)."
)
class LinearProbeThenFinetune(Finetune):
    name = "lp-ft"
    phases = ("probe", "train")


@STRATEGIES.register("scratch", help="Same architecture, random initialisation: the baseline.")
class Scratch(Finetune):
    name = "scratch"
    uses_pretrained = False  # and so the body trains at the head's learning rate


@STRATEGIES.register(
    "freeze", help="freeze:N - the first N layer groups frozen (BatchNorm statistics too)."
)
class FreezeFirst(Strategy):
    name = "freeze"
    takes_arg = True

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        if arg is None or not arg.isdigit() or int(arg) < 1:
            raise ConfigError(
                "freeze:N with N a positive number of layer groups",
                f"freeze:{arg}" if arg is not None else "freeze without N",
                "use e.g. --strategy freeze:3 (`headstart backbones NAME` lists the groups)",
            )
        self.n_frozen = int(arg)
        self.part = make_part(cfg, "freeze:N")

    def param_groups(self, backbone: Backbone) -> list[ParamGroup]:
        n = len(backbone.layer_groups())
        if self.n_frozen >= n:
            raise ConfigError(
                f"freeze:N with N below {n} (the backbone has {n - 1} groups before its head)",
                f"freeze:{self.n_frozen}",
                f"use N between 1 and {n - 1}; to freeze the whole backbone use linear-probe",
            )
        return super().param_groups(backbone)

    def trainable_groups(self, n_groups: int, epoch: int) -> list[bool]:
        return [i >= self.n_frozen for i in range(n_groups)]


@STRATEGIES.register(
    "gradual", help="Gradual unfreezing (ULMFiT): the head first, one more group each epoch."
)
class GradualUnfreeze(Strategy):
    name = "gradual"

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        self.part = make_part(cfg, "gradual")

    def trainable_groups(self, n_groups: int, epoch: int) -> list[bool]:
        return [i >= n_groups - 1 - epoch for i in range(n_groups)]


@STRATEGIES.register(
    "prototypes",
    help="Few-shot: each class is the mean of its embeddings (frozen backbone); an example "
    "goes to the nearest by cosine. Works from one example per class.",
)
class Prototypes(LinearProbe):
    name = "prototypes"
    min_per_class = 1

    def head_name(self) -> str:
        return fixed_head(self, "prototype")


@STRATEGIES.register(
    "prototypes-ft",
    help="Few-shot: prototypes as the initial head of a fine-tuned backbone; the "
    "prototypes are then taken again from the fine-tuned embeddings.",
)
class PrototypesFinetune(Finetune):
    name = "prototypes-ft"
    min_per_class = 1
    phases = ("probe", "train", "refit")

    def head_name(self) -> str:
        return fixed_head(self, "prototype")
