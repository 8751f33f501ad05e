"""TextSamples: texts with labels, and the label handling every text source shares
(missing values, integer or string labels, indexing into a list of classes)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from headstart.errors import DataError

_ROWS_PER_LABEL = 5


@dataclass
class TextSamples:
    """Texts with labels.

    Attributes:
        classes: class names; ``labels`` index into this list.
        labels: int64 array of shape (N,); ``-1`` marks an unlabelled text.
        texts: the N texts.
        name: a human label of the source, e.g. the file or ``"bbc-news[train]"``.
        rows: the 1-based row (CSV, TSV, Parquet) or line (JSONL) of each text in its
            source file, for error messages; ``None`` for in-memory data.
        extra: further columns kept from the source (e.g. ``condition``), each a list
            aligned with ``texts``.
    """

    classes: list[str]
    labels: np.ndarray
    texts: list[str]
    name: str = "texts"
    rows: np.ndarray | None = None
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.texts, str):
            raise DataError(
                "a list of texts",
                "a single string",
                "wrap it in a list: texts=[text]",
            )
        self.texts = list(self.texts)
        not_str = [i for i, t in enumerate(self.texts) if not isinstance(t, str)]
        if not_str:
            raise DataError(
                "every text to be a string",
                f"{len(not_str)} non-string value(s), first at position(s) "
                f"{', '.join(str(i) for i in not_str[:5])} "
                f"(e.g. {type(self.texts[not_str[0]]).__name__})",
                "convert the texts with str(), or use from_texts(X, y)",
            )
        self.classes = [str(c) for c in self.classes]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.texts)
        if len(self.labels) != n:
            raise DataError(
                "one label per text",
                f"{n} texts and {len(self.labels)} labels",
                "pass labels of the same length as the texts",
            )
        if self.rows is not None:
            self.rows = np.asarray(self.rows, dtype=np.int64).reshape(-1)
            if len(self.rows) != n:
                raise DataError(
                    "one row number per text",
                    f"{n} texts and {len(self.rows)} row numbers",
                    "pass rows of the same length as the texts, or rows=None",
                )
        self.extra = {str(k): list(v) for k, v in self.extra.items()}
        uneven = {k: len(v) for k, v in self.extra.items() if len(v) != n}
        if uneven:
            listed = ", ".join(f"{k!r} has {m}" for k, m in uneven.items())
            raise DataError(
                f"every extra column to have one value per text ({n})",
                listed,
                "pass extra columns of the same length as the texts",
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_labelled(self) -> bool:
        """True when at least one text has a label."""
        return bool(np.any(self.labels >= 0))

    def subset(self, idx: np.ndarray) -> TextSamples:
        """The samples at integer positions ``idx`` (in that order); extra columns follow."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        positions = idx.tolist()
        return replace(
            self,
            labels=self.labels[idx],
            texts=[self.texts[i] for i in positions],
            rows=self.rows[idx] if self.rows is not None else None,
            extra={k: [v[i] for i in positions] for k, v in self.extra.items()},
        )

    def where(self, i: int) -> str:
        """Where text ``i`` comes from, e.g. ``"data.csv:row 7"`` (or ``"texts:index 3"``)."""
        if self.rows is not None:
            return f"{self.name}:row {int(self.rows[i])}"
        return f"{self.name}:index {i}"


def is_missing(value: object) -> bool:
    """None, NaN, or pandas' NA / NaT."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


# --------------------------------------------------------------------------- labels

_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def is_missing_label(value: object) -> bool:
    """A missing label: None, NaN, pandas' NA, an empty string, or the text ``NaN`` (any
    case), which is how a missing value reads back from a CSV file: never a class."""
    if isinstance(value, str):
        return not value.strip() or value.strip().lower() in _NAN_TEXTS
    return is_missing(value)


_NAN_TEXTS = ("nan", "-nan", "+nan")


def normalise_labels(raw: Sequence[Any]) -> list[int | str | None]:
    """None for a missing label; ints when every label is a whole number; else strings."""
    values: list[int | str | None] = []
    for v in raw:
        if is_missing_label(v):
            values.append(None)
        elif isinstance(v, (bool, np.bool_)):
            values.append(str(v))
        elif isinstance(v, (int, np.integer)) or (
            isinstance(v, (float, np.floating)) and float(v).is_integer()
        ):
            values.append(int(v))
        else:
            values.append(str(v))
    present = [v for v in values if v is not None]
    if all(isinstance(v, int) or _INT_TEXT.fullmatch(v) for v in present):
        return [None if v is None else int(v) for v in values]
    return [None if v is None else str(v) for v in values]


def index_labels(
    names: list[str | None], class_list: list[str], where: np.ndarray, name: str, unit: str
) -> np.ndarray:
    """Positions of ``names`` in ``class_list`` (-1 for None); unseen names are an error."""
    index = {c: i for i, c in enumerate(class_list)}
    unseen: dict[str, list[int]] = {}
    for pos, label in enumerate(names):
        if label is not None and label not in index:
            unseen.setdefault(label, []).append(int(where[pos]))
    if unseen:
        raise DataError(
            f"labels among the {len(class_list)} classes the model knows "
            f"({', '.join(repr(c) for c in class_list)})",
            f"unseen label(s) in {name}: "
            + "; ".join(_places(label, at, unit) for label, at in sorted(unseen.items())),
            "evaluate on the classes the model was trained on, or retrain with them",
        )
    return np.asarray([-1 if v is None else index[v] for v in names], dtype=np.int64)


def _places(label: str, at: list[int], unit: str) -> str:
    shown = ", ".join(str(r) for r in at[:_ROWS_PER_LABEL])
    more = f" and {len(at) - _ROWS_PER_LABEL} more" if len(at) > _ROWS_PER_LABEL else ""
    plural = "s" if len(at) != 1 else ""
    return f"{label!r} ({unit}{plural} {shown}{more})"
