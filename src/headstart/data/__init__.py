"""Data: image sources, preflight checks, splits, transforms and the torch Dataset.

The flow is ``resolve_images`` / ``scan_image_folder`` / ``from_arrays`` /
``load_bundled`` -> ``preflight`` -> ``stratified_split`` -> ``ImageDataset`` with a
``build_transform`` transform.
"""

from headstart.data.bundled import BUNDLED_DATASETS, load_bundled
from headstart.data.checks import PreflightReport, preflight
from headstart.data.dataset import ImageDataset, data_fingerprint
from headstart.data.images import DEFAULT_MAX_PIXELS, load_image
from headstart.data.samples import ImageSamples
from headstart.data.sources import (
    from_arrays,
    list_image_files,
    resolve_images,
    scan_image_folder,
)
from headstart.data.splits import per_class_subsample, stratified_split
from headstart.data.transforms import build_transform

__all__ = [
    "BUNDLED_DATASETS",
    "DEFAULT_MAX_PIXELS",
    "ImageDataset",
    "ImageSamples",
    "PreflightReport",
    "build_transform",
    "data_fingerprint",
    "from_arrays",
    "list_image_files",
    "load_bundled",
    "load_image",
    "per_class_subsample",
    "preflight",
    "resolve_images",
    "scan_image_folder",
    "stratified_split",
]
