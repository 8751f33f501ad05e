"""Decoding one image file into 8-bit RGB, with clear reasons when a file is bad.

Every image headstart reads goes through :func:`load_image` (to use it) or
:func:`check_image` (to verify it during preflight). Both fully decode the file, so
truncated files fail here and not halfway through training, and both apply their own
pixel limit instead of relying on PIL's process-wide ``Image.MAX_IMAGE_PIXELS``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from headstart.errors import DataError

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image (width x height) headstart opens: PIL's own default limit,
``1024 * 1024 * 1024 // 4 // 3``, about a 9459 x 9459 image or 256 MiB as RGBA.
Larger images are reported as possible decompression bombs; raise the limit with
``max_pixels=`` when a dataset really holds such images."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File extensions (lower case) treated as images when scanning a folder."""

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_DIRECT_MODES = frozenset({"RGB", "L", "1", "P", "CMYK", "YCbCr", "RGBX", "HSV"})
_SUPPORTED_MODES = _ALPHA_MODES | _SIXTEEN_BIT_MODES | _DIRECT_MODES | {"I", "F"}

# PIL checks its global limit inside Image.open. We switch that check off for the
# duration of the header read (under a lock, restored afterwards) and apply our own
# explicit limit to the size the header reports.
_PIL_LIMIT_LOCK = threading.Lock()


class _BadImage(Exception):
    """Internal: a file is not a usable image; ``reason`` is a short phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def _open_header(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """Open ``path`` lazily (header only) and enforce ``max_pixels``; closes on exit."""
    try:
        if os.stat(path).st_size == 0:
            raise _BadImage("zero bytes")
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                img = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        raise _BadImage("not an image (cannot identify image file)") from None
    except FileNotFoundError:
        raise _BadImage("file not found (missing, or a broken link)") from None
    except PermissionError:
        raise _BadImage("cannot read the file (permission denied)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _BadImage(f"not a readable image ({e})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise _BadImage(
                f"decompression bomb: {width}x{height} = {width * height} pixels "
                f"is over the limit of {max_pixels} pixels"
            )
        yield img


def _decode(img: Image.Image) -> None:
    """Fully decode ``img``; turn PIL's failures into a :class:`_BadImage`."""
    try:
        img.load()
    except Image.DecompressionBombError as e:  # a GIF frame larger than the header says
        raise _BadImage(f"decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        message = str(e)
        if "truncated" in message:
            raise _BadImage(f"truncated ({message})") from None
        raise _BadImage(f"cannot decode ({message or type(e).__name__})") from None
    if img.mode not in _SUPPORTED_MODES:
        raise _BadImage(f"unsupported pixel mode {img.mode!r}")


def check_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Verify that ``path`` decodes; return ``None`` if it does, else a short reason.

    Cheaper than :func:`load_image`: JPEGs are decoded at reduced scale (every byte is
    still read, so truncation is still found) and nothing is converted.
    """
    try:
        with _open_header(Path(path), max_pixels) as img:
            if img.format == "JPEG":
                img.draft(None, (max(1, img.width // 8), max(1, img.height // 8)))
            _decode(img)
    except _BadImage as e:
        return e.reason
    return None


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``path`` as an 8-bit RGB image, fully decoded.

    EXIF orientation is applied. Grey, 1-bit, palette, CMYK and 16-bit images are
    converted to RGB; transparent pixels (alpha, or a palette/grey transparency key) are
    composited onto white. 16-bit data is scaled over its full range (0..65535 ->
    0..255) so brightness stays comparable across a dataset.

    Raises :class:`~headstart.errors.DataError` when the file is empty, not an image,
    truncated, or larger than ``max_pixels`` pixels.
    """
    path = Path(path)
    try:
        with _open_header(path, max_pixels) as img:
            _decode(img)
            try:
                oriented = ImageOps.exif_transpose(img)
            except (OSError, SyntaxError, ValueError, KeyError, TypeError):
                oriented = img  # unreadable EXIF block: keep the pixels as stored
            return to_rgb(oriented)
    except _BadImage as e:
        raise DataError(
            "a readable image file",
            f"{path}: {e.reason}",
            "remove or replace this file, or run the preflight check with skip_bad=True "
            "(--skip-bad) to leave bad files out",
        ) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any supported mode to 8-bit RGB."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode), "L").convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return img.copy()
    return img.convert("RGB")


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float grey values to 0..255."""
    data = values.astype(np.float64)
    if mode in _SIXTEEN_BIT_MODES:
        low, high = 0.0, 65535.0
    else:
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            low, high = 0.0, 1.0
        elif lo >= 0.0 and hi <= 255.0 and mode == "F":
            low, high = 0.0, 255.0
        elif lo >= 0.0 and hi <= 65535.0:
            low, high = 0.0, 65535.0
        else:
            low, high = lo, max(hi, lo + 1.0)
    scaled = (np.nan_to_num(data, nan=low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def native_image_size(samples: object, max_files: int = 64) -> int | None:
    """The median shorter side, in pixels, of the images of ``samples`` (an array's own
    size; for files, the headers of up to ``max_files`` of them); None for other data."""
    arrays = getattr(samples, "arrays", None)
    if arrays is not None:
        return int(min(arrays.shape[1], arrays.shape[2]))
    paths = getattr(samples, "paths", None)
    if not paths:
        return None
    sides = []
    for path in list(paths)[:: max(1, len(paths) // max_files)][:max_files]:
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
        except (OSError, UnidentifiedImageError):
            continue  # the preflight has listed or skipped it
    return int(np.median(sides)) if sides else None
