"""Does adaptation to an unlabelled target domain help, and by how much? `headstart adapt`
with every method on each shifted pair, 3 seeds: target accuracy and macro-F1 of
source-only (lp-ft) and each method, the proxy A-distance before and after, and what the
label-free criteria pick.

    python benchmarks/bench_adapt.py                       # every pair
    python benchmarks/bench_adapt.py --pairs mnist-digits  # one pair
    python benchmarks/bench_adapt.py --report-only         # tables from the saved results

Images: EfficientNet-Lite0 at 64 px, 50 labelled source images per class (9 more for
validation), 4 epochs, light augmentation. Text: all-MiniLM-L6-v2 at 128 tokens, 48
labelled reviews per class, 4 epochs. Every method starts from the same source splits per
seed. The peer DANN (`pytorch-adapt`) is in benchmarks/peer_dann.py.

Each pair's runs and adapt.json stay in OUT/<pair>/ (run again, finished runs are read back
and only scored); the tables go to benchmarks/adapt_results.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from headstart.config import AdaptConfig, BackboneConfig, DataConfig, RunConfig, TrainConfig
from headstart.workflows.adapt import print_adaptation, run_adapt

ALL = ["dann", "cdan", "coral", "mmd", "self-training", "fixmatch"]
TEXT = [m for m in ALL if m != "fixmatch"]
#: name: (source, target, methods, modality)
PAIRS: dict[str, tuple[str, str, list[str], str]] = {
    "mnist-digits": ("mnist-5k", "digits", ALL, "image"),
    "digits-mnist": ("digits", "mnist-5k", ALL, "image"),
    "fashion-corrupted": ("fashion-mnist", "fashion-mnist-corrupted:test", ALL, "image"),
    "drug-condition": (
        "drug-reviews:other-conditions",
        "drug-reviews:birth-control",
        TEXT,
        "text",
    ),
}
RESULTS = Path(__file__).parent / "adapt_results.md"


def base_config(source: str, modality: str) -> RunConfig:
    if modality == "image":
        data = DataConfig(source=source, image_size=64, per_class=50, augment="light")
        backbone = BackboneConfig(name="efficientnet_lite0")
    else:
        data = DataConfig(source=source, max_length=128, augment="none", per_class=48)
        backbone = BackboneConfig(name="minilm-l6")
    return RunConfig(data=data, backbone=backbone, train=TrainConfig(epochs=4, patience=4, seed=0))


def run_pair(name: str, out: Path, seeds: int) -> dict[str, Any]:
    """Run (or, for finished runs, read back and re-score) one pair."""
    path = out / name / "adapt.json"
    source, target, methods, modality = PAIRS[name]
    console = Console()
    console.rule(f"{source} -> {target}")
    result = run_adapt(
        base_config(source, modality),
        AdaptConfig(target=target, methods=methods, seeds=seeds),
        out / name,
        progress=False,
        console=console,
    )
    print_adaptation(result.summary, console)
    return dict(json.loads(path.read_text()))


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Domain adaptation: source-only vs each method",
        "",
        "Made by `python benchmarks/bench_adapt.py`: mean ± std over 3 seeds; the target "
        "accuracy and macro-F1 are on the labelled target images or texts the methods "
        "saw without labels. A-distance: proxy A-distance between source validation and "
        "target features (2 = perfectly separable domains; the source side is the source "
        "validation split, 90 images, but only 24 reviews on the text pair, where it is "
        "noisy: below 0 means a domain classifier at chance).",
        "",
    ]
    peer_file = Path(__file__).parent / "peer_dann_results.json"
    peers = json.loads(peer_file.read_text()) if peer_file.exists() else {}
    for name, res in results.items():
        summary = res["summary"]
        src = summary["methods"]["source-only"]["target_accuracy"]["mean"]
        lines += [
            f"## {summary['source']} -> {summary['target']}",
            "",
            f"A-distance with the pretrained backbone: {summary['a_distance_before']:.3f}; "
            f"{summary['seconds'] / 60:.0f} min for the pair.",
            "",
            "| method | target accuracy | gain | target macro-F1 | A-distance after "
            "| source val acc | target entropy |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, row in summary["methods"].items():

            def pm(key: str, row: dict[str, Any] = row) -> str:
                return f"{row[key]['mean']:.3f} ± {row[key]['std']:.3f}"

            gain = row["target_accuracy"]["mean"] - src
            lines.append(
                f"| {method} | {pm('target_accuracy')} | {100 * gain:+.1f} "
                f"| {pm('target_macro_f1')} | {pm('a_distance')} "
                f"| {pm('source_val_accuracy')} | {pm('target_entropy')} |"
            )
        if name in peers:
            peer = peers[name]
            seeds = ", ".join(f"{a:.3f}" for a in peer["target_accuracy"])
            lines += [
                "",
                f"Peer DANN (`pytorch-adapt` 0.0.83, `benchmarks/peer_dann.py`, same data, "
                f"backbone, start and steps): target accuracy {peer['mean']:.3f} ± "
                f"{peer['std']:.3f} (seeds: {seeds}).",
            ]
        lines += ["", "Picked without target labels, per seed:", ""]
        for criterion, pick in summary["picks"].items():
            lines.append(
                f"- {criterion}: {', '.join(pick['methods'])} "
                f"(target accuracy {pick['target_accuracy']:.3f})"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_adapt"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    chosen = args.pairs.split(",")
    results: dict[str, dict[str, Any]] = {}
    for name in PAIRS:  # the tables keep the pairs run earlier
        path = args.out / name / "adapt.json"
        if name in chosen and not args.report_only:
            results[name] = run_pair(name, args.out, args.seeds)
        elif path.exists():
            results[name] = json.loads(path.read_text())
    RESULTS.write_text(markdown(results))
    print(f"tables written to {RESULTS}")


if __name__ == "__main__":
    main()
