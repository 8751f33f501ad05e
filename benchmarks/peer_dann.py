"""A peer DANN beside headstart's: the `pytorch-adapt` package (0.0.83) on the same data,
backbone, start and step budget as `headstart adapt --method dann` in bench_adapt.py.

    python benchmarks/peer_dann.py --pair mnist-digits

`pytorch-adapt` is not a headstart dependency; install it beside headstart with
`pip install pytorch-adapt==0.0.83 torchmetrics==0.9.3 pytorch-metric-learning==1.6.3
"setuptools<81" --no-deps` (it imports pkg_resources, gone from setuptools 81).

What is shared, per seed: the source splits (50 labelled images per class at 64 px, light
augmentation), the EfficientNet-Lite0 trunk, the linear head fitted on its frozen
embeddings (headstart's lp-ft first phase, the start of headstart's DANN too), the domain
classifier's shape (1280-256-256-1, ReLU and dropout 0.5), batch size 32 for each domain,
the number of steps (4 epochs of the source), AdamW (head 1e-3, trunk 1e-4, weight decay
0.01), on the CPU. What is the peer's own: its DANNHook (losses, gradient reversal at a
constant weight 1, the optimiser steps), with no learning-rate schedule. The target accuracy is on
the labelled target images, as in bench_adapt.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_adapt import PAIRS, base_config
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from headstart.data.loading import Splits, check_samples, load_source, prepare_data
from headstart.strategies.adaptation import discriminator
from headstart.workflows.fit import fit

OUT = Path(__file__).parent / "peer_dann_results.json"


class Trunk(nn.Module):
    """The backbone without its head: the pooled embedding (pytorch-adapt's G)."""

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.backbone.embed(x)
        return out


def _loop(loader: DataLoader[Any]) -> Any:
    while True:
        yield from loader


def run_seed(pair: str, seed: int, work: Path) -> float:
    from pytorch_adapt.hooks import DANNHook

    source_name, target_name, _, modality = PAIRS[pair]
    cfg = base_config(source_name, modality)
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, test_fraction=0.0, test=None),
        train=dataclasses.replace(cfg.train, seed=seed),
    )
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu"))
    quiet = Console(quiet=True)
    source = prepare_data(cfg.data, quiet, False)
    target = check_samples(load_source(target_name, cfg.data), cfg.data, False, min_per_class=0)[0]
    # the shared start: the linear head fitted on the frozen trunk's embeddings
    probe_cfg = dataclasses.replace(
        cfg, strategy=dataclasses.replace(cfg.strategy, name="linear-probe")
    )
    start = fit(
        probe_cfg,
        work / f"probe-{seed}",
        overwrite=True,
        progress=False,
        console=quiet,
        data=Splits(source.train, source.val, None),
    ).backbone
    torch.manual_seed(seed)
    g, c = Trunk(start), start.head()
    for p in start.parameters():  # the probe left the trunk frozen
        p.requires_grad_(True)
    d = nn.Sequential(discriminator(start.spec.feature_dim), nn.Flatten(0))
    head = {id(p) for p in c.parameters()}
    trunk = [p for p in g.parameters() if id(p) not in head]  # the head is C's alone
    opts = [
        torch.optim.AdamW(trunk, lr=cfg.train.lr * cfg.strategy.backbone_lr_scale),
        torch.optim.AdamW(c.parameters(), lr=cfg.train.lr),
        torch.optim.AdamW(d.parameters(), lr=cfg.train.lr),
    ]
    hook = DANNHook(opts)
    bs = cfg.train.batch_size
    gen = torch.Generator().manual_seed(seed)
    src = _loop(
        DataLoader(
            start.make_dataset(source.train, train=True, augment=cfg.data.augment),
            batch_size=bs, shuffle=True, drop_last=True, generator=gen,
        )
    )  # fmt: skip
    tgt = _loop(
        DataLoader(
            start.make_dataset(target, train=True, augment=cfg.data.augment),
            batch_size=bs, shuffle=True, drop_last=True, generator=gen,
        )
    )  # fmt: skip
    steps = (len(source.train) // bs) * cfg.train.epochs
    for m in (g, c, d):
        m.train()
    for _ in range(steps):
        xs, ys = next(src)
        xt, _ = next(tgt)  # the target's labels are never used
        batch = {
            "src_imgs": xs,
            "src_labels": torch.as_tensor(ys),
            "target_imgs": xt,
            "src_domain": torch.zeros(len(xs)),
            "target_domain": torch.ones(len(xt)),
        }
        hook({"G": g, "C": c, "D": d, **batch})
    g.eval()
    c.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(start.make_dataset(target), batch_size=128):
            correct += int((c(g(x)).argmax(1) == torch.as_tensor(y)).sum())
    return correct / len(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="mnist-digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs/peer_dann"))
    args = parser.parse_args()
    accs = [run_seed(args.pair, s, args.work) for s in range(args.seeds)]
    for s, a in enumerate(accs):
        print(f"seed {s}: pytorch-adapt DANN target accuracy {a:.3f}")
    mean, std = statistics.mean(accs), float(np.std(accs))
    print(f"mean {mean:.3f} ± {std:.3f}")
    saved = json.loads(OUT.read_text()) if OUT.exists() else {}
    saved[args.pair] = {"target_accuracy": accs, "mean": mean, "std": std}
    OUT.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()
