"""Reading texts and labels from table files: CSV, TSV, JSON Lines and Parquet.

pandas is imported inside the functions that read files, so ``import headstart.data``
stays fast.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.text_samples import TextSamples, index_labels, is_missing, normalise_labels
from headstart.errors import ConfigError, DataError
from headstart.paths import exists, is_file
from headstart.registry import did_you_mean

TEXT_TABLE_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
"""File suffix (lower case) -> table format read by :func:`read_text_table`."""
_UTF8_FIX = "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)"


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
    texts; a missing label (empty, null, NaN or the text ``NaN``) marks one unlabelled
    text, never a class (training and evaluation refuse it). Labels may be strings or
    integers: the classes are the sorted unique labels (integers sorted by value), unless
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
    if not is_file(path):
        found = f"{path} does not exist" if not exists(path) else f"{path} is not a file"
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


def _none_if_missing(value: object) -> object:
    return None if is_missing(value) else value


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
        return ["" if is_missing(v) else str(v) for v in parts[0]]
    return [
        sep.join(str(v) for v in row if not is_missing(v) and str(v) != "")
        for row in zip(*parts, strict=True)
    ]


def _encode_table_labels(
    raw: Sequence[Any], rows: np.ndarray, classes: Sequence[str] | None, name: str
) -> tuple[np.ndarray, list[str]]:
    values = normalise_labels(raw)
    if classes is None:
        present = {v for v in values if v is not None}
        class_list = [str(v) for v in sorted(present, key=lambda v: (isinstance(v, str), v))]
    else:
        class_list = [str(c) for c in classes]
    names = [None if v is None else str(v) for v in values]
    return index_labels(names, class_list, rows, name, "row"), class_list
