"""headstart: transfer learning for small datasets.

Pick a pretrained backbone, transfer it with the strategy that fits, and prove whether
the transfer helped.

The public API below is imported on first use (PEP 562), so that ``import headstart``
and the ``headstart`` command start without loading torch and friends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "BackboneConfig": "headstart.config",
    "CompareConfig": "headstart.config",
    "DataConfig": "headstart.config",
    "EmbedTrainConfig": "headstart.config",
    "EvalConfig": "headstart.config",
    "RankConfig": "headstart.config",
    "RunConfig": "headstart.config",
    "StrategyConfig": "headstart.config",
    "TrainConfig": "headstart.config",
    "HeadstartError": "headstart.errors",
    "PretrainedEmbedder": "headstart.estimator",
    "TransferClassifier": "headstart.estimator",
    "embed_train": "headstart.workflows.embed_train",
    "fit": "headstart.workflows.fit",
    "run_compare": "headstart.workflows.compare",
    "run_rank": "headstart.workflows.rank",
    "Predictor": "headstart.runfolder",
    "load": "headstart.runfolder",
}

__all__ = [
    "BackboneConfig",
    "CompareConfig",
    "DataConfig",
    "EmbedTrainConfig",
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
    "embed_train",
    "fit",
    "load",
    "run_compare",
    "run_rank",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from headstart.config import (
        BackboneConfig,
        CompareConfig,
        DataConfig,
        EmbedTrainConfig,
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
    from headstart.workflows.embed_train import embed_train
    from headstart.workflows.fit import fit
    from headstart.workflows.rank import run_rank


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
