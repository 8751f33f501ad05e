"""The one embedder of a run: embeddings of the frozen backbone per split and view,
through the content-addressed cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console

from headstart.backbones import Backbone
from headstart.config import RunConfig
from headstart.data import (
    data_fingerprint,
)
from headstart.data.loading import (
    Samples,
)
from headstart.features.cache import (
    EmbeddingCache,
    cache_key,
    compute_embeddings,
)

#: what a data source yields; both kinds share classes, labels, subset() and len()


def log_truncation(console: Console, dataset: Any, backbone: Backbone) -> None:
    n = getattr(dataset, "n_truncated", 0)
    if n:
        console.print(
            f"[yellow]truncated[/] {n} of {len(dataset)} texts to "
            f"{backbone.spec.input_size} tokens (--max-length to change)"
        )


class Embedder:
    """Embeddings of the frozen backbone for each split, through the content cache."""

    def __init__(
        self,
        backbone: Backbone,
        cfg: RunConfig,
        cache: EmbeddingCache,
        device: str,
        progress: bool,
        console: Console,
    ) -> None:
        self.backbone, self.cfg, self.cache = backbone, cfg, cache
        self.device, self.progress, self.console = device, progress, console

    def __call__(self, samples: Samples, what: str) -> torch.Tensor:
        """The evaluation embeddings: the mean of the backbone's views."""
        if len(self.backbone.views) > 1:
            return torch.stack(self.views(samples, what)).mean(0)
        key = cache_key(self.backbone, data_fingerprint(samples))
        return self.cache.get_or_compute(key, lambda: self._compute(samples, what))

    def views(self, samples: Samples, what: str) -> list[torch.Tensor]:
        """The embeddings of each of the backbone's views (one: the plain embeddings)."""
        if len(self.backbone.views) == 1:
            return [self(samples, what)]
        fingerprint = data_fingerprint(samples)

        def compute(view: str) -> Callable[[], torch.Tensor]:
            return lambda: self._embed(
                self.backbone.make_dataset(samples), f"{what} ({view})", view
            )

        return [
            self.cache.get_or_compute(
                cache_key(self.backbone, fingerprint, layer=f"view={v}"), compute(v)
            )
            for v in self.backbone.views
        ]

    def _compute(self, samples: Samples, what: str) -> torch.Tensor:
        dataset = self.backbone.make_dataset(samples)
        log_truncation(self.console, dataset, self.backbone)
        return self._embed(dataset, what)

    def uncached(self, samples: Samples, what: str) -> torch.Tensor:
        """Embeddings of the backbone as it is now (trained: its weights are not the ones
        the cache key names), views averaged."""
        ds = self.backbone.make_dataset(samples)
        if len(self.backbone.views) == 1:
            return self._embed(ds, what)
        return torch.stack([self._embed(ds, what, v) for v in self.backbone.views]).mean(0)

    def _embed(self, dataset: Any, what: str, view: str | None = None) -> torch.Tensor:
        return compute_embeddings(
            self.backbone,
            dataset,
            self.cfg.eval.batch_size,
            self.device,
            self.progress,
            f"embedding {what}",
            self.cfg.train.num_workers,
            view,
        )
