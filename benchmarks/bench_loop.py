"""Loop overhead: fine-tuning throughput of headstart's Trainer vs a minimal PyTorch loop.

Same model (EfficientNet-Lite0), batch size, optimiser and in-memory data; the two loops
alternate, and each one's median images/s is compared. Goal: ratio >= 0.9.

    python benchmarks/bench_loop.py [--images 256] [--size 64] [--batch-size 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headstart.backbones import create_backbone
from headstart.config import BackboneConfig, StrategyConfig, TrainConfig
from headstart.strategies import build_strategy
from headstart.training import Trainer


def raw_loop(model: nn.Module, ds: TensorDataset, bs: int, epochs: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True)
    model.train()
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            n += len(x)
    return n / (time.perf_counter() - t0)


def headstart_loop(model: nn.Module, ds: TensorDataset, bs: int, epochs: int) -> float:
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=bs,
        lr=1e-4,
        device="cpu",
        checkpoint=False,
        patience=epochs,
        label_smoothing=0.0,
    )
    # bn_stats="update": the same arithmetic as the raw loop (BatchNorm in training mode)
    strategy = build_strategy(StrategyConfig(name="finetune", bn_stats="update"))
    t0 = time.perf_counter()
    Trainer(cfg).fit(model, strategy.param_groups(model), ds, None, strategy)  # type: ignore[arg-type]
    n = epochs * (len(ds) // bs) * bs
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = TensorDataset(
        torch.randn(args.images, 3, args.size, args.size), torch.randint(0, 10, (args.images,))
    )
    model = create_backbone(BackboneConfig(name="efficientnet_lite0"), 10, args.size)
    raw_loop(model, ds, args.batch_size, 1)  # warm-up
    ours, raw, ratios = [], [], []
    for r in range(args.rounds):
        # alternate the order so that drift in machine speed favours neither loop
        if r % 2 == 0:
            raw.append(raw_loop(model, ds, args.batch_size, args.epochs))
            ours.append(headstart_loop(model, ds, args.batch_size, args.epochs))
        else:
            ours.append(headstart_loop(model, ds, args.batch_size, args.epochs))
            raw.append(raw_loop(model, ds, args.batch_size, args.epochs))
        ratios.append(ours[-1] / raw[-1])
        print(
            f"round {r + 1}: raw {raw[-1]:.1f} img/s, headstart {ours[-1]:.1f} img/s, "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    ratio = statistics.median(ratios)
    print(
        f"median: raw {statistics.median(raw):.1f} img/s, headstart "
        f"{statistics.median(ours):.1f} img/s; median per-round ratio {ratio:.3f} "
        f"(goal >= 0.9): {'PASS' if ratio >= 0.9 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
