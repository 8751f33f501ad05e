"""Classifier heads fitted on embeddings: a torch linear layer or scikit-learn models."""

from headstart.heads.sklearn_heads import HEADS, fit_sklearn_head

__all__ = ["HEADS", "fit_sklearn_head"]
