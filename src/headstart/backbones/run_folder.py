"""A headstart run folder as a backbone: the trained backbone of an earlier image run
(e.g. from meta-training), built as its architecture with the run's weights.

Its config.yaml names the architecture and input size, model.safetensors holds the
weights. A model trained from it records that architecture in its own spec, so nothing
needs rebuilding from this family.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from headstart.backbones.base import Backbone
from headstart.backbones.families import FAMILIES, BackboneFamily, create_backbone
from headstart.config import BackboneConfig
from headstart.errors import BackboneError
from headstart.paths import is_file


def run_folder_backbone(name: str) -> tuple[str, str, int] | None:
    """(backbone name, weights file, input size) of a headstart run folder, if ``name`` is
    one: its config.yaml names the architecture, model.safetensors holds the weights."""
    folder = Path(name).expanduser()
    if not (is_file(folder / "config.yaml") and is_file(folder / "model.safetensors")):
        return None
    try:
        spec = yaml.safe_load((folder / "config.yaml").read_text())["spec"]
        modality, arch_name, size = spec["modality"], str(spec["name"]), int(spec["input_size"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise BackboneError(
            "a run folder whose config.yaml holds the backbone's spec",
            f"{folder / 'config.yaml'}: {e}",
            "pass a folder written by headstart fit or meta-train",
        ) from e
    if modality != "image":
        raise BackboneError(
            "an image run folder as a backbone to train from",
            f"{folder}, a {modality} run",
            f"use it with `headstart fewshot --backbone {folder}` or `headstart predict`, or "
            "start fit from a text encoder name or Hugging Face folder",
        )
    if _stores_trained_only(folder / "model.safetensors"):
        raise BackboneError(
            "a run folder holding its whole model, as a backbone to train from",
            f"{folder}, whose model.safetensors keeps only the tensors its "
            "parameter-efficient strategy trained (adapters, head, norms)",
            f"predict or export with it (`headstart predict {folder} ...`), or train from "
            "a run of a strategy that stores the whole model (finetune, lp-ft, ...)",
        )
    return arch_name, str(folder / "model.safetensors"), size


def _stores_trained_only(weights: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            return (f.metadata() or {}).get("stores") == "trained-only"
    except Exception:  # unreadable: loading the weights says why
        return False


class RunFolderFamily(BackboneFamily):
    """A folder holding config.yaml and model.safetensors, written by fit or meta-train."""

    order = 10

    def claims_name(self, name: str) -> bool:
        folder = Path(name).expanduser()
        return is_file(folder / "config.yaml") and is_file(folder / "model.safetensors")

    def check_name(self, name: str) -> None:
        run_folder_backbone(name)  # a text run, or an unreadable config, is an error

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        run = run_folder_backbone(cfg.name)
        if run is None:
            raise BackboneError(
                "a run folder holding config.yaml and model.safetensors",
                f"{cfg.name}, without them",
                "pass a folder written by headstart fit or meta-train",
            )
        name, weights, size = run
        return create_backbone(
            dataclasses.replace(cfg, name=name, weights=cfg.weights or weights),
            num_classes,
            image_size or size,
            max_length,
        )


FAMILIES.add("run-folder", RunFolderFamily(), help="the trained backbone of an image run folder")
