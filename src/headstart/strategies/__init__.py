"""Transfer strategies: what is frozen, the learning rate of each group, extra losses."""

from headstart.strategies import auto, builtin
from headstart.strategies.base import (
    STRATEGIES,
    ParamGroup,
    Strategy,
    apply_freeze,
    build_strategy,
)

__all__ = [
    "STRATEGIES",
    "ParamGroup",
    "Strategy",
    "apply_freeze",
    "auto",
    "build_strategy",
    "builtin",
]
