"""Can the transferability ranking be trusted? Every candidate of a pool is ranked by every
score (`headstart rank`, on the labelled training examples), then fine-tuned with lp-ft at
a fixed budget; Kendall's tau and weighted tau between each score and the fine-tuned test
accuracy (mean over seeds) say how well the score orders the candidates.

    python benchmarks/bench_rank.py --modality image     # 6 candidates x 3 datasets
    python benchmarks/bench_rank.py --modality text
    python benchmarks/bench_rank.py --report-only        # tables from the saved results

Image pool: EfficientNet-Lite0/1/2, Lite0 cut after blocks.4 and after blocks.5, and a
randomly initialised Lite0, on Fashion-MNIST, MNIST-5k and UCI digits at 64 px (50
labelled images per class, 10 for validation, 1,000 / 1,000 / 500 test images).
Text pool: all-MiniLM-L6-v2, its features after layer.3, layer.1 and the embedding layer,
paraphrase-MiniLM-L3 (ONNX, frozen: its "fine-tuning" is the linear probe) and a randomly
initialised MiniLM-L6, on BBC News (32 per class), drug-review sentiment (32 per class)
and drug-review condition (4 conditions, 16 per class) at 128 tokens.

Results accumulate in OUT/results.json (a stopped run continues); the tables go to
benchmarks/rank_results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from scipy import stats

from headstart.config import (
    RANDOM_PREFIX,
    BackboneConfig,
    DataConfig,
    RankConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.data import (
    from_texts,
    load_bundled,
    load_bundled_text,
    stratified_split,
    up_to_per_class,
)
from headstart.data.loading import Splits
from headstart.features import EmbeddingCache
from headstart.workflows.fit import fit
from headstart.workflows.rank import run_rank

IMAGE_POOL = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite0@blocks.5",
    "efficientnet_lite0@blocks.4",
    f"{RANDOM_PREFIX}efficientnet_lite0",
]
TEXT_POOL = [
    "minilm-l6",
    "minilm-l6@layer.3",
    "minilm-l6@layer.1",
    "minilm-l6@embeddings",
    "paraphrase-minilm-l3",
    f"{RANDOM_PREFIX}minilm-l6",
]
CONDITIONS = ["Birth Control", "Depression", "Pain", "Acne"]
HERE = Path(__file__).parent


def _pick(samples: Any, per_class: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    idx = np.arange(len(samples))
    if exclude is not None:
        idx = np.setdiff1d(idx, exclude)
    return idx[up_to_per_class(np.asarray(samples.labels)[idx], per_class, seed)]


def _budget(pool: Any, test: Any, per_class: int, val_per_class: int) -> Splits:
    train_idx = _pick(pool, per_class, 0)
    val_idx = _pick(pool, val_per_class, 1, exclude=train_idx)
    return Splits(pool.subset(train_idx), pool.subset(val_idx), test)


def _held_out(samples: Any, n_test: int) -> tuple[Any, Any]:
    _, _, te = stratified_split(samples.labels, 0.0, n_test / len(samples), seed=0)
    rest = np.setdiff1d(np.arange(len(samples)), te)
    return samples.subset(rest), samples.subset(te)


def image_datasets() -> dict[str, Callable[[], Splits]]:
    def fashion() -> Splits:
        test = load_bundled("fashion-mnist", "test")
        _, test = _held_out(test, 1000)
        return _budget(load_bundled("fashion-mnist", "train"), test, 50, 10)

    def mnist() -> Splits:
        pool, test = _held_out(load_bundled("mnist-5k", "all"), 1000)
        return _budget(pool, test, 50, 10)

    def digits() -> Splits:
        pool, test = _held_out(load_bundled("digits", "all"), 500)
        return _budget(pool, test, 50, 10)

    return {"fashion-mnist": fashion, "mnist-5k": mnist, "digits": digits}


def text_datasets() -> dict[str, Callable[[], Splits]]:
    def bbc() -> Splits:
        return _budget(
            load_bundled_text("bbc-news", "train"), load_bundled_text("bbc-news", "test"), 32, 8
        )

    def sentiment() -> Splits:
        pool = load_bundled_text("drug-reviews", "train")
        return _budget(pool, load_bundled_text("drug-reviews", "test"), 32, 8)

    def condition() -> Splits:
        every = load_bundled_text("drug-reviews", "all")
        cond = every.extra["condition"]
        keep = [i for i, c in enumerate(cond) if c in CONDITIONS]
        samples = from_texts([every.texts[i] for i in keep], [cond[i] for i in keep], CONDITIONS)
        train_idx = _pick(samples, 16, 0)
        val_idx = _pick(samples, 4, 1, exclude=train_idx)
        rest = np.setdiff1d(np.arange(len(samples)), np.concatenate([train_idx, val_idx]))
        test_idx = rest[up_to_per_class(np.asarray(samples.labels)[rest], 60, 2)]
        return Splits(samples.subset(train_idx), samples.subset(val_idx), samples.subset(test_idx))

    return {"bbc-news": bbc, "drug-sentiment": sentiment, "drug-condition": condition}


def _fit_config(candidate: str, modality: str, seed: int) -> RunConfig:
    random = candidate.startswith(RANDOM_PREFIX)
    name = candidate.removeprefix(RANDOM_PREFIX)
    frozen = name == "paraphrase-minilm-l3"  # ONNX: only a head can train
    if modality == "image":
        data = DataConfig(image_size=64)
        strategy = StrategyConfig(name="lp-ft", head="logistic")
        train = TrainConfig(epochs=5, patience=5, batch_size=32, seed=seed, checkpoint=False)
    else:
        data = DataConfig(max_length=128)
        strategy = StrategyConfig(
            name="linear-probe" if frozen else "lp-ft", head="logistic", backbone_lr_scale=0.05
        )
        train = TrainConfig(epochs=4, patience=4, batch_size=16, seed=seed, checkpoint=False)
    return RunConfig(
        data=data,
        backbone=BackboneConfig(name=name, pretrained=not random),
        strategy=strategy,
        train=train,
    )


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"rank": {}, "fit": {}}


def _save(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def _timed_fit(cfg: RunConfig, data: Splits) -> tuple[Any, float]:
    """One fine-tuning run in a throwaway folder, without the embedding cache; its seconds."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(
            cfg,
            Path(run_dir) / "run",
            data=data,
            progress=False,
            console=Console(quiet=True),
            cache=EmbeddingCache(enabled=False),
        )
    return result, time.perf_counter() - t0


def run(modality: str, seeds: int, out: Path, console: Console) -> None:
    pool = IMAGE_POOL if modality == "image" else TEXT_POOL
    sets = image_datasets() if modality == "image" else text_datasets()
    results_path = out / "results.json"
    out.mkdir(parents=True, exist_ok=True)
    quiet = Console(quiet=True)
    for ds_name, make in sets.items():
        doc = _load(results_path)
        data = make()
        if ds_name not in doc["rank"]:
            dcfg = DataConfig(image_size=64) if modality == "image" else DataConfig(max_length=128)
            with tempfile.TemporaryDirectory() as cache_dir:  # a cold cache: honest timing
                t0 = time.perf_counter()
                res = run_rank(
                    dcfg,
                    RankConfig(backbones=pool, max_per_class=None),
                    samples=data.train,
                    cache=EmbeddingCache(Path(cache_dir)),
                    progress=False,
                    console=quiet,
                )
                seconds = time.perf_counter() - t0
            # the whole first candidate fine-tuned once right after, same process and threads:
            # the like-for-like cost that ranking all candidates is compared with
            _, base_seconds = _timed_fit(_fit_config(pool[0], modality, 0), data)
            doc["rank"][ds_name] = {
                "modality": modality,
                "seconds": seconds,
                "base_fit_seconds": base_seconds,
                "n_train": len(data.train),
                "n_test": len(data.test) if data.test is not None else 0,
                "rows": res.doc["rows"],
            }
            _save(results_path, doc)
            console.print(f"{ds_name}: ranked {len(pool)} candidates in {seconds:.1f} s")
        for seed in range(seeds):
            for cand in pool:
                key = f"{ds_name}|{cand}|{seed}"
                doc = _load(results_path)
                if key in doc["fit"]:
                    continue
                cfg = _fit_config(cand, modality, seed)
                r, seconds = _timed_fit(cfg, data)
                acc = float(r.metrics["test"]["accuracy"])
                doc = _load(results_path)
                doc["fit"][key] = {
                    "accuracy": acc,
                    "seconds": seconds,
                    "strategy": cfg.strategy.name,
                }
                _save(results_path, doc)
                console.print(f"{key}: test accuracy {acc:.3f} in {seconds:.0f} s")


def _tau(x: list[float], y: list[float]) -> tuple[float, float]:
    """Kendall's tau and weighted tau; scores equal to 6 significant digits are ties (the
    plain H-score of wide features is K - 1 up to rounding noise)."""
    x = [float(f"{v:.6g}") for v in x]
    if len(x) < 3 or len(set(x)) < 2:
        return float("nan"), float("nan")
    return float(stats.kendalltau(x, y).statistic), float(stats.weightedtau(x, y).statistic)


def report(out: Path) -> str:
    doc = _load(out / "results.json")
    lines = ["# Transferability ranking: how far it can be trusted", ""]
    lines.append(f"Produced by `python benchmarks/bench_rank.py`. {__doc__.split(chr(10))[0]}")
    lines.append("")
    for modality in ("image", "text"):
        names = [d for d, r in doc["rank"].items() if r["modality"] == modality]
        if not names:
            continue
        scores = list(doc["rank"][names[0]]["rows"][0]["scores"])  # the order they ran in
        lines += [f"## {modality.capitalize()} pool", ""]
        taus: dict[str, dict[str, tuple[float, float, int]]] = {s: {} for s in scores}
        for ds in names:
            r = doc["rank"][ds]
            acc: dict[str, float] = {}
            fit_seconds: dict[str, list[float]] = {}
            for key, v in doc["fit"].items():
                d, cand, _ = key.split("|")
                if d == ds:
                    acc.setdefault(cand, 0.0)
                    fit_seconds.setdefault(cand, []).append(v["seconds"])
            for cand in acc:
                runs = [
                    v["accuracy"] for k, v in doc["fit"].items() if k.startswith(f"{ds}|{cand}|")
                ]
                acc[cand] = statistics.mean(runs)
            n_seeds = min((len(v) for v in fit_seconds.values()), default=0)
            lines += [
                f"### {ds}: {r['n_train']} labelled, {r['n_test']} test, {n_seeds} seed(s)",
                "",
                "| candidate | fine-tuned accuracy | " + " | ".join(scores) + " |",
                "|---|---|" + "---|" * len(scores),
            ]
            rows = sorted(r["rows"], key=lambda row: -acc.get(row["candidate"], -1))
            for row in rows:
                cells = [
                    "n/a" if row["scores"].get(s) is None else f"{row['scores'][s]:.3g}"
                    for s in scores
                ]
                a = acc.get(row["candidate"])
                lines.append(
                    f"| {row['candidate']} | {'' if a is None else f'{a:.3f}'} | "
                    + " | ".join(cells)
                    + " |"
                )
            for s in scores:
                pairs = [
                    (row["scores"][s], acc[row["candidate"]])
                    for row in r["rows"]
                    if row["scores"].get(s) is not None and row["candidate"] in acc
                ]
                if len(pairs) >= 3:
                    kt, wt = _tau([p[0] for p in pairs], [p[1] for p in pairs])
                    taus[s][ds] = (kt, wt, len(pairs))
            all_fit = [x for v in fit_seconds.values() for x in v]
            base = (IMAGE_POOL if modality == "image" else TEXT_POOL)[0]
            if all_fit:
                lines += [
                    "",
                    f"Ranking all {len(r['rows'])} candidates (features from a cold cache, every "
                    f"score): **{r['seconds']:.1f} s**. Fine-tuning one candidate: median "
                    f"{statistics.median(all_fit):.0f} s, fastest {min(all_fit):.0f} s, slowest "
                    f"{max(all_fit):.0f} s (the seeds' runs, two benchmarks sharing the cores). "
                    f"Fine-tuning the whole {base} once, in the same process right after the "
                    f"ranking: **{r.get('base_fit_seconds', float('nan')):.1f} s**.",
                ]
            lines.append("")
        lines += [
            f"### {modality.capitalize()}: correlation of each score with fine-tuned accuracy",
            "",
            "| score | "
            + " | ".join(f"{d} tau / weighted" for d in names)
            + " | mean tau | mean weighted tau |",
            "|---|" + "---|" * (len(names) + 2),
        ]
        for s in scores:
            vals = taus[s]
            if not vals:
                lines.append(f"| {s} | " + " | ".join("n/a" for _ in names) + " | n/a | n/a |")
                continue
            cells = []
            for ds in names:
                if ds not in vals:
                    cells.append("n/a")
                    continue
                kt, wt, n = vals[ds]
                cells.append("constant" if np.isnan(kt) else f"{kt:+.2f} / {wt:+.2f} (n={n})")
            # a constant score orders nothing: it counts as tau 0 in the means
            mk = np.mean([0.0 if np.isnan(v[0]) else v[0] for v in vals.values()])
            mw = np.mean([0.0 if np.isnan(v[1]) else v[1] for v in vals.values()])
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {mk:+.2f} | {mw:+.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", choices=["image", "text", "both"], default="both")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_rank"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    console = Console()
    if not args.report_only:
        for m in ("image", "text") if args.modality == "both" else (args.modality,):
            run(m, args.seeds, args.out / m, console)
    docs = [_load(args.out / m / "results.json") for m in ("image", "text")]
    merged = {"rank": {}, "fit": {}}
    for d in docs:
        merged["rank"].update(d["rank"])
        merged["fit"].update(d["fit"])
    args.out.mkdir(parents=True, exist_ok=True)
    _save(args.out / "results.json", merged)
    text = report(args.out)
    (HERE / "rank_results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
