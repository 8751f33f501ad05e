"""Transferability scores and the ranking of backbones (and their layers) before training."""

from headstart.selection.scores import SCORES, NotApplicable, Scorer

__all__ = ["SCORES", "NotApplicable", "Scorer"]
