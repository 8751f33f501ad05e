"""Preflight: find every unusable file and class before any work starts."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from headstart.data.images import DEFAULT_MAX_PIXELS, check_image
from headstart.data.samples import ImageSamples
from headstart.errors import DataError, PreflightError

PROGRESS_THRESHOLD = 200
"""Show a progress bar when checking more files than this."""


@dataclass
class PreflightReport:
    """What preflight checked and found.

    Attributes:
        n_checked: images checked (files opened, or array rows).
        n_skipped: unreadable files left out (only with ``skip_bad=True``).
        bad: every unreadable file as (path, reason).
        class_counts: images per class name after leaving bad files out.
        n_unlabelled: images without a label (``-1``).
        skipped_links: symbolic links not followed because they lead outside the folder.
    """

    n_checked: int
    n_skipped: int
    bad: list[tuple[str, str]] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    n_unlabelled: int = 0
    skipped_links: int = 0
    unit: str = "images"

    def summary(self) -> str:
        """One line, e.g. ``checked 120 images, 3 classes (min 30, max 50), 2 bad skipped``."""
        parts = [f"checked {self.n_checked} {self.unit}"]
        if self.class_counts:
            counts = self.class_counts.values()
            parts.append(f"{len(self.class_counts)} classes (min {min(counts)}, max {max(counts)})")
        if self.n_unlabelled:
            parts.append(f"{self.n_unlabelled} unlabelled")
        if self.n_skipped:
            parts.append(f"{self.n_skipped} bad skipped")
        if self.skipped_links:
            parts.append(f"{self.skipped_links} links outside the folder not followed")
        return ", ".join(parts)


def preflight(
    samples: ImageSamples,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_per_class: int = 2,
    progress: bool = True,
) -> tuple[ImageSamples, PreflightReport]:
    """Check every image and every class; return the usable samples and a report.

    Every file is fully decoded once (not converted), so empty, non-image, truncated and
    oversized (over ``max_pixels`` pixels) files are all found up front. Any such file
    raises one :class:`~headstart.errors.PreflightError` listing them all, unless
    ``skip_bad`` is set, in which case they are left out and counted.

    For labelled data, fewer than 2 classes, or any class with fewer than
    ``min_per_class`` images (an empty class included), is a
    :class:`~headstart.errors.DataError` naming every offending class. Pass
    ``min_per_class=0`` to allow empty classes (e.g. a test folder missing a class).
    """
    bad: list[tuple[str, str]] = []
    if samples.paths is not None:
        bad = _bad_files(samples.paths, max_pixels, progress)
        if bad and not skip_bad:
            raise _preflight_error(bad)
        if bad:
            bad_paths = {p for p, _ in bad}
            keep = [i for i, p in enumerate(samples.paths) if str(p) not in bad_paths]
            samples = samples.subset(np.asarray(keep, dtype=np.int64))
        samples = replace(samples, max_pixels=max_pixels)
    counts = check_classes(samples, min_per_class)
    report = PreflightReport(
        n_checked=len(samples) + len(bad),
        n_skipped=len(bad),
        bad=bad,
        class_counts=counts,
        n_unlabelled=int(np.sum(samples.labels == -1)),
        skipped_links=len(samples.skipped_links),
    )
    return samples, report


#: checks in flight at once per worker thread: the queue of pending checks stays this
#: small however many files there are (submitting one future per file up front holds
#: a future, a path and later a result for every file at once)
IN_FLIGHT_PER_WORKER = 4


def _bad_files(paths: list[Path], max_pixels: int, progress: bool) -> list[tuple[str, str]]:
    """(path, reason) for every file that does not decode, in input order."""
    check = partial(check_image, max_pixels=max_pixels)
    workers = min(8, os.cpu_count() or 1)
    reasons: Iterable[str | None] = _bounded_map(check, paths, workers)
    if progress and len(paths) > PROGRESS_THRESHOLD:
        reasons = _track(reasons, len(paths))
    return [(str(p), r) for p, r in zip(paths, reasons, strict=True) if r is not None]


def _bounded_map(
    fn: Callable[[Path], str | None], items: Iterable[Path], workers: int
) -> Iterator[str | None]:
    """``map(fn, items)`` on a pool of ``workers`` threads, in order, with at most
    ``workers * IN_FLIGHT_PER_WORKER`` calls submitted and not yet consumed."""
    window = max(1, workers * IN_FLIGHT_PER_WORKER)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
        pending: deque[Future[str | None]] = deque()
        for item in items:
            if len(pending) >= window:
                yield pending.popleft().result()
            pending.append(pool.submit(fn, item))
        while pending:
            yield pending.popleft().result()


def _track(items: Iterable[str | None], total: int) -> Iterator[str | None]:
    from rich.progress import track

    yield from track(items, total=total, description="Checking images", transient=True)


def _preflight_error(bad: list[tuple[str, str]]) -> PreflightError:
    lines = "\n".join(f"  {path}: {reason}" for path, reason in bad)
    return PreflightError(
        "every image file to be readable",
        f"{len(bad)} unreadable file{'s' if len(bad) != 1 else ''}:\n{lines}\n",
        "remove or replace these files, or pass --skip-bad to leave them out",
        bad=bad,
    )


def check_classes(samples: ImageSamples, min_per_class: int) -> dict[str, int]:
    """Images per class; raise if the labels do not make a usable classification task."""
    labels, classes = samples.labels, samples.classes
    out_of_range = np.unique(labels[(labels < -1) | (labels >= len(classes))])
    if out_of_range.size:
        raise DataError(
            f"labels from 0 to {len(classes) - 1} (or -1 for unlabelled)",
            f"label value(s) {', '.join(str(v) for v in out_of_range[:10])}",
            "encode labels as positions in the classes list, e.g. with from_arrays(X, y)",
        )
    if not samples.is_labelled:
        return {}
    per_class = np.bincount(labels[labels >= 0], minlength=len(classes))
    counts = {name: int(c) for name, c in zip(classes, per_class, strict=True)}
    if len(classes) < 2:
        raise DataError(
            "at least 2 classes to tell apart",
            f"{len(classes)} class ({', '.join(classes)}) in {samples.name}",
            "add a folder of images for each further class",
        )
    problems = [_shortfall(name, n) for name, n in counts.items() if n < min_per_class]
    if problems:
        raise DataError(
            f"at least {min_per_class} images in every class",
            "; ".join(problems) + f" (in {samples.name})",
            "add images to those classes, or remove their class folders",
        )
    return counts


def _shortfall(name: str, n: int) -> str:
    if n == 0:
        return f"class {name!r} has no images"
    return f"class {name!r} has only {n} image{'s' if n != 1 else ''}"
