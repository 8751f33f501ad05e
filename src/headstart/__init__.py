"""headstart: transfer learning for small datasets.

Pick a pretrained backbone, transfer it with the strategy that fits, and prove whether
the transfer helped.
"""

from headstart.compare import run_compare
from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    EvalConfig,
    RankConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.errors import HeadstartError
from headstart.estimator import PretrainedEmbedder, TransferClassifier
from headstart.pipeline import fit
from headstart.rank import run_rank
from headstart.runfolder import Predictor, load

__version__ = "0.1.0"

__all__ = [
    "BackboneConfig",
    "CompareConfig",
    "DataConfig",
    "EvalConfig",
    "HeadstartError",
    "Predictor",
    "PretrainedEmbedder",
    "RankConfig",
    "RunConfig",
    "StrategyConfig",
    "TrainConfig",
    "TransferClassifier",
    "__version__",
    "fit",
    "load",
    "run_compare",
    "run_rank",
]
