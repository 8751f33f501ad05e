"""Preflight checks for texts: empty or over-long texts, and the class checks the images
use, worded for texts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, cast

import numpy as np

from headstart.data.checks import PreflightReport, check_classes
from headstart.data.text_samples import TextSamples
from headstart.errors import ConfigError, DataError, PreflightError

if TYPE_CHECKING:
    from headstart.data.samples import ImageSamples

_MAX_LISTED = 100
"""At most this many bad texts are spelled out in an error message (all are in ``.bad``)."""


def preflight_text(
    samples: TextSamples,
    skip_bad: bool = False,
    min_per_class: int = 2,
    max_chars: int | None = None,
) -> tuple[TextSamples, PreflightReport]:
    """Check every text and every class; return the usable samples and a report.

    An empty or whitespace-only text, or (with ``max_chars``) one longer than
    ``max_chars`` characters, is bad. All bad texts raise one
    :class:`~headstart.errors.PreflightError` listing them with their rows, unless
    ``skip_bad`` is set, in which case they are left out and counted.

    For labelled data, fewer than 2 classes, or any class with fewer than
    ``min_per_class`` texts, is a :class:`~headstart.errors.DataError` naming every
    offending class (``min_per_class=0`` allows empty classes).
    """
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1
    ):
        raise ConfigError(
            "max_chars to be a whole number of at least 1, or None",
            repr(max_chars),
            "pass e.g. max_chars=100000, or None for no limit",
        )
    bad_at: list[int] = []
    bad: list[tuple[str, str]] = []
    for i, text in enumerate(samples.texts):
        reason = _text_problem(text, max_chars)
        if reason is not None:
            bad_at.append(i)
            bad.append((samples.where(i), reason))
    if bad and not skip_bad:
        raise _preflight_error(bad, max_chars)
    if bad:
        drop = set(bad_at)
        keep = [i for i in range(len(samples)) if i not in drop]
        samples = samples.subset(np.asarray(keep, dtype=np.int64))
    counts = _text_class_counts(samples, min_per_class)
    report = PreflightReport(
        n_checked=len(samples) + len(bad),
        n_skipped=len(bad),
        bad=bad,
        class_counts=counts,
        n_unlabelled=int(np.sum(samples.labels == -1)),
        unit="texts",
    )
    return samples, report


def _text_problem(text: str, max_chars: int | None) -> str | None:
    if not text.strip():
        return "empty text"
    if max_chars is not None and len(text) > max_chars:
        return f"text of {len(text)} characters, over max_chars={max_chars}"
    return None


def _preflight_error(bad: list[tuple[str, str]], max_chars: int | None) -> PreflightError:
    lines = "\n".join(f"  {where}: {reason}" for where, reason in bad[:_MAX_LISTED])
    if len(bad) > _MAX_LISTED:
        lines += f"\n  ... and {len(bad) - _MAX_LISTED} more (all in the error's .bad list)"
    limit = f" of at most {max_chars} characters" if max_chars is not None else ""
    return PreflightError(
        f"every text to be non-empty{limit}",
        f"{len(bad)} unusable text{'s' if len(bad) != 1 else ''}:\n{lines}\n",
        "fill in or remove these rows, or pass --skip-bad (skip_bad=True) to leave them out",
        bad=bad,
    )


_IMAGE_WORD = re.compile(r"\b(no|\d+) image(s?)\b")
_TEXT_FIXES = {
    "at least 2 classes to tell apart": "add texts labelled with each further class",
}


def _text_class_counts(samples: TextSamples, min_per_class: int) -> dict[str, int]:
    """The image class checks (shared code), with the messages worded for texts."""
    try:
        # check_classes only reads .labels, .classes, .name and .is_labelled.
        return check_classes(cast("ImageSamples", samples), min_per_class)
    except DataError as e:
        expected = _IMAGE_WORD.sub(r"\1 text\2", e.expected)
        fix = _TEXT_FIXES.get(
            e.expected, "add texts to those classes, or remove their rows from the data"
        )
        if e.expected.startswith("labels from"):
            fix = "encode labels as positions in the classes list, e.g. with from_texts(X, y)"
        raise DataError(expected, _IMAGE_WORD.sub(r"\1 text\2", e.found), fix) from None
