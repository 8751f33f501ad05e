"""Devices and seeds: which device a run uses, the Accelerate object of the training loop,
and seeding every random generator a run draws from."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from headstart.config import TrainConfig
from headstart.errors import ConfigError


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


def make_accelerator(cfg: TrainConfig) -> Accelerator:
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
        cpu=device == "cpu", mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum
    )


def seed_everything(cfg: TrainConfig) -> None:
    if cfg.deterministic:  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
