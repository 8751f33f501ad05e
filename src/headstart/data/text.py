"""Text datasets: TextSamples, table files (CSV, TSV, JSONL, Parquet), bundled corpora.

The flow mirrors the image one: ``resolve_texts`` / ``read_text_table`` / ``from_texts`` /
``load_bundled_text`` -> ``preflight_text`` -> ``stratified_split``. Split like the image
side: :mod:`~headstart.data.text_samples` (the samples and their labels),
:mod:`~headstart.data.text_tables` (table files), :mod:`~headstart.data.text_sources`
(in memory, resolving a spec), :mod:`~headstart.data.text_bundled` (bundled corpora) and
:mod:`~headstart.data.text_checks` (preflight); their public names are re-exported here.
"""

from __future__ import annotations

from headstart.data.text_bundled import (
    BUNDLED_TEXT_DATASETS,
    DRUG_REVIEW_CLASSES,
    DRUG_SOURCE_CONDITION,
    HOLDOUT_FRACTION,
    load_bundled_text,
)
from headstart.data.text_checks import preflight_text
from headstart.data.text_samples import TextSamples
from headstart.data.text_sources import CORPUS_SUFFIXES, from_texts, read_corpus, resolve_texts
from headstart.data.text_tables import TEXT_TABLE_SUFFIXES, read_text_table

__all__ = [
    "BUNDLED_TEXT_DATASETS",
    "CORPUS_SUFFIXES",
    "DRUG_REVIEW_CLASSES",
    "DRUG_SOURCE_CONDITION",
    "HOLDOUT_FRACTION",
    "TEXT_TABLE_SUFFIXES",
    "TextSamples",
    "from_texts",
    "load_bundled_text",
    "preflight_text",
    "read_corpus",
    "read_text_table",
    "resolve_texts",
]
