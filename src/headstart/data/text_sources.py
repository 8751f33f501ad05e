"""Text sources: in-memory texts (``from_texts``), and resolving a bundled dataset name
or a table file (``resolve_texts``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.text_bundled import BUNDLED_TEXT_DATASETS, load_bundled_text
from headstart.data.text_samples import TextSamples, index_labels, is_missing, normalise_labels
from headstart.data.text_tables import TEXT_TABLE_SUFFIXES, read_text_table
from headstart.errors import DataError
from headstart.paths import is_dir, is_file
from headstart.registry import did_you_mean


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
    texts = ["" if is_missing(t) else t for t in X]
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
    values = normalise_labels(raw)
    ints = [v for v in values if isinstance(v, int)]
    if ints and len(ints) == sum(v is not None for v in values):
        return _from_int_labels(texts, values, classes)
    names = [None if v is None else str(v) for v in values]
    class_list = (
        sorted({v for v in names if v is not None}) if classes is None else list(map(str, classes))
    )
    labels = index_labels(names, class_list, np.arange(n), "y", "position")
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
    if is_file(path):
        return read_text_table(path, text_cols=text_cols, label_col=label_col, classes=classes)
    hints = did_you_mean(name, BUNDLED_TEXT_DATASETS)
    hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
    found = "a folder" if is_dir(path) else "neither (no such file)"
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
    labels = index_labels(names, class_list, where, samples.name, unit)
    return replace(samples, classes=class_list, labels=labels)


#: plain-text corpus files: one document per line
CORPUS_SUFFIXES = (".txt",)


def read_corpus(spec: str | Path, text_cols: Sequence[str] | str | None = None) -> TextSamples:
    """Unlabelled texts to train word vectors on: a ``.txt`` file (one document per line,
    UTF-8), a table (its text column(s); a label column, if any, is ignored) or a bundled
    text dataset (``name`` or ``name:split``, its texts alone). Blank documents are left
    out; a corpus without any is an error."""
    text = str(spec)
    name, _, split = text.partition(":")
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if isinstance(spec, str) and name in BUNDLED_TEXT_DATASETS and not is_file(path):
        if text_cols:
            raise DataError(
                "--text-col with a table",
                f"--text-col {', '.join(_names(text_cols))} for the bundled dataset {name!r}",
                "drop --text-col (a bundled dataset's texts are known)",
            )
        samples = load_bundled_text(name, split or "train")
    elif suffix in TEXT_TABLE_SUFFIXES:
        samples = read_text_table(path, text_cols=text_cols, label_col=None)
    elif suffix in CORPUS_SUFFIXES:
        if text_cols:
            raise DataError(
                "--text-col with a table",
                f"--text-col {', '.join(_names(text_cols))} for the text file {path.name}",
                "drop --text-col: each line of a .txt file is one document",
            )
        samples = _read_lines(path)
    else:
        hints = did_you_mean(name, BUNDLED_TEXT_DATASETS)
        hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
        raise DataError(
            "a corpus: a .txt file (one document per line), a table "
            f"({', '.join(TEXT_TABLE_SUFFIXES)}) or a bundled text dataset "
            f"({', '.join(BUNDLED_TEXT_DATASETS)})",
            f"{text!r}" + (" (a folder)" if is_dir(path) else ""),
            f"{hint}pass one of those; save other text as UTF-8 .txt, one document per line",
        )
    keep = [i for i, t in enumerate(samples.texts) if str(t).strip()]
    if not keep:
        where = (
            f"the text column(s) {', '.join(_names(text_cols or 'text'))} of {path}"
            if suffix in TEXT_TABLE_SUFFIXES
            else samples.name
        )
        raise DataError(
            "a corpus with at least one non-empty document",
            f"{len(samples.texts)} documents, all empty, in {where}",
            "pass --text-col naming the column that holds the text"
            if suffix in TEXT_TABLE_SUFFIXES
            else "check that the right file was given",
        )
    return (
        samples.subset(np.asarray(keep, dtype=np.int64))
        if len(keep) < len(samples.texts)
        else samples
    )


def _names(cols: Sequence[str] | str) -> list[str]:
    return [cols] if isinstance(cols, str) else [str(c) for c in cols]


def _read_lines(path: Path) -> TextSamples:
    if not is_file(path):
        found = f"{path} is a folder" if is_dir(path) else f"nothing at {path}"
        raise DataError("an existing .txt corpus file", found, "check the path")
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise DataError(
            "a UTF-8 encoded text file",
            f"{path}: byte offset {e.start} is not valid UTF-8",
            "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.txt > out.txt)",
        ) from None
    except OSError as e:
        raise DataError("a readable file", f"{path}: {e.strerror or e}", "check it") from None
    lines = text.splitlines()
    return TextSamples(
        classes=[],
        labels=np.full(len(lines), -1, dtype=np.int64),
        texts=lines,
        name=str(path),
        rows=np.arange(1, len(lines) + 1),
    )
