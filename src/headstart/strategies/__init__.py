"""Transfer strategies: what is frozen, the learning rate of each group, extra losses."""

from headstart.strategies import builtin
from headstart.strategies.base import (
    STRATEGIES,
    ParamGroup,
    Strategy,
    apply_freeze,
    build_strategy,
)

__all__ = ["STRATEGIES", "ParamGroup", "Strategy", "apply_freeze", "build_strategy", "builtin"]
