"""``bitfit``: only the biases and the normalisation layers' weights of the body train,
beside the head (BitFit, Ben Zaken, Goldberg & Ravfogel 2022; the norms as well, as is
usual for convolutional networks). A probe fits the head first. The run folder stores
the head, the biases, the norms and the buffers, with the base weights' sha256
(:mod:`headstart.strategies.efficient`).
"""

from __future__ import annotations

from headstart.config import StrategyConfig
from headstart.strategies.base import STRATEGIES
from headstart.strategies.efficient import NormsAndBiases, ParameterEfficient


@STRATEGIES.register(
    "bitfit",
    help="Parameter-efficient: a probe, then only the body's biases and norm weights train "
    "with the head (BitFit); the run folder keeps only those tensors.",
)
class BitFit(ParameterEfficient):
    name = "bitfit"

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        self.part = NormsAndBiases()
