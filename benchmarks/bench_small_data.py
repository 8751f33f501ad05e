"""Small-data benchmark: the default `fit` against the plainest strong baselines at the
label budgets users start with (1, 2, 5, 10 and 20 labelled examples per class).

Every bundled image set (fashion-mnist, mnist-5k, digits, fashion-mnist-corrupted) and
text set (bbc-news, drug-reviews). Per dataset one fixed test set of at least 500
examples, and a pool of other examples from which each seed draws its labelled ones. Per
budget and seed, on the same labelled examples:

- ``default``: ``headstart fit`` with every setting at its default (``--strategy auto``);
- each strategy by name (``linear-probe``, ``prototypes``, ``lp-ft``, ``finetune``, and
  ``setfit`` for texts), otherwise at defaults;
- the anchors: scikit-learn ``LogisticRegression`` on the same frozen embeddings (the
  backbone's final pooled features at the same input size), with its default C and with
  C chosen by 5-fold cross-validation (fewer folds when a class has fewer examples);
  for texts also TF-IDF + logistic regression.

Rows go to a JSON-lines file as they finish (``--out``, default
``benchmarks/small_data_runs.jsonl``); a run that is already there is not run again, so
the script can be stopped and started. ``--report`` writes the tables
(``benchmarks/small_data_results.md``) from that file.

    python benchmarks/bench_small_data.py                        # everything, 5 seeds
    python benchmarks/bench_small_data.py --methods default,anchor,linear-probe,prototypes
    python benchmarks/bench_small_data.py --methods lp-ft,finetune --seeds 2
    python benchmarks/bench_small_data.py --report
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
IMAGE_SETS = ("fashion-mnist", "mnist-5k", "digits", "fashion-mnist-corrupted")
TEXT_SETS = ("bbc-news", "drug-reviews")
BUDGETS = (1, 2, 5, 10, 20)
STRATEGIES = ("linear-probe", "prototypes", "lp-ft", "finetune", "setfit")
ANCHORS = ("anchor-lr", "anchor-lr-cv", "tfidf-lr")
TEST_SIZE = 600
POOL_PER_CLASS = 100


def pool_and_test(name: str) -> tuple[Any, Any]:
    """A pool to draw labelled examples from and a fixed, stratified test set (>= 500)."""
    from headstart.data import load_bundled, stratified_split
    from headstart.data.text import load_bundled_text

    if name in TEXT_SETS:
        everything = load_bundled_text(name, "all")
    elif name == "fashion-mnist":
        everything = None
    else:
        everything = load_bundled(name, "all")
    if everything is None:  # Fashion-MNIST has its own test files
        train, test_all = (
            load_bundled("fashion-mnist", "train"),
            load_bundled("fashion-mnist", "test"),
        )
        _, _, te = stratified_split(test_all.labels, 0.0, 1000 / len(test_all), seed=0)
        pool, test = train, test_all.subset(te)
    else:
        y = np.asarray(everything.labels)
        n_test = min(TEST_SIZE, max(500, len(y) // 2))
        tr, _, te = stratified_split(y, 0.0, n_test / len(y), seed=0)
        pool, test = everything.subset(tr), everything.subset(te)
    # at most POOL_PER_CLASS of each class in the pool (fewer embeddings to compute)
    y = np.asarray(pool.labels)
    rng = np.random.default_rng(0)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(y == c), min(POOL_PER_CLASS, int((y == c).sum())), False)
            for c in range(len(pool.classes))
        ]
    )
    return pool.subset(np.sort(keep)), test


def draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                for c in np.unique(labels)
            ]
        )
    )


def run_fit(strategy: str | None, train: Any, test: Any, seed: int) -> dict[str, Any]:
    """``headstart fit`` on ``train`` (its own validation policy), scored on ``test``."""
    from rich.console import Console

    from headstart.config import DataConfig, RunConfig, StrategyConfig, TrainConfig
    from headstart.data.loading import prepare_data
    from headstart.workflows.fit import fit

    cfg = RunConfig(data=DataConfig(source="arrays", test_fraction=0.0, split_seed=seed))
    if strategy is not None:
        cfg.strategy = StrategyConfig(name=strategy)
    cfg.train = TrainConfig(seed=seed)
    quiet = Console(quiet=True)
    # few_shot: the preflight accepts one example per class for every strategy here (a
    # user's `fit --strategy lp-ft` on one example per class would be refused)
    data = prepare_data(cfg.data, quiet, progress=False, source=train, few_shot=True)
    data.test = test
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(cfg, Path(tmp) / "run", progress=False, console=quiet, data=data)
    m = result.metrics
    return {
        "accuracy": m["test"]["accuracy"],
        "macro_f1": m["test"]["macro_f1"],
        "seconds": time.perf_counter() - t0,
        "chosen": m["params"].get("auto", {}).get("strategy"),
        "image_size": result.backbone.spec.input_size,
    }


def run_anchors(name: str, train: Any, test: Any, image_size: int | None) -> list[dict]:
    """Logistic regression (default C; C by CV) on the backbone's final frozen features,
    and TF-IDF + logistic regression for texts."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score
    from threadpoolctl import threadpool_limits

    from headstart.backbones import create_backbone
    from headstart.config import BackboneConfig
    from headstart.features import EmbeddingCache, embed_samples

    text = name in TEXT_SETS
    backbone = create_backbone(
        BackboneConfig(name="minilm-l6" if text else "efficientnet_lite0"),
        len(train.classes),
        image_size,
    )
    cache = EmbeddingCache()
    t0 = time.perf_counter()
    x_tr = embed_samples(backbone, train, cache, progress=False).numpy()
    x_te = embed_samples(backbone, test, cache, progress=False).numpy()
    t_embed = time.perf_counter() - t0
    y_tr, y_te = np.asarray(train.labels), np.asarray(test.labels)
    rows = []

    def score(method: str, model: Any, xa: Any, xb: Any, extra: float) -> None:
        t = time.perf_counter()
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = model.fit(xa, y_tr).predict(xb)
        rows.append(
            {
                "method": method,
                "accuracy": float(accuracy_score(y_te, pred)),
                "macro_f1": float(f1_score(y_te, pred, average="macro")),
                "seconds": time.perf_counter() - t + extra,
            }
        )

    score("anchor-lr", LogisticRegression(max_iter=5000), x_tr, x_te, t_embed)
    folds = int(min(5, np.bincount(y_tr).min()))
    if folds >= 2:
        cv = LogisticRegressionCV(Cs=10, cv=folds, max_iter=5000)
        score("anchor-lr-cv", cv, x_tr, x_te, t_embed)
    else:  # one example per class: nothing to cross-validate, the default C
        rows.append({**rows[0], "method": "anchor-lr-cv"})
    if text:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline

        tfidf = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1),
            LogisticRegression(max_iter=5000, C=10.0),
        )
        score("tfidf-lr", tfidf, list(train.texts), list(test.texts), 0.0)
    return rows


def done_keys(path: Path) -> set[tuple[str, int, int, str]]:
    if not path.is_file():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        r = json.loads(line)
        keys.add((r["dataset"], r["budget"], r["seed"], r["method"]))
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=",".join(IMAGE_SETS + TEXT_SETS))
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--methods",
        default="default,anchor," + ",".join(STRATEGIES),
        help="default, anchor (all anchors), and strategy names",
    )
    ap.add_argument("--out", type=Path, default=HERE / "small_data_runs.jsonl")
    ap.add_argument("--report", action="store_true", help="write the tables and stop")
    args = ap.parse_args()
    if args.report:
        report(args.out, HERE / "small_data_results.md")
        return
    import torch

    torch.set_num_threads(2)
    done = done_keys(args.out)
    methods = args.methods.split(",")
    for name in args.datasets.split(","):
        pool, test = pool_and_test(name)
        y = np.asarray(pool.labels)
        for budget in map(int, args.budgets.split(",")):
            for seed in range(args.seeds):
                train = pool.subset(draw(y, budget, seed))
                base = {"dataset": name, "budget": budget, "seed": seed}
                for method in methods:
                    if method == "setfit" and name not in TEXT_SETS:
                        continue
                    todo = ANCHORS if method == "anchor" else (method,)
                    if all((name, budget, seed, m) in done for m in todo):
                        continue
                    if method == "anchor":
                        size = 64 if name not in TEXT_SETS else None  # what default fit picks
                        rows = run_anchors(name, train, test, size)
                    else:
                        strategy = None if method == "default" else method
                        rows = [{"method": method, **run_fit(strategy, train, test, seed)}]
                    with args.out.open("a") as f:
                        for r in rows:
                            f.write(json.dumps({**base, **r}) + "\n")
                            done.add((name, budget, seed, r["method"]))
                            print(
                                f"{name:24s} {budget:3d} seed {seed} {r['method']:14s} "
                                f"acc {r['accuracy']:.4f} ({r['seconds']:.1f} s)"
                                + (f" -> {r['chosen']}" if r.get("chosen") else ""),
                                flush=True,
                            )


def report(runs: Path, out: Path) -> None:
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    datasets = [d for d in IMAGE_SETS + TEXT_SETS if any(r["dataset"] == d for r in rows)]
    methods = ["default", "anchor-lr", "anchor-lr-cv", "tfidf-lr", *STRATEGIES]
    lines = [
        "# Small-data benchmark",
        "",
        "`python benchmarks/bench_small_data.py` (2 CPU cores). Test accuracy, mean ± standard "
        "deviation over seeds (each seed draws its own labelled examples from the pool); "
        "`n` = seeds run. The default is `headstart fit` with no options (`--strategy "
        "auto`); the anchors are scikit-learn logistic regressions on the same backbone's "
        "final frozen features (EfficientNet-Lite0 at the 64 px the default picks for these "
        "28 px and 8 px images; all-MiniLM-L6-v2 at 256 tokens for texts).",
        "",
    ]
    summary: dict[int, list[float]] = {}
    for d in datasets:
        lines += [f"## {d}", "", "| method | " + " | ".join(f"{b}/class" for b in BUDGETS) + " |"]
        lines.append("|---|" + "---|" * len(BUDGETS))
        for m in methods:
            cells = []
            for b in BUDGETS:
                acc = [
                    r["accuracy"]
                    for r in rows
                    if (r["dataset"], r["method"], r["budget"]) == (d, m, b)
                ]
                cells.append(
                    f"{np.mean(acc):.3f} ± {np.std(acc):.3f} (n={len(acc)})" if acc else "—"
                )
            if any(c != "—" for c in cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        chosen = [r.get("chosen") for r in rows if r["dataset"] == d and r["method"] == "default"]
        lines += [
            "",
            f"auto chose: {dict(Counter(c for c in chosen if c))}",
            "",
        ]
        for b in BUDGETS:
            gap = []
            for s in range(10):
                got = {
                    r["method"]: r["accuracy"]
                    for r in rows
                    if (r["dataset"], r["budget"], r["seed"]) == (d, b, s)
                }
                if "default" in got and "anchor-lr" in got:
                    gap.append(got["default"] - max(got["anchor-lr"], got.get("anchor-lr-cv", 0)))
            if gap:
                summary.setdefault(b, []).append(float(np.mean(gap)))
    lines += [
        "## Seconds per run (mean over budgets and seeds; the anchors' include embedding "
        "the labelled examples and, the first time, the test set)",
        "",
        "| dataset | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for d in datasets:
        cells = []
        for m in methods:
            sec = [r["seconds"] for r in rows if (r["dataset"], r["method"]) == (d, m)]
            cells.append(f"{np.mean(sec):.1f}" if sec else "—")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Default minus the better anchor (points), averaged over datasets",
        "",
        "| budget | mean gain | per dataset |",
        "|---|---|---|",
    ]
    for b in BUDGETS:
        if b in summary:
            per = ", ".join(f"{100 * g:+.1f}" for g in summary[b])
            lines.append(f"| {b}/class | {100 * np.mean(summary[b]):+.1f} | {per} |")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
