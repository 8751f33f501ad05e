"""Embeddings of a frozen backbone, cached on disk by content."""

from headstart.features.cache import (
    EmbeddingCache,
    cache_key,
    calibrate_batchnorm,
    compute_embeddings,
    compute_layer_embeddings,
    default_cache_dir,
    embed_samples,
)

__all__ = [
    "EmbeddingCache",
    "cache_key",
    "calibrate_batchnorm",
    "compute_embeddings",
    "compute_layer_embeddings",
    "default_cache_dir",
    "embed_samples",
]
