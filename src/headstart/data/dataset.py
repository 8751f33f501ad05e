"""A torch Dataset over ImageSamples, and a content fingerprint for caching."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from headstart.data.samples import ImageSamples
from headstart.data.text import TextSamples

_CHUNK = 1 << 20


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """``dataset[i]`` is ``(transform(image i), label i)``; the label is -1 if unlabelled."""

    def __init__(
        self, samples: ImageSamples, transform: Callable[[Image.Image], torch.Tensor]
    ) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.samples.image(i)), int(self.samples.labels[i])


def data_fingerprint(samples: ImageSamples | TextSamples) -> str:
    """A sha256 hex digest of the dataset's content: pixels, file bytes or texts, labels,
    classes.

    It changes when any pixel, file byte, text, label or the order of samples changes,
    and not when a folder is moved or copied elsewhere (file paths enter relative to their
    common folder). Used as a content address for cached embeddings.
    """
    h = hashlib.sha256(b"headstart-data-v1\0")
    if isinstance(samples, TextSamples):
        h.update(f"texts {len(samples.texts)}\0".encode())
        for text in samples.texts:
            encoded = text.encode("utf-8", errors="surrogatepass")
            h.update(f"{len(encoded)}\0".encode())
            h.update(encoded)
    elif samples.arrays is not None:
        pixels = np.ascontiguousarray(samples.arrays)
        h.update(f"arrays {pixels.dtype.str} {pixels.shape}\0".encode())
        h.update(pixels.reshape(-1).view(np.uint8).data)
    elif samples.paths is not None:
        h.update(f"files {len(samples.paths)}\0".encode())
        base = _common_folder(samples.paths)
        for path in samples.paths:
            _hash_file(h, path, base)
    h.update(np.ascontiguousarray(samples.labels, dtype="<i8").tobytes())
    h.update(json.dumps(samples.classes).encode())
    return h.hexdigest()


def _common_folder(paths: list[Path]) -> str:
    if not paths:
        return ""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def _hash_file(h: hashlib._Hash, path: Path, base: str) -> None:
    relative = Path(os.path.relpath(os.path.abspath(path), base)).as_posix()
    h.update(f"{relative}\0{os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
