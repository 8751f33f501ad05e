"""Content-addressed on-disk cache of embeddings from a frozen backbone.

The key hashes everything the embeddings depend on: the backbone architecture, the
sha256 of its weights, the preprocessing transform and the content of the data. Change
any of them and the key changes; re-run with another head and the embeddings are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import track
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader, Dataset, Subset

from headstart.backbones import Backbone
from headstart.backbones.base import to_device
from headstart.device import in_order_generator
from headstart.errors import DiskFullError
from headstart.features.store import (
    ShardedEmbeddings,
    ShardWriter,
    is_complete,
    publish,
    scratch_folder,
)
from headstart.storage import atomic_write, clean_temp_files


class CacheWriteWarning(UserWarning):
    """The embedding cache could not be written; the run goes on without it."""


def default_cache_dir() -> Path:
    """``$HEADSTART_CACHE``, else ``$XDG_CACHE_HOME/headstart``, else ``~/.cache/headstart``."""
    if os.environ.get("HEADSTART_CACHE"):
        return Path(os.environ["HEADSTART_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "headstart"


#: how per-layer features are taken; a change here must change this string (new cache keys)
LAYER_FEATURES = "v1:ending-module-output:mean-pooled(NCHW/NHWC spatial, tokens masked)"


def cache_key(backbone: Backbone, data_fingerprint: str, layer: str | None = None) -> str | None:
    """The content address of a dataset's embeddings (after layer group ``layer``, or the
    final ones), or None when the weights are random."""
    spec = backbone.spec
    if not spec.weights_sha256:
        return None
    parts = {
        "arch": spec.arch,
        "weights": spec.weights_sha256,
        "input_size": spec.input_size,
        "preprocess": backbone.preprocess_id(),
        "data": data_fingerprint,
    }
    if layer is not None:  # features after a layer group, pooled as LAYER_FEATURES describes
        parts["layer"] = f"{layer}:{LAYER_FEATURES}"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def compute_embeddings(
    backbone: Backbone,
    dataset: Dataset[Any],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "embedding",
    num_workers: int = 0,
    view: str | None = None,
) -> torch.Tensor:
    """Pooled embeddings (N, D) of every item, in order, with the backbone in eval mode;
    with ``view`` the embeddings of that one view (``Backbone.embed_view``)."""
    return compute_layer_embeddings(
        backbone, dataset, None, batch_size, device, progress, description, num_workers, view
    )[""]


@torch.no_grad()
def compute_layer_embeddings(
    backbone: Backbone,
    dataset: Dataset[Any],
    layers: list[str] | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "embedding",
    num_workers: int = 0,
    view: str | None = None,
) -> dict[str, torch.Tensor]:
    """Pooled features (N, C) after each of ``layers`` (body layer groups) from one pass
    over the data; ``layers=None`` gives the final embedding under the key ``""``."""
    was_training = backbone.training
    backbone.eval().to(device)
    order = backbone.batch_order(dataset)
    ds = Subset(dataset, order) if order is not None else dataset
    loader: DataLoader[Any] = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=backbone.collate_fn(),
        generator=in_order_generator(),  # nothing drawn from the process-wide generator
    )
    it = track(loader, description=description, transient=True) if progress else loader
    names = [""] if layers is None else list(layers)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for x, _ in it:
        x = to_device(x, device)
        if layers is not None:
            got = backbone.embed_layers(x, names)
        else:
            got = {"": backbone.embed(x) if view is None else backbone.embed_view(x, view)}
        for n in names:
            parts[n].append(got[n].float().cpu())
    backbone.train(was_training)
    out: dict[str, torch.Tensor] = {}
    for n in names:
        if not parts[n]:
            out[n] = torch.empty(0, backbone.spec.feature_dim)
            continue
        emb = torch.cat(parts[n])
        if order is not None:  # back to the dataset's order
            emb = emb[torch.as_tensor(order).argsort()]
        out[n] = emb
    return out


@torch.no_grad()
def compute_embeddings_to_disk(
    backbone: Backbone,
    dataset: Dataset[Any],
    folder: Path,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "embedding",
    num_workers: int = 0,
    view: str | None = None,
) -> None:
    """:func:`compute_embeddings` written into row shards under ``folder`` as the batches
    come (see :mod:`headstart.features.store`), never all in memory. The batches go in the
    dataset's order (a backbone's length-sorted order would need every row at once)."""
    was_training = backbone.training
    backbone.eval().to(device)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=backbone.collate_fn(),
    )
    it = track(loader, description=description, transient=True) if progress else loader
    writer = ShardWriter(folder, backbone.spec.feature_dim)
    for x, _ in it:
        x = to_device(x, device)
        writer.append(backbone.embed(x) if view is None else backbone.embed_view(x, view))
    writer.close()
    backbone.train(was_training)


class EmbeddingCache:
    """Embeddings stored as ``<key>.safetensors`` under ``root``."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.root = root or default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._cleaned = False

    def path(self, key: str) -> Path:
        return self.root / "embeddings" / f"{key}.safetensors"

    def load(self, key: str | None) -> torch.Tensor | None:
        """The stored embeddings under ``key``, or None (disabled, no key, absent or torn)."""
        if not self.enabled or key is None:
            return None
        path = self.path(key)
        if path.is_file():
            try:
                emb = load_file(str(path))["embeddings"]
                self.hits += 1
                return emb
            except Exception:  # a torn or corrupt file: compute again and overwrite
                path.unlink(missing_ok=True)
        return None

    def store(self, key: str | None, emb: torch.Tensor) -> None:
        """Write ``emb`` under ``key`` atomically (nothing when disabled or without a key).
        The cache only saves time: when it cannot be written (a full disk, a read-only
        folder) it warns once and is off for the rest of the process; the run goes on."""
        if not self.enabled or key is None:
            return
        path = self.path(key)
        if not self._cleaned:
            self._cleaned = True
            clean_temp_files(path.parent)
        try:
            atomic_write(path, save({"embeddings": emb.contiguous()}))
        except (DiskFullError, OSError) as e:
            self._off(path.parent, e)

    def _off(self, folder: Path, e: Exception) -> None:
        """Turn the cache off for the rest of the process, with a warning."""
        self.enabled = False
        reason = e.found if isinstance(e, DiskFullError) else f"{type(e).__name__}: {e}"
        warnings.warn(
            f"the embedding cache in {folder} cannot be written ({reason}); going on "
            "without it (embeddings are computed again next time). Free space there or "
            "point HEADSTART_CACHE at another folder.",
            CacheWriteWarning,
            stacklevel=3,
        )

    def shard_folder(self, key: str) -> Path:
        return self.root / "embeddings" / f"{key}.shards"

    def get_or_compute_sharded(
        self, key: str | None, compute_into: Callable[[Path], None]
    ) -> ShardedEmbeddings:
        """Disk-backed embeddings under ``key``: the stored shards, else ``compute_into`` a
        temporary folder that is then renamed into place (without a cache or a key, the
        shards live in a scratch folder removed with the matrix)."""
        if not self.enabled or key is None:
            tmp = scratch_folder()
            compute_into(tmp)
            return ShardedEmbeddings(tmp, temporary=True)
        final = self.shard_folder(key)
        if is_complete(final):
            try:
                found = ShardedEmbeddings(final)
                self.hits += 1
                return found
            except (ValueError, KeyError, OSError):  # a corrupt index: compute again
                pass
        self.misses += 1
        tmp = scratch_folder(final.parent)
        try:
            compute_into(tmp)
            return publish(tmp, final)
        except DiskFullError as e:  # the cache only saves time: go on without it
            self._off(final.parent, e)
            return self.get_or_compute_sharded(None, compute_into)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def get_or_compute(self, key: str | None, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        emb = self.load(key)
        if emb is not None:
            return emb
        self.misses += 1
        emb = compute()
        self.store(key, emb)
        return emb


@torch.no_grad()
def calibrate_batchnorm(
    backbone: Backbone,
    dataset: Dataset[Any],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> int:
    """Set the running statistics of every BatchNorm layer to those of ``dataset``: one
    pass in training mode, each layer's running mean and variance the average of its
    batch statistics (exactly the data's mean when the batches are of equal size);
    returns how many layers were set.

    A randomly initialised network's running statistics (mean 0, variance 1) do not
    describe its activations, so its features in evaluation mode are badly scaled, and a
    head fitted on them fails once the layers normalise with batch statistics in training.
    Calibrating first gives the random-features baseline a fair start."""
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = backbone.training
    momenta = [m.momentum for m in norms]
    backbone.eval().to(device)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative moving average: the mean over all batches
        m.train()
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=backbone.collate_fn(),
        generator=in_order_generator(),
    )
    it = track(loader, description="BatchNorm statistics", transient=True) if progress else loader
    for x, _ in it:
        backbone.forward_features(to_device(x, device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    backbone.train(was_training)
    return len(norms)


def embed_samples(
    backbone: Backbone,
    samples: Any,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "embedding",
    num_workers: int = 0,
) -> torch.Tensor:
    """Embeddings of ``samples`` (images or texts) by the frozen backbone, through
    ``cache`` when given (keyed by weights, preprocessing and data content)."""
    from headstart.data import data_fingerprint

    def compute() -> torch.Tensor:
        dataset = backbone.make_dataset(samples)
        return compute_embeddings(
            backbone, dataset, batch_size, device, progress, description, num_workers
        )

    if cache is None:
        return compute()
    return cache.get_or_compute(cache_key(backbone, data_fingerprint(samples)), compute)
