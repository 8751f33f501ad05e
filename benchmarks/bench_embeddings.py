"""Word embeddings as transfer: pretrained GloVe, domain-trained vectors and subword
vectors against TF-IDF and a sentence encoder, at 8, 32 and 128 labels per class.

Datasets: drug-reviews (sentiment of drugs.com reviews: medical vocabulary, drug names;
3 classes, of which `neutral` has only 90 reviews in all, so at 128 per class it has every
one the pool holds) and bbc-news (5 topics). Per dataset one fixed stratified test set
(25% of drug-reviews, 600 BBC articles) and a pool of the rest; each seed draws its
labelled examples from the pool. The domain corpus for `embed-train` is the pool's texts
(unlabelled; the test texts are never in it), trained once per dataset.

Methods, each on the same labelled examples per seed:

- ``tfidf-lr``: TF-IDF (1-2 grams, sublinear tf) + logistic regression (C = 10);
- ``glove-mean-unk``, ``glove-sif-unk``: GloVe 6B-50d, mean / SIF pooling, every OOV word one
  shared vector (the baseline the literature warns about); ``glove-sif-skip``: SIF, OOV
  words dropped (the default for plain pretrained vectors); ``glove-max-skip``: max pooling;
- ``domain-w2v``: vectors from ``headstart embed-train POOL --init glove-6b-50d`` (word2vec),
  SIF, ``--oov domain``;
- ``subword-ft``: vectors from ``embed-train --model fasttext``, SIF, ``--oov subword``;
- ``minilm-lp``: all-MiniLM-L6-v2 linear probe;
- ``minilm-ft`` and ``minilm-ft-tokens``: MiniLM fine-tuned (``--strategy finetune``),
  without and with ``--add-domain-tokens 20``.

Every headstart method is ``headstart fit --strategy linear-probe`` (or finetune) with
the backbone options above. Rows go to a JSON-lines file as they finish (``--runs``); a
row already there is not run again. ``--report`` writes ``benchmarks/embeddings_results.md``.

    python benchmarks/bench_embeddings.py                      # everything, 3 seeds
    python benchmarks/bench_embeddings.py --methods tfidf-lr,glove-sif-skip --seeds 1
    python benchmarks/bench_embeddings.py --report

The MiniLM fine-tuning rows cost about 5 minutes each on 2 cores; they were run at 8 per
class only, into ``embeddings_runs_ft.jsonl`` (``--budgets 8 --methods
minilm-ft,minilm-ft-tokens --runs benchmarks/embeddings_runs_ft.jsonl``); the report reads
every ``embeddings_runs*.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
DATASETS = ("drug-reviews", "bbc-news")
BUDGETS = (8, 32, 128)
VECTORS = Path(tempfile.gettempdir()) / "headstart-bench-vectors"
#: method -> (backbone, options); the backbone "w2v"/"fasttext" is the domain-trained one
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "glove-mean-unk": ("glove-6b-50d", {"pooling": "mean", "oov": "unk"}),
    "glove-sif-unk": ("glove-6b-50d", {"pooling": "sif", "oov": "unk"}),
    "glove-sif-skip": ("glove-6b-50d", {"pooling": "sif", "oov": "skip"}),
    "glove-max-skip": ("glove-6b-50d", {"pooling": "max", "oov": "skip"}),
    "domain-w2v": ("word2vec", {"pooling": "sif", "oov": "domain"}),
    "subword-ft": ("fasttext", {"pooling": "sif", "oov": "subword"}),
    "minilm-lp": ("minilm-l6", {}),
    "minilm-ft": ("minilm-l6", {"strategy": "finetune"}),
    "minilm-ft-tokens": ("minilm-l6", {"strategy": "finetune", "add_domain_tokens": 20}),
}
ALL = ("tfidf-lr", *METHODS)


def pool_and_test(name: str) -> tuple[Any, Any]:
    from headstart.data import stratified_split
    from headstart.data.text import load_bundled_text

    everything = load_bundled_text(name, "all")
    y = np.asarray(everything.labels)
    frac = 600 / len(y) if name == "bbc-news" else 0.25
    tr, _, te = stratified_split(y, 0.0, frac, seed=0)
    return everything.subset(tr), everything.subset(te)


def draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` of each class (all of a class that has fewer)."""
    rng = np.random.default_rng(1000 + seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(picks))


def domain_vectors(dataset: str, model: str, pool: Any, test: Any) -> tuple[Path, dict]:
    """``embed-train`` on the pool's texts (once per dataset and model), and the OOV token
    rate of the test texts before and after."""
    from rich.console import Console

    from headstart.backbones import create_backbone
    from headstart.config import BackboneConfig, EmbedTrainConfig
    from headstart.workflows.embed_train import embed_train

    out = VECTORS / f"{dataset}-{model}"
    stats_file = out / "bench.json"
    if stats_file.is_file():
        return out, json.loads(stats_file.read_text())
    t0 = time.perf_counter()
    cfg = EmbedTrainConfig(init="glove-6b-50d", model=model)
    embed_train(list(pool.texts), out, cfg, console=Console(quiet=True), progress=False)
    seconds = time.perf_counter() - t0
    before = create_backbone(BackboneConfig(name="glove-6b-50d"), 2)
    after = create_backbone(BackboneConfig(name=str(out)), 2)
    stats = {
        "seconds": seconds,
        "oov_before": before.vocabulary_report(list(test.texts))["oov_token_rate"],
        "oov_after": after.vocabulary_report(list(test.texts))["oov_token_rate"],
        "top_oov_before": before.vocabulary_report(list(test.texts))["top_oov"][:10],
    }
    stats_file.write_text(json.dumps(stats))
    return out, stats


def run_fit(backbone: str, opts: dict[str, Any], train: Any, test: Any, seed: int) -> dict:
    from rich.console import Console

    from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
    from headstart.data.loading import prepare_data
    from headstart.workflows.fit import fit

    opts = dict(opts)
    strategy = opts.pop("strategy", "linear-probe")
    cfg = RunConfig(data=DataConfig(source="arrays", test_fraction=0.0, split_seed=seed))
    cfg.backbone = BackboneConfig(name=backbone, **opts)
    cfg.strategy = StrategyConfig(name=strategy)
    cfg.train = TrainConfig(seed=seed)
    quiet = Console(quiet=True)
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
        "added_tokens": len(m.get("vocabulary", {}).get("added_tokens", []) or []),
    }


def run_tfidf(train: Any, test: Any) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1),
        LogisticRegression(max_iter=5000, C=10.0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = model.fit(list(train.texts), np.asarray(train.labels)).predict(list(test.texts))
    y = np.asarray(test.labels)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs", type=Path, default=HERE / "embeddings_runs.jsonl")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        report(args.runs, HERE / "embeddings_results.md")
        return
    done = set()
    if args.runs.is_file():
        for line in args.runs.read_text().splitlines():
            r = json.loads(line)
            done.add((r["dataset"], r["budget"], r["seed"], r["method"]))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for dataset in args.datasets.split(","):
        pool, test = pool_and_test(dataset)
        paths: dict[str, Path] = {}
        for model in ("word2vec", "fasttext"):
            if any(METHODS.get(m, ("",))[0] == model for m in methods):
                paths[model], stats = domain_vectors(dataset, model, pool, test)
                key = (dataset, 0, 0, f"embed-train-{model}")
                if key not in done:
                    _append(
                        args.runs,
                        {
                            "dataset": dataset,
                            "budget": 0,
                            "seed": 0,
                            "method": f"embed-train-{model}",
                            **stats,
                        },
                    )
                    done.add(key)
        for budget in map(int, args.budgets.split(",")):
            for seed in range(args.seeds):
                idx = draw(np.asarray(pool.labels), budget, seed)
                train = pool.subset(idx)
                for method in methods:
                    key = (dataset, budget, seed, method)
                    if key in done:
                        continue
                    if method == "tfidf-lr":
                        row = run_tfidf(train, test)
                    else:
                        backbone, opts = METHODS[method]
                        backbone = str(paths.get(backbone, backbone))
                        row = run_fit(backbone, opts, train, test, seed)
                    row = {
                        "dataset": dataset,
                        "budget": budget,
                        "seed": seed,
                        "method": method,
                        "n_train": len(idx),
                        **row,
                    }
                    _append(args.runs, row)
                    done.add(key)
                    print(json.dumps(row), flush=True)


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def report(runs: Path, out: Path) -> None:
    files = sorted({runs, *runs.parent.glob("embeddings_runs*.jsonl")})
    rows = [json.loads(line) for f in files if f.is_file() for line in f.read_text().splitlines()]
    lines = [
        "# Word embeddings as transfer",
        "",
        "`python benchmarks/bench_embeddings.py` (2 CPU cores). Test accuracy and macro-F1, "
        "mean ± standard deviation over seeds (each seed draws its own labelled examples); "
        "`n` = seeds. Every headstart row is `headstart fit --strategy linear-probe` unless it "
        "says finetune. drug-reviews: 3 classes, fixed test set of 245 reviews; `neutral` has "
        "68 reviews in the pool, so at 128 per class it has those 68. bbc-news: 5 classes, "
        "600 test articles.",
        "",
    ]
    for d in DATASETS:
        drows = [r for r in rows if r["dataset"] == d]
        if not drows:
            continue
        lines += [f"## {d}", ""]
        for metric in ("accuracy", "macro_f1"):
            lines += [
                f"{metric}:",
                "",
                "| method | " + " | ".join(f"{b}/class" for b in BUDGETS) + " |",
                "|---|" + "---|" * len(BUDGETS),
            ]
            for m in ALL:
                cells = []
                for b in BUDGETS:
                    v = [r[metric] for r in drows if (r["method"], r["budget"]) == (m, b)]
                    cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f} (n={len(v)})" if v else "—")
                if any(c != "—" for c in cells):
                    lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
        for r in drows:
            if r["method"].startswith("embed-train"):
                lines.append(
                    f"- `{r['method']}`: {r['seconds']:.1f} s; OOV token rate of the test texts "
                    f"{r['oov_before']:.2%} (GloVe) -> {r['oov_after']:.2%}; most frequent OOV "
                    f"words before: {', '.join(w for w, _ in r['top_oov_before'])}"
                )
        lines.append("")
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
