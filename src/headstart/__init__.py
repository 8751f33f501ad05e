"""headstart: transfer learning for small datasets.

Pick a pretrained backbone, transfer it with the strategy that fits, and prove whether
the transfer helped.
"""

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
from headstart.runfolder import Predictor, load
from headstart.workflows.compare import run_compare
from headstart.workflows.fit import fit
from headstart.workflows.rank import run_rank

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
