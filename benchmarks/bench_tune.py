"""`headstart tune` against the default config, what pruning saves, what several workers
buy, and data-parallel training against one process.

Four parts, each a set of separate ``headstart`` processes:

- ``search``: on Fashion-MNIST (50 per class, EfficientNet-Lite0 at 64 px) and BBC News
  (20 per class, MiniLM-L6, 128 tokens), ``headstart fit`` with the default config and
  ``headstart tune --trials 20`` (TPE, median pruner) for each seed: the best validation
  macro-F1 and the test accuracy / macro-F1 of each (tune scores the test split once, for
  its best trial);
- ``pruning``: the same searches with ``--pruner none``: epochs trained and the best
  validation score, against the pruned searches of ``search``;
- ``throughput``: trials per hour of ``--workers 2`` (one thread each) against one worker
  on two threads, on one fixed space (fine-tuning, 3 epochs, learning rate and weight decay
  searched) so that every trial costs about the same;
- ``ddp``: ``torchrun --nproc-per-node 2 -m headstart fit`` (gloo, batch 16 per process)
  against one process at batch 32: test accuracy, macro-F1 and training images per second,
  with the default augmentation (each process draws its own crops and flips, so the two
  runs see different random views) and without augmentation (the same computation, up to
  the order of floating-point sums).

    python benchmarks/bench_tune.py [--parts search,pruning,throughput,ddp]
        [--seeds 0,1,2] [--datasets fashion,bbc] [--trials 20] [--out runs/bench_tune]

Every finished cell is a line of ``benchmarks/tune_runs.jsonl`` (run the command again to go
on where it stopped); ``benchmarks/tune_results.md`` is written from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATASETS = {
    "fashion": (
        "Fashion-MNIST, 50 per class, EfficientNet-Lite0 64 px",
        ["fashion-mnist", "--per-class", "50", "--image-size", "64", "--max-test", "2000",
         "--backbone", "efficientnet_lite0"],
    ),
    "bbc": (
        "BBC News, 20 per class, MiniLM-L6, 128 tokens",
        ["bbc-news", "--per-class", "20", "--backbone", "minilm-l6", "--max-length", "128"],
    ),
}  # fmt: skip
#: the throughput part's space: one strategy and a fixed epoch count, so trials cost alike
THROUGHPUT_SPACE = (
    "strategy: {choices: [finetune]}\n"
    "epochs: {choices: [3]}\n"
    "lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
    "weight_decay: {low: 1.0e-4, high: 0.1, log: true}\n"
)
THROUGHPUT_TRIALS = 6
DDP_EPOCHS = 3
DDP_AUGMENT = ("light", "none")  # the default augmentation, and none
HERE = Path(__file__).parent
CORES = os.cpu_count() or 1


def headstart(args: list[str], log: Path, threads: int, launcher: list[str] | None = None) -> float:
    """Run ``python [launcher] -m headstart ARGS`` on ``threads`` threads; its seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.call(
            [sys.executable, *(launcher or []), "-m", "headstart", *args],
            stdout=f, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    if code:
        raise RuntimeError(f"headstart {' '.join(args[:2])} failed ({code}); see {log}")
    return time.perf_counter() - t0


def fresh(out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def run_default(key: str, seed: int, root: Path) -> dict:
    out = fresh(root / key / f"default-{seed}")
    seconds = headstart(
        ["fit", *DATASETS[key][1], "--seed", str(seed), "--out", str(out), "--no-progress"],
        out.with_suffix(".log"), CORES,
    )  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    return {
        # none when the default held no validation split out (few labels: all train)
        "validation_macro_f1": (m.get("validation") or {}).get("macro_f1"),
        "test_accuracy": m["test"]["accuracy"],
        "test_macro_f1": m["test"]["macro_f1"],
        "strategy": m["strategy"],
        "validation_policy": m.get("policy", {}).get("validation"),
        "seconds": seconds,
    }


#: the plain baselines' data and backbones, as the command lines above give them
PLAIN = {
    "fashion": {"source": "fashion-mnist", "per_class": 50, "image_size": 64, "max_test": 2000,
                "backbone": "efficientnet_lite0"},
    "bbc": {"source": "bbc-news", "per_class": 20, "max_length": 128, "backbone": "minilm-l6"},
}  # fmt: skip


PLAIN_NAMES = {
    "lr": "logistic regression, default C",
    "lr_cv": "logistic regression, C by 5-fold CV",
    "tfidf_lr": "TF-IDF + logistic regression (C 10)",
}


def run_plain(key: str) -> dict:
    """The plainest strong baselines on the same splits: scikit-learn's logistic regression
    (default C, and C by 5-fold cross-validation) on the backbone's frozen pooled features
    of the training split, and TF-IDF + logistic regression for texts. Deterministic: one
    cell per dataset."""
    import warnings

    from rich.console import Console
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    from headstart.backbones import create_backbone
    from headstart.config import BackboneConfig, DataConfig
    from headstart.data.loading import prepare_data
    from headstart.features import EmbeddingCache, embed_samples

    spec = dict(PLAIN[key])
    backbone_name = spec.pop("backbone")
    cfg = DataConfig(**spec)  # type: ignore[arg-type]
    data = prepare_data(cfg, Console(quiet=True), progress=False)
    backbone = create_backbone(BackboneConfig(name=backbone_name), len(data.train.classes),
                               cfg.image_size, cfg.max_length)  # fmt: skip
    cache = EmbeddingCache()
    x_tr = embed_samples(backbone, data.train, cache, progress=False).numpy()
    x_te = embed_samples(backbone, data.test, cache, progress=False).numpy()
    y_tr, y_te = np.asarray(data.train.labels), np.asarray(data.test.labels)
    models: dict[str, tuple] = {
        "lr": (LogisticRegression(max_iter=5000), x_tr, x_te),
        "lr_cv": (LogisticRegressionCV(Cs=10, cv=5, max_iter=5000), x_tr, x_te),
    }
    if hasattr(data.train, "texts"):
        tfidf = make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)),
                              LogisticRegression(max_iter=5000, C=10.0))  # fmt: skip
        models["tfidf_lr"] = (tfidf, list(data.train.texts), list(data.test.texts))
    row: dict = {"train_examples": len(y_tr), "test_examples": len(y_te)}
    for name, (model, xa, xb) in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = model.fit(xa, y_tr).predict(xb)
        row[f"{name}_test_accuracy"] = float(accuracy_score(y_te, pred))
        row[f"{name}_test_macro_f1"] = float(f1_score(y_te, pred, average="macro"))
    return row


def run_search(key: str, seed: int, root: Path, trials: int, pruner: str) -> dict:
    out = fresh(root / key / f"tune-{pruner}-{seed}")
    seconds = headstart(
        ["tune", *DATASETS[key][1], "--trials", str(trials), "--seed", str(seed), "--pruner",
         pruner, "--out", str(out), "--no-progress"],
        out.with_suffix(".log"), CORES,
    )  # fmt: skip
    doc = json.loads((out / "tune.json").read_text())
    best = doc["best"]
    return {
        "validation_macro_f1": best["validation_macro_f1"],
        "test_accuracy": best["test"]["accuracy"],
        "test_macro_f1": best["test"]["macro_f1"],
        "best_params": best["params"],
        "epochs_trained": doc["epochs_trained"],
        "counts": doc["counts"],
        "seconds": seconds,
    }


def run_throughput(workers: int, root: Path) -> dict:
    out = fresh(root / "throughput" / f"workers-{workers}")
    space = root / "throughput" / "space.yaml"
    space.write_text(THROUGHPUT_SPACE)
    threads = CORES if workers == 1 else max(1, CORES // workers)
    seconds = headstart(
        ["tune", *DATASETS["fashion"][1], "--trials", str(THROUGHPUT_TRIALS), "--space",
         str(space), "--pruner", "none", "--workers", str(workers), "--out", str(out),
         "--no-progress"],
        out.with_suffix(".log"), threads if workers == 1 else CORES,
    )  # fmt: skip
    doc = json.loads((out / "tune.json").read_text())
    done = doc["counts"]["COMPLETE"]
    return {
        "workers": workers,
        "threads_each": threads,
        "trials": done,
        "seconds": seconds,
        "trials_per_hour": done / seconds * 3600,
        "best_validation_macro_f1": doc["best"]["validation_macro_f1"],
    }


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run_ddp(processes: int, seed: int, root: Path, augment: str) -> dict:
    out = fresh(root / "ddp" / f"processes-{processes}-{augment}-{seed}")
    batch = 32 // processes
    args = ["fit", *DATASETS["fashion"][1], "--strategy", "finetune", "--epochs",
            str(DDP_EPOCHS), "--patience", str(DDP_EPOCHS), "--batch-size", str(batch),
            "--augment", augment, "--seed", str(seed), "--out", str(out),
            "--no-progress"]  # fmt: skip
    launcher = None
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                    "--master-addr", "127.0.0.1", "--master-port", _free_port()]  # fmt: skip
    seconds = headstart(args, out.with_suffix(".log"), max(1, CORES // processes), launcher)
    m = json.loads((out / "metrics.json").read_text())
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    epochs = [h for h in history if h.get("phase") == "train"]
    found = re.search(r"split train (\d+)", out.with_suffix(".log").read_text())
    n_train = int(found.group(1)) if found else 0
    epoch_seconds = float(np.mean([h["seconds"] for h in epochs]))
    return {
        "processes": processes,
        "augment": augment,
        "batch_per_process": batch,
        "effective_batch_size": m["params"]["train"].get("effective_batch_size", batch),
        "test_accuracy": m["test"]["accuracy"],
        "test_macro_f1": m["test"]["macro_f1"],
        "epochs": len(epochs),
        "train_images": n_train,
        "train_seconds": m["train_seconds"],
        "epoch_seconds": epoch_seconds,
        "images_per_second": n_train / epoch_seconds if n_train else None,
        "seconds": seconds,
    }


# -- tables --------------------------------------------------------------------------------------
def _ms(values: list[float], fmt: str = ".4f") -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    return f"{np.mean(v):{fmt}} ± {np.std(v):{fmt}}" if len(v) > 1 else f"{v[0]:{fmt}}"


def _pick(rows: list[dict], **where: object) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def write_tables(rows: list[dict], path: Path, trials: int) -> None:
    lines = [
        "# Tuning, pruning, workers and data-parallel training",
        "",
        "`python benchmarks/bench_tune.py` (2 CPU cores; mean ± std over the seeds listed; "
        "each cell a separate `headstart` process). Tuned: `headstart tune` with "
        f"`--trials {trials}` on the default space (TPE seeded by the seed, every trial at "
        "that seed); the test split is scored once, for the best trial. Default: "
        "`headstart fit` with the default config at that seed.",
    ]
    for key, (title, _) in DATASETS.items():
        default = _pick(rows, part="search", dataset=key, variant="default")
        tuned = _pick(rows, part="search", dataset=key, variant="tune-median")
        unpruned = _pick(rows, part="pruning", dataset=key, variant="tune-none")
        if not (default or tuned or unpruned):
            continue
        lines += ["", f"## {title}", "",
                  "| config | seeds | best validation macro-F1 | test accuracy | test macro-F1 "
                  "| epochs trained | pruned trials | wall s |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, rs in (("default", default), ("tuned, median pruner", tuned),
                         ("tuned, no pruner", unpruned)):  # fmt: skip
            if not rs:
                continue
            lines.append(
                f"| {name} | {len(rs)} | {_ms([r['validation_macro_f1'] for r in rs])} | "
                f"{_ms([r['test_accuracy'] for r in rs])} | "
                f"{_ms([r['test_macro_f1'] for r in rs])} | "
                f"{_ms([r.get('epochs_trained') for r in rs], '.0f')} | "
                f"{_ms([(r.get('counts') or {}).get('PRUNED') for r in rs], '.1f')} | "
                f"{_ms([r['seconds'] for r in rs], '.0f')} |"
            )
        for plain in _pick(rows, part="search", dataset=key, variant="plain"):
            for short, name in PLAIN_NAMES.items():
                if f"{short}_test_accuracy" in plain:
                    lines.append(
                        f"| plain: {name} | - | - | {plain[f'{short}_test_accuracy']:.4f} | "
                        f"{plain[f'{short}_test_macro_f1']:.4f} | - | - | - |"
                    )
        lines += ["", "Plain rows: scikit-learn on the frozen pooled features (or TF-IDF) of "
                  "the default's training split (for BBC News every labelled article: at 20 "
                  "per class the default holds no validation split out, while the trials "
                  "hold one out to score on), scored on the same test split; deterministic, "
                  "one run.", "",
                  "Per seed (test accuracy; the best trial's parameters):", ""]  # fmt: skip
        for r in sorted(default + tuned + unpruned, key=lambda r: (r["seed"], r["variant"])):
            extra = f" {r['best_params']}" if "best_params" in r else f" ({r['strategy']})"
            val = r["validation_macro_f1"]
            lines.append(
                f"- seed {r['seed']} {r['variant']}: validation "
                f"{'-' if val is None else f'{val:.4f}'}, test {r['test_accuracy']:.4f}{extra}"
            )
    through = _pick(rows, part="throughput")
    if through:
        lines += ["", "## Throughput: workers on one study (Fashion-MNIST, fixed space)", "",
                  f"{THROUGHPUT_TRIALS} trials of fine-tuning for 3 epochs (learning rate and "
                  "weight decay searched, no pruner), one SQLite study.", "",
                  "| workers | threads each | trials | wall s | trials per hour |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in sorted(through, key=lambda r: r["workers"]):
            lines.append(f"| {r['workers']} | {r['threads_each']} | {r['trials']} | "
                         f"{r['seconds']:.0f} | {r['trials_per_hour']:.1f} |")  # fmt: skip
    ddp = [r for r in _pick(rows, part="ddp") if "augment" in r]
    if ddp:
        lines += ["", "## Data-parallel fit (Fashion-MNIST, fine-tuning, global batch 32)", "",
                  f"{DDP_EPOCHS} epochs; `torchrun` with gloo, each process on one thread, "
                  "against one process on two threads. images/s: training images per "
                  "epoch-second (an epoch's training and validation passes). With "
                  "augmentation each process draws its own crops and flips, so the runs "
                  "differ by their random views; without, only by the order of sums.", "",
                  "| augmentation | processes | batch per process | seeds | test accuracy | "
                  "test macro-F1 | train s | images/s |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        gaps = []
        for augment in DDP_AUGMENT:
            for n in (1, 2):
                rs = _pick(ddp, processes=n, augment=augment)
                if not rs:
                    continue
                lines.append(
                    f"| {augment} | {n} | {rs[0]['batch_per_process']} | {len(rs)} | "
                    f"{_ms([r['test_accuracy'] for r in rs])} | "
                    f"{_ms([r['test_macro_f1'] for r in rs])} | "
                    f"{_ms([r['train_seconds'] for r in rs], '.0f')} | "
                    f"{_ms([r['images_per_second'] for r in rs], '.1f')} |"
                )
            pairs = [(a, b) for a in _pick(ddp, processes=1, augment=augment)
                     for b in _pick(ddp, processes=2, augment=augment)
                     if a["seed"] == b["seed"]]  # fmt: skip
            if pairs:
                diffs = ", ".join(
                    f"seed {a['seed']} {100 * (b['test_accuracy'] - a['test_accuracy']):+.2f}"
                    for a, b in pairs
                )
                gaps.append(f"augmentation {augment}: {diffs}")
        if gaps:
            lines += ["", "2 processes minus 1, test accuracy in points: " + "; ".join(gaps) + "."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="ddp,throughput,search,pruning")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_tune"))
    ap.add_argument("--results", type=Path, default=HERE / "tune_results.md")
    ap.add_argument("--runs", type=Path, default=HERE / "tune_runs.jsonl")
    args = ap.parse_args()
    rows = []
    if args.runs.is_file():
        rows = [json.loads(x) for x in args.runs.read_text().splitlines()]
    done = {(r["part"], r["dataset"], r["seed"], r["variant"]) for r in rows}
    seeds = [int(s) for s in args.seeds.split(",")]
    keys = args.datasets.split(",")
    parts = args.parts.split(",")
    unknown = set(parts) - {"ddp", "throughput", "search", "pruning"}
    if unknown:
        raise SystemExit(f"unknown part(s) {sorted(unknown)}: ddp, throughput, search, pruning")
    # the quick parts first, then the searches seed by seed (a stopped benchmark leaves
    # whole seeds), then the unpruned searches
    cells: list[tuple[str, str, int, str]] = []
    if "ddp" in parts:
        cells += [("ddp", "fashion", s, f"processes-{n}-{a}") for a in DDP_AUGMENT
                  for s in seeds for n in (1, 2)]  # fmt: skip
    if "throughput" in parts:
        cells += [("throughput", "fashion", 0, f"workers-{n}") for n in (1, 2)]
    if "search" in parts:
        cells += [("search", k, 0, "plain") for k in keys]
        cells += [("search", k, s, v) for s in seeds for k in keys
                  for v in ("default", "tune-median")]  # fmt: skip
    if "pruning" in parts:
        cells += [("pruning", k, s, "tune-none") for s in seeds for k in keys]
    for part, key, seed, variant in cells:
        if (part, key, seed, variant) in done:
            continue
        if part == "ddp":
            _, n, augment = variant.split("-")
            row = run_ddp(int(n), seed, args.out, augment)
        elif part == "throughput":
            row = run_throughput(int(variant.split("-")[1]), args.out)
        elif variant == "default":
            row = run_default(key, seed, args.out)
        elif variant == "plain":
            row = run_plain(key)
        else:
            row = run_search(key, seed, args.out, args.trials, variant.split("-")[1])
        row = {"part": part, "dataset": key, "seed": seed, "variant": variant, **row}
        rows.append(row)
        with args.runs.open("a") as f:
            f.write(json.dumps(row) + "\n")
        write_tables(rows, args.results, args.trials)
        print(f"{part} {key} seed {seed} {variant}: "
              + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in row.items() if k not in ("part", "dataset", "seed",
                                                               "variant", "best_params")),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
