"""Where images come from: a folder of class subfolders, arrays, or a bundled dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from headstart.data.bundled import BUNDLED_DATASETS, load_bundled
from headstart.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_image
from headstart.data.samples import ImageSamples
from headstart.errors import DataError
from headstart.paths import exists, is_dir
from headstart.registry import did_you_mean

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageSamples",
    "from_arrays",
    "load_image",
    "resolve_images",
    "scan_image_folder",
]

_LAYOUT = "a folder laid out as root/<class>/<image>"
_SHAPES = "(N, H, W), (N, H, W, 1), (N, H, W, 3), (N, 1, H, W) or (N, 3, H, W)"


def scan_image_folder(root: str | Path, classes: list[str] | None = None) -> ImageSamples:
    """List the images of ``root``, one subfolder per class (names sorted).

    Files with an image extension (.jpg .jpeg .png .bmp .gif .tif .tiff .webp, any case)
    are collected, also from folders nested inside a class folder; other files are
    ignored. Hidden files and folders (``.ipynb_checkpoints``, ``._x.jpg``) and
    ``__MACOSX`` are skipped. Symbolic links that point outside ``root`` are not followed
    (listed in ``skipped_links``). Files are not opened here: :func:`preflight` does that.

    With ``classes`` (e.g. the training classes, when scanning a test folder) labels
    index that list, and a class folder not in it is an error. Empty class folders are
    kept, with zero images, for preflight to report.
    """
    root = Path(root)
    if not is_dir(root):
        found = f"{root} does not exist" if not exists(root) else f"{root} is a file"
        raise DataError(_LAYOUT, found, "pass the folder that holds one subfolder per class")
    top = root.resolve()
    skipped: list[Path] = []
    class_dirs = {d.name: d for d in _entries(root, top, skipped) if d.is_dir()}
    if not class_dirs:
        loose = sum(1 for p in _entries(root, top, []) if _is_image_name(p))
        extra = f" ({loose} image files lie directly in it)" if loose else ""
        raise DataError(
            _LAYOUT,
            f"no class subfolders in {root}{extra}",
            "put each class's images in a subfolder named after the class, "
            "e.g. root/cat/1.jpg and root/dog/2.jpg",
        )
    class_list = sorted(class_dirs) if classes is None else [str(c) for c in classes]
    unknown = sorted(set(class_dirs) - set(class_list))
    if unknown:
        raise DataError(
            f"only class folders among the known classes ({', '.join(class_list)})",
            f"unknown class folder(s) {', '.join(repr(u) for u in unknown)} in {root}",
            "remove or rename those folders, or train a model that includes those classes",
        )
    _check_linked_classes(class_dirs)
    index = {name: i for i, name in enumerate(class_list)}
    paths: list[Path] = []
    labels: list[int] = []
    seen: set[Path] = set()
    owner: dict[Path, tuple[str, Path]] = {}  # real file -> (its class, the path listed)
    folders: dict[Path, Path] = {}  # folder -> its real path
    for name in sorted(class_dirs):
        files = _image_files(class_dirs[name], top, skipped, seen)
        for f in files:
            _check_one_class(f, name, owner, folders)
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    return ImageSamples(
        classes=class_list,
        labels=np.asarray(labels, dtype=np.int64),
        paths=paths,
        name=str(root),
        skipped_links=skipped,
    )


def _check_linked_classes(class_dirs: dict[str, Path]) -> None:
    """A class folder that is (a link to) another class folder, or lies inside one, would
    give that class's images a second label, or leave a class seemingly empty."""
    real: dict[str, Path] = {}
    for name, d in class_dirs.items():
        try:
            real[name] = d.resolve(strict=True)
        except (OSError, RuntimeError):
            continue  # a dangling link or a loop: listed as skipped later
    for name, r in sorted(real.items()):
        for other, o in sorted(real.items()):
            if other != name and r.is_relative_to(o):
                how = "a link to" if r == o else "inside"
                raise DataError(
                    "each class folder to hold its own images",
                    f"class folder {class_dirs[name]} is {how} class folder "
                    f"{class_dirs[other]} (it resolves to {r}): the same images would be "
                    f"labelled both {name!r} and {other!r}",
                    "replace the link with a folder of that class's own images, or remove it",
                )


def _check_one_class(
    path: Path, name: str, owner: dict[Path, tuple[str, Path]], folders: dict[Path, Path]
) -> None:
    """One real file listed under two classes (through a link) is an error naming both.
    ``folders`` caches the real path of each folder, so that a file that is no link costs
    one ``lstat``."""
    try:
        if path.is_symlink():
            real = path.resolve(strict=True)
        else:
            parent = folders.get(path.parent)
            if parent is None:
                parent = folders[path.parent] = path.parent.resolve(strict=True)
            real = parent / path.name
    except (OSError, RuntimeError):
        return  # a dangling link: preflight reports it
    first = owner.setdefault(real, (name, path))
    if first[0] != name:
        raise DataError(
            "each image file in one class only",
            f"{path} (class {name!r}) and {first[1]} (class {first[0]!r}) are the same file "
            f"({real}), linked into both classes",
            "remove the link, or copy the image if it really belongs to both classes",
        )


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_dir()


def _entries(folder: Path, top: Path, skipped: list[Path]) -> list[Path]:
    """Visible entries of ``folder``, sorted; links leading outside ``top`` go to ``skipped``."""
    try:
        children = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DataError(
            "a readable folder", f"{folder}: {e.strerror or e}", "check its permissions"
        ) from None
    kept = []
    for child in children:
        if _is_hidden(child.name):
            continue
        if child.is_symlink():
            try:
                inside = child.resolve(strict=True).is_relative_to(top)
            except (OSError, RuntimeError):  # a dangling link or a link loop
                inside = False
            if not inside:
                skipped.append(child)
                continue
        kept.append(child)
    return kept


def list_image_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, recursively, in sorted order; hidden entries are
    skipped and links leading out of the folder are not followed."""
    folder = Path(folder)
    return _image_files(folder, folder.resolve(), [], set())


def _image_files(folder: Path, top: Path, skipped: list[Path], seen: set[Path]) -> list[Path]:
    try:
        real = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        skipped.append(folder)
        return []
    if real in seen:  # a link loop, or a folder linked twice
        return []
    seen.add(real)
    files: list[Path] = []
    for entry in _entries(folder, top, skipped):
        if entry.is_dir():
            files.extend(_image_files(entry, top, skipped, seen))
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(entry)
    return files


def from_arrays(
    X: npt.ArrayLike | Sequence[str | Path],
    y: npt.ArrayLike | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSamples:
    """Wrap in-memory images (or a list of image files) with their labels.

    ``X`` is a pixel array of shape (N, H, W), (N, H, W, 1), (N, H, W, 3), or channel
    first (N, 1, H, W) / (N, 3, H, W); uint8, or floats in [0, 1] (scaled by 255) or in
    [0, 255]. A list of file paths is also accepted.

    ``y`` holds strings or integers (``None``: unlabelled). Without ``classes`` the
    classes are the sorted unique labels; with ``classes``, string labels must be among
    them and integer labels are positions in that list (``-1``: unlabelled).
    """
    if isinstance(X, (list, tuple)) and X and all(isinstance(p, (str, Path)) for p in X):
        paths: list[Path] | None = [Path(p) for p in X]
        arrays = None
        n, name = len(X), "files"
    else:
        paths, arrays = None, _as_uint8_images(X)
        n, name = len(arrays), "arrays"
    labels, class_list = _encode_labels(y, n, classes)
    return ImageSamples(classes=class_list, labels=labels, paths=paths, arrays=arrays, name=name)


def _as_uint8_images(X: object) -> np.ndarray:
    a = np.asarray(X)
    shape = a.shape
    if a.ndim == 4 and a.shape[-1] not in (1, 3) and a.shape[1] in (1, 3):
        a = a.transpose(0, 2, 3, 1)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3) or 0 in a.shape:
        raise DataError(
            f"a 3-D or 4-D image array of shape {_SHAPES}",
            f"an array with shape {shape}",
            "reshape the pixels to one of those layouts, e.g. X.reshape(-1, 28, 28) "
            "for flattened 28x28 grey images",
        )
    return np.ascontiguousarray(_to_uint8(a))


def _to_uint8(a: np.ndarray) -> np.ndarray:
    value_fix = "pass uint8 pixels, or floats scaled to [0, 1] or [0, 255]"
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype.kind not in "iuf":
        raise DataError("numeric pixel values", f"dtype {a.dtype}", value_fix)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise DataError("finite pixel values", "NaN or infinite values", value_fix)
    low, high = float(a.min()), float(a.max())
    if low < 0 or high > 255:
        raise DataError(
            "pixel values in [0, 1] or [0, 255]", f"values from {low:g} to {high:g}", value_fix
        )
    if a.dtype.kind == "f" and high <= 1.0:
        a = a * 255.0
    return np.rint(a).astype(np.uint8) if a.dtype.kind == "f" else a.astype(np.uint8)


def _encode_labels(
    y: npt.ArrayLike | None, n: int, classes: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """(int64 label indexes, class names) from raw labels."""
    if y is None:
        return np.full(n, -1, dtype=np.int64), [str(c) for c in classes or []]
    raw = np.asarray(y)
    if raw.ndim != 1 or len(raw) != n:
        raise DataError(
            "one label per image (a 1-D sequence)",
            f"labels of shape {raw.shape} for {n} images",
            "pass y with one entry per image",
        )
    if raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
        raw = raw.astype(np.int64)
    if raw.dtype.kind in "biu":
        return _encode_int_labels(raw.astype(np.int64), classes)
    if raw.dtype.kind in "USO":
        return _encode_str_labels([str(v) for v in raw], classes)
    raise DataError(
        "string or whole-number labels",
        f"labels of dtype {raw.dtype}",
        "pass class names or integer class indexes as y",
    )


def _encode_int_labels(
    raw: np.ndarray, classes: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    if classes is None:
        values = np.unique(raw[raw >= 0])
        labels = np.where(raw >= 0, np.searchsorted(values, raw), -1).astype(np.int64)
        return labels, [str(v) for v in values]
    class_list = [str(c) for c in classes]
    bad = np.unique(raw[(raw < -1) | (raw >= len(class_list))])
    if bad.size:
        raise DataError(
            f"integer labels that index the {len(class_list)} classes (0..{len(class_list) - 1}, "
            "or -1 for unlabelled)",
            f"label value(s) {', '.join(str(v) for v in bad[:10])}",
            "pass labels as class names, or fix the classes list",
        )
    return raw, class_list


def _encode_str_labels(
    raw: list[str], classes: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    class_list = sorted(set(raw)) if classes is None else [str(c) for c in classes]
    index = {c: i for i, c in enumerate(class_list)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise DataError(
            f"labels among the classes ({', '.join(class_list)})",
            f"unknown label(s) {', '.join(repr(u) for u in unknown[:10])}",
            "add them to classes, or fix the labels",
        )
    return np.asarray([index[v] for v in raw], dtype=np.int64), class_list


def resolve_images(spec: str | Path) -> ImageSamples:
    """A bundled dataset (``"name"`` or ``"name:split"``) or an existing image folder."""
    text = str(spec)
    name, _, split = text.partition(":")
    if isinstance(spec, str) and name in BUNDLED_DATASETS:
        return load_bundled(name, split or "train")
    path = Path(text).expanduser()
    if exists(path):
        return scan_image_folder(path)
    hints = did_you_mean(name, BUNDLED_DATASETS)
    hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
    raise DataError(
        "a bundled dataset name (name or name:split) or an existing image folder",
        f"{text!r}, which is neither (no such folder)",
        f"{hint}Bundled datasets: {', '.join(BUNDLED_DATASETS)}; "
        "or pass the path of a folder laid out as root/<class>/<image>.",
    )
