"""Classifier heads fitted on embeddings: a torch linear layer, scikit-learn models or
class prototypes (nearest class mean)."""

from headstart.heads.prototypes import class_means, nearest_prototype, prototype_head
from headstart.heads.sklearn_heads import HEADS, fit_sklearn_head

__all__ = ["HEADS", "class_means", "fit_sklearn_head", "nearest_prototype", "prototype_head"]
