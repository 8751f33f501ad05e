"""Disk-backed embeddings for datasets too large to hold in memory.

A split with more than :func:`disk_rows` examples is embedded into row shards: safetensors
files of :data:`SHARD_ROWS` rows each, written as the rows are computed and never joined
in memory, plus an ``index.json`` written last (a folder without it is incomplete). The
split is then a :class:`ShardedEmbeddings`, a matrix that reads row ranges of its shards
on demand (``safe_open(...).get_slice``; each read maps only the rows it touches and
unmaps them when done), so memory stays that of one batch however many rows there are.

Smaller splits (what almost every dataset is) stay in-memory tensors, exactly as before.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from headstart.errors import ConfigError
from headstart.storage import atomic_write, process_alive, write_safetensors

#: splits with more rows than this are embedded to disk (``HEADSTART_DISK_ROWS`` to change)
DISK_ROWS = 50_000
DISK_ROWS_ENV = "HEADSTART_DISK_ROWS"
#: rows per shard file
SHARD_ROWS = 16_384
#: the rows read at once when streaming
BATCH_ROWS = 4_096
INDEX = "index.json"
FORMAT = "headstart-embedding-shards-v1"


def disk_rows() -> int:
    """The row count above which a split's embeddings go to disk."""
    raw = os.environ.get(DISK_ROWS_ENV)
    if raw is None or raw == "":
        return DISK_ROWS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{DISK_ROWS_ENV} a whole number of rows (0 or more)",
            repr(raw),
            f"unset {DISK_ROWS_ENV} for the default ({DISK_ROWS}), or set e.g. 100000",
        )
    return value


class LazyEmbeddings:
    """An (N, D) float32 matrix read from disk in row ranges."""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo`` to ``hi`` (exclusive) as a tensor."""
        raise NotImplementedError

    def chunks(self) -> Iterator[tuple[int, int]]:
        """The natural row ranges to read at once (whole shards)."""
        for lo in range(0, len(self), SHARD_ROWS):
            yield lo, min(lo + SHARD_ROWS, len(self))

    def batches(self, batch_size: int = BATCH_ROWS) -> Iterator[torch.Tensor]:
        """The rows in order, ``batch_size`` at a time."""
        for lo in range(0, len(self), batch_size):
            yield self.rows(lo, min(lo + batch_size, len(self)))

    def take(self, idx: np.ndarray) -> torch.Tensor:
        """The rows ``idx`` (any order), read chunk by chunk."""
        idx = np.asarray(idx, dtype=np.int64)
        out = torch.empty(len(idx), self.dim)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        for lo, hi in self.chunks():
            a, b = np.searchsorted(sorted_idx, [lo, hi])
            if a == b:
                continue
            block = self.rows(int(sorted_idx[a]), int(sorted_idx[b - 1]) + 1)
            out[torch.as_tensor(order[a:b])] = block[
                torch.as_tensor(sorted_idx[a:b] - sorted_idx[a])
            ]
        return out

    def materialise(self) -> torch.Tensor:
        """Every row in one tensor (for callers that need them all at once)."""
        out = torch.empty(len(self), self.dim)
        for lo, hi in self.chunks():
            out[lo:hi] = self.rows(lo, hi)
        return out

    def numpy(self) -> np.ndarray:
        return self.materialise().numpy()


class ShardedEmbeddings(LazyEmbeddings):
    """The embeddings in ``folder``'s shards (see :class:`ShardWriter`). ``temporary``: the
    folder is removed once this object is garbage-collected."""

    def __init__(self, folder: Path, temporary: bool = False) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / INDEX).read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"{self.folder}: not an embedding shard folder")
        self._dim = int(index["dim"])
        self.files = [str(self.folder / s["file"]) for s in index["shards"]]
        counts = np.asarray([int(s["rows"]) for s in index["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        if int(self.starts[-1]) != int(index["rows"]):
            raise ValueError(f"{self.folder}: the shards do not add up to the rows")
        if temporary:
            weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def dim(self) -> int:
        return self._dim

    def chunks(self) -> Iterator[tuple[int, int]]:
        for s in range(len(self.files)):
            yield int(self.starts[s]), int(self.starts[s + 1])

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        lo, hi = max(lo, 0), min(hi, len(self))
        if hi <= lo:
            return torch.empty(0, self.dim)
        parts = []
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        for s in range(first, len(self.files)):
            start, stop = int(self.starts[s]), int(self.starts[s + 1])
            if start >= hi:
                break
            a, b = max(lo, start) - start, min(hi, stop) - start
            # a positional read of rows a:b; the file is unmapped again on leaving
            with safe_open(self.files[s], framework="pt") as f:
                parts.append(f.get_slice("embeddings")[a:b])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class MeanEmbeddings(LazyEmbeddings):
    """The element-wise mean of several lazy matrices of one shape (views of one split)."""

    def __init__(self, parts: list[LazyEmbeddings]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return len(self.parts[0])

    @property
    def dim(self) -> int:
        return self.parts[0].dim

    def chunks(self) -> Iterator[tuple[int, int]]:
        return self.parts[0].chunks()

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        return torch.stack([p.rows(lo, hi) for p in self.parts]).mean(0)


class ShardWriter:
    """Writes rows appended in order into shards of ``shard_rows`` under ``folder``; the
    index goes last, in :meth:`close`."""

    def __init__(self, folder: Path, dim: int, shard_rows: int = SHARD_ROWS) -> None:
        self.folder, self.dim, self.shard_rows = Path(folder), dim, shard_rows
        self.folder.mkdir(parents=True, exist_ok=True)
        self._buffer: list[torch.Tensor] = []
        self._buffered = 0
        self.shards: list[dict[str, int | str]] = []

    def append(self, x: torch.Tensor) -> None:
        x = x.detach().float().cpu()
        while len(x):
            take = min(len(x), self.shard_rows - self._buffered)
            self._buffer.append(x[:take])
            self._buffered += take
            x = x[take:]
            if self._buffered == self.shard_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        block = torch.cat(self._buffer).contiguous()
        name = f"shard-{len(self.shards):05d}.safetensors"
        write_safetensors({"embeddings": block}, self.folder / name)
        self.shards.append({"file": name, "rows": len(block)})
        self._buffer, self._buffered = [], 0

    def close(self) -> None:
        self._flush()
        index = {
            "format": FORMAT,
            "rows": int(sum(int(s["rows"]) for s in self.shards)),
            "dim": self.dim,
            "shards": self.shards,
        }
        atomic_write(self.folder / INDEX, json.dumps(index, indent=1))


def is_complete(folder: Path) -> bool:
    return (folder / INDEX).is_file()


SCRATCH_PREFIX = "headstart-embeddings-"


def scratch_folder(root: Path | None = None) -> Path:
    """A fresh folder for shards being written, or kept by no cache (removed with their
    matrix). Its name carries the process id, so that :func:`clean_scratch` can remove
    those of a killed process."""
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    clean_scratch(root)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=root))


def clean_scratch(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders in ``root`` (default: the system's temporary folder)
    left by processes that are no longer running; returns what was removed."""
    folder = root if root is not None else Path(tempfile.gettempdir())
    removed = []
    for p in folder.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = p.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def publish(tmp: Path, final: Path) -> ShardedEmbeddings:
    """Move a finished shard folder ``tmp`` to ``final`` (a rename: all or nothing)."""
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return ShardedEmbeddings(final)


Embeddings = torch.Tensor | LazyEmbeddings


def as_batches(x: Embeddings, batch_size: int = BATCH_ROWS) -> Iterator[torch.Tensor]:
    """Row batches of an in-memory or disk-backed matrix."""
    if isinstance(x, LazyEmbeddings):
        yield from x.batches(batch_size)
    else:
        for lo in range(0, len(x), batch_size):
            yield x[lo : lo + batch_size]


def in_memory(x: Embeddings) -> torch.Tensor:
    """``x`` as a tensor (a disk-backed matrix is read whole: only for what needs it all)."""
    return x.materialise() if isinstance(x, LazyEmbeddings) else x
