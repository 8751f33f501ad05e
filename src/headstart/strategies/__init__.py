"""Transfer strategies: what is frozen, the learning rate of each group, extra losses."""

# the registry: one import per strategy module
from headstart.strategies import auto, builtin, l2sp, setfit
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
    "apply_freeze",
    "auto",
    "build_strategy",
    "builtin",
    "l2sp",
    "setfit",
]
