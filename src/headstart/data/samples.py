"""ImageSamples: the one in-memory description of an image dataset.

A dataset is either a list of image files or a uint8 array of pixels, plus integer
labels that index ``classes`` (``-1`` marks an unlabelled image).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

from headstart.data.images import DEFAULT_MAX_PIXELS, load_image
from headstart.errors import DataError


@dataclass
class ImageSamples:
    """Images (as files or as a pixel array) with labels.

    Attributes:
        classes: class names; ``labels`` index into this list.
        labels: int64 array of shape (N,); ``-1`` marks an unlabelled image.
        paths: image files, when the dataset lives on disk (else ``None``).
        arrays: uint8 pixels of shape (N, H, W) grey or (N, H, W, 3) RGB (else ``None``).
        name: a human label of the source, e.g. the folder or ``"fashion-mnist[train]"``.
        max_pixels: the decompression-bomb limit used when reading ``paths``.
        skipped_links: symbolic links found while scanning that were not followed
            because they point outside the scanned folder.
    """

    classes: list[str]
    labels: np.ndarray
    paths: list[Path] | None = None
    arrays: np.ndarray | None = None
    name: str = "images"
    max_pixels: int = DEFAULT_MAX_PIXELS
    skipped_links: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.arrays is None):
            raise DataError(
                "exactly one of paths= or arrays=",
                "both" if self.paths is not None else "neither",
                "pass image files as paths= or pixels as arrays=, not both",
            )
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.paths is not None:
            # Path objects kept as they are: a subset or a replaced field must not copy
            # every path (about 200 bytes each, a copy per split on a large folder)
            self.paths = [p if isinstance(p, Path) else Path(p) for p in self.paths]
            n = len(self.paths)
        else:
            n = len(cast(np.ndarray, self.arrays))
        if len(self.labels) != n:
            raise DataError(
                "one label per image",
                f"{n} images and {len(self.labels)} labels",
                "pass labels of the same length as the images",
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_labelled(self) -> bool:
        """True when at least one image has a label."""
        return bool(np.any(self.labels >= 0))

    def subset(self, idx: np.ndarray) -> ImageSamples:
        """The samples at integer positions ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        paths = [self.paths[i] for i in idx] if self.paths is not None else None
        arrays = self.arrays[idx] if self.arrays is not None else None
        return replace(self, labels=self.labels[idx], paths=paths, arrays=arrays)

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as an 8-bit RGB PIL image."""
        if self.paths is not None:
            return load_image(self.paths[i], max_pixels=self.max_pixels)
        pixels = cast(np.ndarray, self.arrays)[i]  # __post_init__: arrays is set
        if pixels.ndim == 2:
            return Image.fromarray(pixels, "L").convert("RGB")
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
