"""Data: image sources, preflight checks, splits, transforms and the torch Dataset.

The flow is ``resolve_images`` / ``scan_image_folder`` / ``from_arrays`` /
``load_bundled`` -> ``preflight`` -> ``stratified_split`` -> ``ImageDataset`` with a
``build_transform`` transform. Text datasets: ``resolve_texts`` / ``read_text_table`` /
``from_texts`` / ``load_bundled_text`` -> ``preflight_text`` -> ``stratified_split``.
Unlabelled corpora to train word vectors on: ``read_corpus``.
"""

from headstart.data.bundled import BUNDLED_DATASETS, load_bundled
from headstart.data.checks import PreflightReport, preflight
from headstart.data.dataset import ImageDataset, data_fingerprint
from headstart.data.images import DEFAULT_MAX_PIXELS, load_image, native_image_size
from headstart.data.samples import ImageSamples
from headstart.data.sources import (
    from_arrays,
    list_image_files,
    resolve_images,
    scan_image_folder,
)
from headstart.data.splits import per_class_subsample, stratified_split, up_to_per_class
from headstart.data.text import (
    BUNDLED_TEXT_DATASETS,
    TextSamples,
    from_texts,
    load_bundled_text,
    preflight_text,
    read_corpus,
    read_text_table,
    resolve_texts,
)
from headstart.data.transforms import build_transform

__all__ = [
    "BUNDLED_DATASETS",
    "BUNDLED_TEXT_DATASETS",
    "DEFAULT_MAX_PIXELS",
    "ImageDataset",
    "ImageSamples",
    "PreflightReport",
    "TextSamples",
    "build_transform",
    "data_fingerprint",
    "from_arrays",
    "from_texts",
    "list_image_files",
    "load_bundled",
    "load_bundled_text",
    "load_image",
    "native_image_size",
    "per_class_subsample",
    "preflight",
    "preflight_text",
    "read_corpus",
    "read_text_table",
    "resolve_images",
    "resolve_texts",
    "scan_image_folder",
    "stratified_split",
    "up_to_per_class",
]
