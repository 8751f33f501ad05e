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
    compute_embeddings_to_disk,
)
from headstart.features.store import Embeddings, LazyEmbeddings, MeanEmbeddings, disk_rows

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
        #: splits with more examples than this are embedded into shards on disk
        self.disk_rows = disk_rows()

    def on_disk(self, samples: Samples) -> bool:
        """Whether ``samples`` is large enough for disk-backed embeddings."""
        return len(samples) > self.disk_rows

    def lazy(self, samples: Samples, what: str) -> Embeddings:
        """The evaluation embeddings (views averaged): a tensor, or for a split above
        :attr:`disk_rows` a disk-backed matrix read in batches."""
        if not self.on_disk(samples):
            return self(samples, what)
        parts = self.lazy_views(samples, what)
        if len(parts) == 1:
            return parts[0]
        return MeanEmbeddings([p for p in parts if isinstance(p, LazyEmbeddings)])

    def lazy_views(self, samples: Samples, what: str) -> list[Embeddings]:
        """The embeddings of each view; disk-backed above :attr:`disk_rows`."""
        if not self.on_disk(samples):
            return list(self.views(samples, what))
        fingerprint = data_fingerprint(samples)
        dataset = self.backbone.make_dataset(samples)
        log_truncation(self.console, dataset, self.backbone)
        views: list[str | None] = (
            list(self.backbone.views) if len(self.backbone.views) > 1 else [None]
        )
        out: list[Embeddings] = []
        for v in views:
            layer = None if v is None else f"view={v}"
            label = what if v is None else f"{what} ({v})"

            def compute_into(folder: Any, v: str | None = v, label: str = label) -> None:
                compute_embeddings_to_disk(
                    self.backbone,
                    dataset,
                    folder,
                    self.cfg.eval.batch_size,
                    self.device,
                    self.progress,
                    f"embedding {label}",
                    self.cfg.train.num_workers,
                    v,
                )

            key = cache_key(self.backbone, fingerprint, layer=layer)
            out.append(self.cache.get_or_compute_sharded(key, compute_into))
        return out

    def __call__(self, samples: Samples, what: str) -> torch.Tensor:
        """The evaluation embeddings: the mean of the backbone's views, in memory (a split
        above :attr:`disk_rows` is read from its shards; :meth:`lazy` streams instead)."""
        if self.on_disk(samples):
            return _whole(self.lazy(samples, what))
        if len(self.backbone.views) > 1:
            return torch.stack(self.views(samples, what)).mean(0)
        key = cache_key(self.backbone, data_fingerprint(samples))
        return self.cache.get_or_compute(key, lambda: self._compute(samples, what))

    def views(self, samples: Samples, what: str) -> list[torch.Tensor]:
        """The embeddings of each of the backbone's views (one: the plain embeddings)."""
        if self.on_disk(samples):
            return [_whole(v) for v in self.lazy_views(samples, what)]
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


def _whole(x: Embeddings) -> torch.Tensor:
    return x.materialise() if isinstance(x, LazyEmbeddings) else x
