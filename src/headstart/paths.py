"""Asking whether a string names an existing file or folder, safely.

Many inputs may be either a path or something else: a text to classify, a backbone name,
a bundled dataset name. ``Path(s).is_file()`` raises ``OSError`` (``File name too long``)
for any string longer than a file name may be, which every real review or article is,
and ``ValueError`` for one holding a NUL character. A string that cannot be a path names
no file: these helpers answer False for it instead of raising.
"""

from __future__ import annotations

import os
from pathlib import Path


def _expanded(path: str | Path) -> str | None:
    try:
        return os.path.expanduser(os.fspath(path))
    except (OSError, ValueError, TypeError):
        return None


def is_file(path: str | Path) -> bool:
    """True when ``path`` (``~`` expanded) is an existing file; never raises."""
    p = _expanded(path)
    return p is not None and os.path.isfile(p)  # os.path catches OSError and ValueError


def is_dir(path: str | Path) -> bool:
    """True when ``path`` (``~`` expanded) is an existing folder; never raises."""
    p = _expanded(path)
    return p is not None and os.path.isdir(p)


def exists(path: str | Path) -> bool:
    """True when ``path`` (``~`` expanded) exists (a dangling link does not); never raises."""
    p = _expanded(path)
    return p is not None and os.path.exists(p)
