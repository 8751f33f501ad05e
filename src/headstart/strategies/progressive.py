"""``progressive``: a progressive network (Rusu et al. 2016). The pretrained backbone is
kept frozen as the first column (its source task exactly as it was: zero forgetting by
construction), and a new, narrower column trains beside it with a lateral connection from
every layer group of the frozen one; the head sits on the new column
(:class:`headstart.backbones.progressive.ProgressiveBackbone`). What it answers: at what
accuracy cost nothing is forgotten.

``--strategy progressive`` (width a quarter of the backbone's final width) or
``progressive:WIDTH``. The new column and the head train at the head's learning rate.
"""

from __future__ import annotations

from headstart.backbones import Backbone
from headstart.backbones.progressive import ProgressiveBackbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies.base import STRATEGIES, ParamGroup, Strategy


@STRATEGIES.register(
    "progressive",
    help="Progressive network: the pretrained column frozen (nothing forgotten), a new "
    "narrower column with lateral connections from every layer group of it, the head on "
    "the new column; progressive:WIDTH (default a quarter of the backbone's width).",
)
class Progressive(Strategy):
    name = "progressive"
    takes_arg = True

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        if arg is not None and (not arg.isdigit() or int(arg) < 1):
            raise ConfigError(
                "progressive:WIDTH with WIDTH a whole number of units, at least 1",
                f"progressive:{arg}",
                "use e.g. --strategy progressive:128, or progressive alone",
            )
        self.width = int(arg) if arg is not None else None

    def wrap_backbone(self, backbone: Backbone, num_classes: int) -> Backbone:
        if isinstance(backbone, ProgressiveBackbone):
            return backbone
        return ProgressiveBackbone(backbone, num_classes, self.width)

    def param_groups(self, backbone: Backbone) -> list[ParamGroup]:
        if not isinstance(backbone, ProgressiveBackbone):
            raise ConfigError(
                "the progressive network built around the backbone by wrap_backbone()",
                f"the bare backbone {backbone.spec.name}",
                "train it through `headstart fit --strategy progressive` (or call "
                "strategy.wrap_backbone(backbone, num_classes) first)",
            )
        return super().param_groups(backbone)

    def trainable_groups(self, n_groups: int, epoch: int) -> list[bool]:
        # the wrapper's groups: the frozen column's body groups, the new column, the head
        return [False] * (n_groups - 2) + [True, True]

    def lr_scales(self, n_groups: int) -> list[float]:
        return [1.0] * n_groups
