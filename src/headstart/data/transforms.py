"""Image -> tensor transforms for training and evaluation, built with timm."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from PIL import Image

from headstart.errors import ConfigError

AUGMENTATIONS: dict[str, str] = {
    "none": "no augmentation: training images get the evaluation transform",
    "light": "random resized crop (scale 0.7-1.0) and horizontal flip",
    "strong": "light, plus RandAugment (rand-m9-mstd0.5)",
}
LIGHT_SCALE = (0.7, 1.0)
RANDAUGMENT = "rand-m9-mstd0.5"
INTERPOLATION = "bilinear"


def build_transform(
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    augment: str = "light",
) -> Callable[[Image.Image], torch.Tensor]:
    """A transform from an RGB PIL image to a normalised (3, input_size, input_size) tensor.

    Evaluation (and ``augment="none"``) resizes the whole image to
    input_size x input_size, without a centre crop, so small images (28 px Fashion-MNIST)
    keep their border; it is deterministic. Training adds the augmentation named by
    ``augment`` (see ``AUGMENTATIONS``).
    """
    if augment not in AUGMENTATIONS:
        options = "; ".join(f"{k!r}: {v}" for k, v in AUGMENTATIONS.items())
        raise ConfigError(
            "one of the augmentations 'none', 'light', 'strong'",
            repr(augment),
            f"pick one of {options}",
        )
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ConfigError(
            "a positive whole-number input size",
            repr(input_size),
            "pass the backbone's input size, e.g. 224",
        )
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ConfigError(
            "3 channel means and 3 positive standard deviations",
            f"mean={tuple(mean)}, std={tuple(std)}",
            "pass the backbone's normalisation, e.g. mean=std=(0.5, 0.5, 0.5)",
        )
    from timm.data import create_transform  # lazy: importing timm takes seconds

    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    if not train or augment == "none":
        transform = create_transform(
            input_size,
            is_training=False,
            mean=mean_t,
            std=std_t,
            interpolation=INTERPOLATION,
            crop_pct=1.0,
            crop_mode="squash",  # resize to input_size x input_size, crop nothing
        )
    else:
        transform = create_transform(
            input_size,
            is_training=True,
            mean=mean_t,
            std=std_t,
            interpolation=INTERPOLATION,
            scale=LIGHT_SCALE,
            hflip=0.5,
            color_jitter=0.0,  # no colour jitter; timm's default would be 0.4
            auto_augment=RANDAUGMENT if augment == "strong" else None,
        )
    return cast(Callable[[Image.Image], torch.Tensor], transform)
