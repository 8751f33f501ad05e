"""Devices and seeds: which device a run uses, the Accelerate object of the training loop,
and seeding every random generator a run draws from.

Every random choice of a run draws from a generator seeded from the run's seed alone,
mostly through a seed derived from it and a fixed tag naming the choice
(:func:`derive_seed`): the head's initialisation, each epoch's shuffling, augmentation and
dropout, a scikit-learn head's solver (the probe's folds and the splits take the seed
itself). So no result depends on what drew from the process-wide generators before (a
cold embedding cache runs more data loaders than a warm one, another run in the same
process draws as much as it likes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from headstart.config import TrainConfig
from headstart.errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator


def process_rank() -> tuple[int, int]:
    """(this process's rank, the number of processes) of a multi-process launch
    (``torchrun``, ``accelerate launch``: their ``RANK`` and ``WORLD_SIZE``); (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; a missing GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ConfigError("device auto, cpu, cuda or cuda:N", repr(device), "pass --device auto")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "a CUDA GPU for --device cuda",
            "none (torch.cuda.is_available() is False)",
            "pass --device cpu or --device auto, or install a CUDA build of torch",
        )
    return device


@contextlib.contextmanager
def main_process_first(enabled: bool = True, device: str = "auto") -> Iterator[None]:
    """In a multi-process launch, the first process of each machine runs the block alone
    while that machine's others wait at a barrier, then they run it (reading what the
    first one cached: embeddings, importances); alone or with ``enabled`` false, just the
    block. Accelerate's ordering (``PartialState.local_main_process_first``: the cache is
    per machine), whose state also starts the process group."""
    if not enabled or process_rank()[1] == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState(cpu=resolve_device(device) == "cpu").local_main_process_first():
        yield


def make_accelerator(cfg: TrainConfig, **kwargs: Any) -> Accelerator:
    """The loop's Accelerator for ``cfg`` (``kwargs``: e.g. a tracker's ``log_with``)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device = resolve_device(cfg.device)
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "no"
        if device.startswith("cuda"):  # bf16 where the GPU has it natively, else fp16
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            mp = "bf16" if native_bf16 else "fp16"
    if device == "cpu" and mp == "fp16":
        mp = "no"  # fp16 autocast on CPU is slow and unsupported by many kernels
    # Accelerate keeps process-wide state; each fit may ask for other settings
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision=mp,
        gradient_accumulation_steps=cfg.grad_accum,
        **kwargs,
    )


def seed_everything(cfg: TrainConfig) -> None:
    """Seed the process-wide generators with the run's seed and, with ``deterministic``,
    ask torch for deterministic kernels. A run's own random choices do not rely on this:
    each draws from a generator derived from the seed (see the module's docstring)."""
    from accelerate.utils import set_seed

    if cfg.deterministic:  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


#: derived seeds are below this bound (numpy, torch and Python accept them all)
_SEED_BOUND = 2**63 - 1


def derive_seed(seed: int, tag: str) -> int:
    """A seed for the random choice named ``tag`` of a run seeded with ``seed``: the same
    pair always gives the same number, on every machine and in every process, and
    different tags give unrelated numbers."""
    digest = hashlib.sha256(f"headstart:{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % _SEED_BOUND


def generator(seed: int, tag: str) -> torch.Generator:
    """A CPU ``torch.Generator`` of its own for the choice ``tag`` (see :func:`derive_seed`)."""
    return torch.Generator().manual_seed(derive_seed(seed, tag))


def numpy_rng(seed: int, tag: str) -> np.random.Generator:
    """A numpy ``Generator`` of its own for the choice ``tag``."""
    return np.random.default_rng(derive_seed(seed, tag))


def sklearn_seed(seed: int, tag: str) -> int:
    """A ``random_state`` for a scikit-learn estimator (they take 32-bit seeds)."""
    return derive_seed(seed, tag) % 2**32


def seed_global(seed: int) -> None:
    """Seed the process-wide generators (Python, numpy, torch on every device) with one
    number; what draws from them (torchvision and timm transforms, dropout) is then
    determined by it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also every CUDA device's generator


@contextlib.contextmanager
def seeded(seed: int, tag: str) -> Iterator[None]:
    """Run the block with the process-wide generators seeded for the choice ``tag`` (code
    that draws from them, such as ``nn.Linear``'s initialisation, gives the same result
    whatever ran before), and put their states back afterwards."""
    py, np_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        try:
            seed_global(derive_seed(seed, tag))
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def in_order_generator() -> torch.Generator:
    """The generator of a data loader that reads in order (embeddings, predictions,
    statistics): a loader without one draws its worker seed from the process-wide torch
    generator on every pass, so how many such passes ran (a cold embedding cache runs
    more than a warm one) would shift every later random draw of the run."""
    return generator(0, "in-order loader")
