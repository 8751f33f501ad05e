"""The learning-rate range test (Smith 2015, "Cyclical learning rates"; fastai's
``lr_find``): what it records and how a rate is suggested from it.

The sweep itself is :meth:`headstart.training.trainer.Trainer.range_test` (every gradient
step is taken in the one loop): the head's rate grows exponentially from ``start`` to
``end`` over ``steps`` optimiser steps from the strategy's start state, every other
parameter group at its usual fraction of it, and the weights are put back afterwards. It
stops early once the smoothed loss exceeds ``DIVERGE`` times its minimum.

Two suggestions, both from the smoothed loss without its first tenth and last five steps
(as fastai reads it):

- ``valley`` (fastai's default since 2.5): the longest stretch over which the loss keeps
  falling, and the rate about halfway down it;
- ``steepest``: the rate where the loss falls fastest against log(rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headstart.errors import ConfigError

#: the smoothed loss above this many times its minimum ends the sweep
DIVERGE = 4.0
#: the exponential moving average of the loss (debiased, as fastai's recorder)
SMOOTHING = 0.98
SUGGESTIONS = ("valley", "steepest")
#: steps of the sweep fit --lr auto and headstart lr-find take (fastai takes 100)
RANGE_TEST_STEPS = 200
#: the sweep, in the run folder
LR_FIND_FILE = "lr_find.json"


@dataclass
class RangeTest:
    """The sweep: rates, raw and smoothed losses, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float] = field(default_factory=list)
    stopped: str = "end of the sweep"
    method: str = "valley"

    def __post_init__(self) -> None:
        if not self.smoothed:
            self.smoothed = smooth(self.losses)

    def _window(self) -> tuple[int, int]:
        """The steps the suggestions read, as fastai's do: not the first tenth (the
        moving average is still settling) nor the last five (the blow-up)."""
        n = len(self.smoothed)
        lo, hi = n // 10, n - 5
        return (lo, hi) if hi - lo >= 5 else (0, n)

    @property
    def valley(self) -> float:
        lo, hi = self._window()
        return self.lrs[lo + valley_index(self.smoothed[lo:hi])]

    @property
    def steepest(self) -> float:
        lo, hi = self._window()
        return self.lrs[lo + steepest_index(self.smoothed[lo:hi])]

    @property
    def suggestion(self) -> float:
        return self.valley if self.method == "valley" else self.steepest

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "method": self.method,
            "valley": self.valley,
            "steepest": self.steepest,
            "steps": len(self.lrs),
            "stopped": self.stopped,
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
        }


def check_sweep(start: float, end: float, steps: int, method: str) -> None:
    """Bad sweep settings as one clear error each."""
    if not (0 < start < end):
        raise ConfigError(
            "0 < start rate < end rate", f"start {start}, end {end}", "use e.g. 1e-7 and 10"
        )
    if steps < 10:
        raise ConfigError("at least 10 steps in the sweep", str(steps), "use e.g. 200")
    if method not in SUGGESTIONS:
        raise ConfigError(
            f"a suggestion method: {', '.join(SUGGESTIONS)}", repr(method), "use valley"
        )


def rates(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` rates growing geometrically from ``start`` to ``end``."""
    return np.asarray(start * (end / start) ** (np.arange(steps) / (steps - 1)))


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """The debiased exponential moving average of ``losses``."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def diverged(smoothed: list[float]) -> bool:
    """The sweep has gone past any useful rate: the loss blew up or stopped being a
    number."""
    last = smoothed[-1]
    return not math.isfinite(last) or last > DIVERGE * min(smoothed)


def valley_index(losses: list[float]) -> int:
    """fastai's valley: the longest decreasing subsequence of the loss marks the valley;
    the suggestion lies half-way down it (start + 1/3 + 1/6 of its length)."""
    n = len(losses)
    longest = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
            start = end - longest[end]
    third = (end - start) / 3
    return min(n - 1, max(0, start + int(third) + int(third / 2)))


def steepest_index(losses: list[float]) -> int:
    """Where the loss falls fastest per step (a constant step in log(rate))."""
    if len(losses) < 3:
        return 0
    slope = np.gradient(np.asarray(losses, dtype=float))
    slope[~np.isfinite(slope)] = np.inf
    return int(np.argmin(slope))
