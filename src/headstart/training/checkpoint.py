"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds the model, the optimiser's state, the scheduler, the strategy's state,
the loop's own state and the random number generators, so that ``--resume`` continues
a run exactly where it stopped.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from headstart.storage import write_safetensors


def _tensors_and_meta(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a reference into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}:{prefix}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {str(k): _tensors_and_meta(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tensors_and_meta(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _restore(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _restore(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v, tensors) for v in obj]
    return obj


def save_nested(obj: dict[str, Any], path: Path) -> None:
    """Write a nested dict of tensors and plain values as one safetensors file: the tensors
    as tensors, the rest as JSON in the file's metadata. Written to a temporary file and
    renamed, so a crash never leaves a half-written checkpoint."""
    tensors: dict[str, torch.Tensor] = {}
    meta = _tensors_and_meta(obj, "", tensors)
    write_safetensors(tensors, path, {"nested": json.dumps(meta)})


def load_nested(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["nested"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return _restore(meta, tensors)


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    sd = optimizer.state_dict()
    # JSON turns int keys into strings; keep them as a list of pairs instead
    return {"state": [[k, v] for k, v in sd["state"].items()], "param_groups": sd["param_groups"]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    sd = {"state": {int(k): v for k, v in state["state"]}, "param_groups": state["param_groups"]}
    optimizer.load_state_dict(sd)


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
