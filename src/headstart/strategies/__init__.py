"""Transfer strategies: what is frozen, the learning rate of each group, the phases of a
run, and hooks into training (a loss term, setup and teardown) through a context.

Each strategy module registers its strategies in :data:`STRATEGIES` when imported; the
import list below is the registry's one place to add a module."""

from headstart.strategies import (
    adaptation,
    alignment,
    auto,
    bitfit,
    bss,
    builtin,
    ewc,
    l2sp,
    lora,
    lwf,
    progressive,
    setfit,
)
from headstart.strategies.base import (
    PHASES,
    STRATEGIES,
    ParamGroup,
    Strategy,
    StrategyContext,
    apply_freeze,
    build_strategy,
)

__all__ = [
    "PHASES",
    "STRATEGIES",
    "ParamGroup",
    "Strategy",
    "StrategyContext",
    "adaptation",
    "alignment",
    "apply_freeze",
    "auto",
    "bitfit",
    "bss",
    "build_strategy",
    "builtin",
    "ewc",
    "l2sp",
    "lora",
    "lwf",
    "progressive",
    "setfit",
]
