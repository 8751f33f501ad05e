"""Reading a run's data: load a source (images or texts), run its preflight checks, and
split it as the config says (the small-data validation policy included)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from headstart.config import DataConfig
from headstart.data import (
    BUNDLED_TEXT_DATASETS,
    ImageSamples,
    PreflightReport,
    TextSamples,
    list_image_files,
    per_class_subsample,
    preflight,
    preflight_text,
    resolve_images,
    resolve_texts,
    scan_image_folder,
    stratified_split,
    up_to_per_class,
)
from headstart.data.text_tables import TEXT_TABLE_SUFFIXES
from headstart.errors import DataError
from headstart.paths import is_dir, is_file

#: table files read as texts
TEXT_SUFFIXES = tuple(TEXT_TABLE_SUFFIXES)

#: what a data source yields; both kinds share classes, labels, subset() and len()
Samples = ImageSamples | TextSamples


@dataclass
class Splits:
    train: Samples
    val: Samples
    test: Samples | None
    #: how the labelled data was used (the small-data validation policy), for metrics.json
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def is_text_source(spec: str) -> bool:
    """A bundled text dataset (``name`` or ``name:split``) or a table file."""
    return spec.partition(":")[0] in BUNDLED_TEXT_DATASETS or (
        Path(spec).suffix.lower() in TEXT_SUFFIXES
    )


def load_source(spec: str, cfg: DataConfig, classes: list[str] | None = None) -> Samples:
    """Images (a folder or bundled name) or texts (a table file or bundled name)."""
    if is_text_source(spec):
        return resolve_texts(spec, cfg.text_cols, cfg.label_col, classes=classes)
    path = Path(spec).expanduser()
    if classes is not None and is_dir(path):
        return scan_image_folder(path, classes=classes)
    return resolve_images(spec)


def check_samples(
    samples: Samples,
    cfg: DataConfig,
    progress: bool,
    min_per_class: int = 2,
    labelled: bool = True,
) -> tuple[Samples, PreflightReport]:
    """The preflight of the samples' modality (every bad file or text listed, or skipped).
    ``labelled``: every example must have a label (a row with an empty or NaN label is an
    error, or skipped with ``skip_bad``), as training, evaluation and ranking need."""
    missing: list[tuple[str, str]] = []
    if labelled:
        samples, missing = _require_labels(samples, cfg)
    if isinstance(samples, TextSamples):
        samples, report = preflight_text(samples, cfg.skip_bad, min_per_class=min_per_class)
    else:
        samples, report = preflight(samples, cfg.skip_bad, cfg.max_pixels, min_per_class, progress)
    if missing:
        report = replace(
            report,
            n_checked=report.n_checked + len(missing),
            n_skipped=report.n_skipped + len(missing),
            bad=missing + report.bad,
        )
    return samples, report


#: at most this many rows without a label are named in the error
_MISSING_LISTED = 10


def _require_labels(samples: Samples, cfg: DataConfig) -> tuple[Samples, list[tuple[str, str]]]:
    """``samples`` without the examples that have no label (only with ``cfg.skip_bad``;
    otherwise they are an error naming the first few), and those examples as (where,
    reason) pairs."""
    at = np.flatnonzero(np.asarray(samples.labels) < 0)
    if not at.size:
        return samples, []
    where = [_where(samples, int(i)) for i in at]
    if not cfg.skip_bad:
        rows = getattr(samples, "rows", None)
        if rows is not None:
            found = (
                f"{at.size} row{'s' if at.size != 1 else ''} of {samples.name} without a label "
                "(empty, NaN or null): row"
                + ("s " if at.size != 1 else " ")
                + ", ".join(str(int(rows[i])) for i in at[:_MISSING_LISTED])
            )
            column = f" in the label column {cfg.label_col!r}"
        else:
            found = f"{at.size} example(s) of {samples.name} without a label: " + ", ".join(
                where[:_MISSING_LISTED]
            )
            column = ""
        more = f" and {at.size - _MISSING_LISTED} more" if at.size > _MISSING_LISTED else ""
        raise DataError(
            f"a label for every example{column} (a missing label is not a class)",
            found + more,
            "fill in those labels or remove those rows, or pass --skip-bad (skip_bad=True) "
            "to leave them out",
        )
    keep = np.flatnonzero(np.asarray(samples.labels) >= 0)
    return samples.subset(keep), [(w, "no label") for w in where]


def _where(samples: Samples, i: int) -> str:
    if isinstance(samples, TextSamples):
        return samples.where(i)
    if samples.paths is not None:
        return str(samples.paths[i])
    return f"{samples.name}:index {i}"


def eval_source(spec: str, classes: list[str], cfg: DataConfig, progress: bool) -> Samples:
    samples = load_source(spec, cfg, classes)
    if samples.classes != classes:
        raise DataError(
            f"the training classes {classes}",
            f"{samples.classes} in {spec}",
            "evaluate on data with the same class names",
        )
    return check_samples(samples, cfg, progress, min_per_class=0)[0]


def prepare_data(
    cfg: DataConfig,
    console: Console,
    progress: bool = True,
    source: Samples | None = None,
    few_shot: bool = False,
    small_data: bool = True,
) -> Splits:
    """Load, check and split the data as the config says.

    ``few_shot`` (a few-shot strategy): one example per class is enough, and when a class
    has fewer than ``FEW_SHOT_HOLDOUT`` examples no labelled example is held out of
    training (give --val / --test data, or read the leave-one-out estimate)."""
    if source is None:
        source = load_source(cfg.source, cfg)
    source, report = check_samples(source, cfg, progress, min_per_class=1 if few_shot else 2)
    console.print(f"[bold]data[/] {source.name}: {report.summary()}")
    for path, reason in report.bad:
        console.print(f"  [yellow]skipped[/] {path}: {reason}", highlight=False)
    val_f = 0.0 if cfg.val else cfg.val_fraction
    test_f = 0.0 if cfg.test else cfg.test_fraction
    smallest = int(np.bincount(np.asarray(source.labels)).min()) if len(source) else 0
    if few_shot and smallest < FEW_SHOT_HOLDOUT and (val_f or test_f):
        val_f = test_f = 0.0
        console.print(
            f"[bold]few-shot[/]: a class has only {smallest} example(s), so every labelled "
            "example trains and none is held out; pass --val / --test data for held-out "
            "figures"
        )
    policy: dict[str, Any] = {"validation": "given (--val)" if cfg.val else "held out"}
    if small_data and not cfg.val and val_f:
        per_class = min(cfg.per_class or smallest, smallest)
        expected = (
            per_class * val_f / max(1.0 - val_f - test_f, 1e-9)
            if cfg.per_class
            else (smallest * val_f)
        )
        if expected < MIN_VAL_PER_CLASS:
            val_f = 0.0
            policy["validation"] = (
                f"none held out: it would have had about {expected:.1f} examples per class "
                f"(fewer than {MIN_VAL_PER_CLASS}); every labelled example trains, training "
                "runs its fixed number of epochs, the probe's regularisation is "
                "cross-validated and calibration uses out-of-fold predictions"
            )
            console.print(
                f"[bold]small data[/]: a validation split would hold about {expected:.1f} "
                f"examples per class (fewer than {MIN_VAL_PER_CLASS}), too few to decide on; "
                "none is held out: every labelled example trains, no early stopping, and "
                "decisions use cross-validation on the training examples"
            )
    tr, va, te = stratified_split(source.labels, val_f, test_f, seed=cfg.split_seed)
    train = source.subset(tr)
    val = eval_source(cfg.val, source.classes, cfg, progress) if cfg.val else source.subset(va)
    test = (
        eval_source(cfg.test, source.classes, cfg, progress)
        if cfg.test
        else source.subset(te)
        if len(te)
        else None
    )
    if cfg.per_class:
        # a label budget: per_class training images, and validation in proportion
        label_seed = cfg.split_seed if cfg.label_seed is None else cfg.label_seed
        idx = per_class_subsample(
            train.labels, cfg.per_class, seed=label_seed, classes=train.classes
        )  # counts are of the training part, after validation and test are held out
        train = train.subset(idx)
        if not cfg.val and len(val):
            n_val = max(1, round(cfg.per_class * val_f / (1.0 - val_f - test_f)))
            val = val.subset(up_to_per_class(val.labels, n_val, label_seed))
    if cfg.max_test and test is not None and len(test) > cfg.max_test:
        _, _, keep = stratified_split(
            test.labels, 0.0, cfg.max_test / len(test), seed=cfg.split_seed
        )
        test = test.subset(keep)
    console.print(
        f"[bold]split[/] train {len(train)}, validation {len(val)}, "
        f"test {len(test) if test is not None else 0}, classes {len(source.classes)}"
    )
    return Splits(train, val, test, policy)


#: a few-shot strategy holds no labelled example out when a class has fewer than this
FEW_SHOT_HOLDOUT = 10


#: no validation split is held out when it would have fewer examples per class than this.
#: With k classes and fewer than 10 per class, the standard error of a validation
#: accuracy near 0.8 is above sqrt(0.16 / (10 k)) (0.04 for 10 classes, 0.09 for 2):
#: larger than the differences between epochs, heads or temperatures it would decide
#: (an early-stopped probe read "best validation macro-F1 1.0000" off 2 examples per class)
MIN_VAL_PER_CLASS = 10


def load_target(spec: str, cfg: DataConfig) -> Samples:
    """The target domain, labelled or not: what :func:`load_source` reads, and also a folder
    of images without class subfolders, or a table without the label column (every label
    -1, unlabelled)."""
    path = Path(spec).expanduser()
    if is_text_source(spec):
        if not is_file(path):
            return load_source(spec, cfg)  # a bundled dataset, or the clear error
        unlabelled = resolve_texts(spec, cfg.text_cols, None)
        return unlabelled if cfg.label_col not in unlabelled.extra else load_source(spec, cfg)
    if is_dir(path) and not any(
        d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX" for d in path.iterdir()
    ):
        files = list_image_files(path)
        if not files:
            raise DataError(
                "a target folder of images (flat for unlabelled images, or one subfolder per "
                "class)",
                f"no image files in {path}",
                "check the path given with --target",
            )
        return ImageSamples(
            classes=[], labels=np.full(len(files), -1, dtype=np.int64), paths=files, name=str(path)
        )
    return load_source(spec, cfg)
