"""What the parameter-efficient strategies (``bitfit``, ``lora``) share: a probe first,
then only a small set of body tensors trains beside the head, and the run folder keeps
only what trained.

The body tensors train at ten times the body's rate of full fine-tuning
(``--backbone-lr-scale`` x 10, the head's rate by default): the BitFit and LoRA papers
train their few weights at rates about ten times those of full fine-tuning. Every other
body weight stays as pretrained, so a run folder holds the trained tensors (and the
buffers, such as BatchNorm statistics) with the sha256 of the base weights; loading it
builds the base model from those weights, checks the sha256, and puts the tensors back
(:meth:`Strategy.restore_model`).
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from headstart.backbones import Backbone
from headstart.strategies.base import ParamGroup, Strategy

#: how much faster than full fine-tuning's body the few trained tensors learn
EFFICIENT_LR_FACTOR = 10.0


class ParameterEfficient(Strategy):
    """Base class: the head (from a probe) and :meth:`trained_params` of the body train."""

    phases: ClassVar[tuple[str, ...]] = ("probe", "train")
    stores_trained_only: ClassVar[bool] = True

    def trained_params(self, backbone: Backbone) -> set[int]:
        """The ids of the body parameters that train."""
        raise NotImplementedError

    def lr_scales(self, n_groups: int) -> list[float]:
        body = min(1.0, self.cfg.backbone_lr_scale * EFFICIENT_LR_FACTOR)
        decay = self.cfg.layer_decay or 1.0
        return [body * decay ** (n_groups - 1 - i) for i in range(n_groups - 1)] + [1.0]

    def param_groups(self, backbone: Backbone) -> list[ParamGroup]:
        """Every layer group by name; a body group lists only its trained parameters
        (none: frozen), the head all of its own."""
        groups = backbone.layer_groups()
        keep = self.trained_params(backbone)
        scales = self.lr_scales(len(groups))
        out = []
        for i, (g, scale) in enumerate(zip(groups, scales, strict=True)):
            if i == len(groups) - 1:
                out.append(ParamGroup(g.name, g.params, True, scale))
                continue
            params = [p for p in g.params if id(p) in keep]
            out.append(ParamGroup(g.name, params or g.params, bool(params), scale))
        return out


def norm_and_bias_params(backbone: Backbone) -> set[int]:
    """The ids of the body's biases and the weights of its normalisation layers."""
    head = {id(p) for p in backbone.head().parameters()}
    ids: set[int] = set()
    for module in backbone.modules():
        own = list(module.named_parameters(recurse=False))
        is_norm = isinstance(
            module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm
        ) or type(module).__name__.endswith(("Norm", "Norm2d", "NormAct2d"))
        for name, p in own:
            if id(p) not in head and (is_norm or name == "bias"):
                ids.add(id(p))
    return ids
