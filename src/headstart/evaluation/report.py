"""Self-contained HTML reports of a fit and of a comparison.

One file, opened offline: figures are drawn with matplotlib and inlined as SVG, image
thumbnails as PNG data URIs; the page has no scripts and loads nothing from anywhere.
Every figure sits in a ``<figure data-figure="NAME">`` so a test (or a reader) can find it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files only

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import FuncFormatter, NullFormatter
from safetensors import safe_open
from sklearn.decomposition import PCA

from headstart.data import ImageSamples, TextSamples
from headstart.evaluation.stats import KEEP_AT_LEAST
from headstart.features.store import LazyEmbeddings
from headstart.storage import atomic_write
from headstart.training.lr_find import LR_FIND_FILE

#: the figures of a fit report, in page order; a comparison adds BUDGET_FIGURES first
FIT_FIGURES = (
    "training-curves",
    "confusion-matrix",
    "per-class-f1",
    "reliability",
    "embedding-map",
    "confident-errors",
)
BUDGET_FIGURES = ("budget-curves", "forgetting")
MAX_MAP_POINTS = 2000
N_ERRORS = 12

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0}figcaption{color:#555;font-size:.85rem;max-width:900px}
figure svg{max-width:100%;height:auto}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}
.card{border:1px solid #ddd;border-radius:4px;padding:.4rem;width:150px;font-size:.75rem}
.card.text{width:320px}.card img{width:96px;height:96px;image-rendering:pixelated}
.verdict{font-weight:600}.helps{color:#1a7f37}.negative{color:#c62828}.none{color:#555}
.note{color:#555;font-size:.85rem}
"""


# -- inputs ----------------------------------------------------------------------------------
#: a disk-backed matrix's map is fitted on at most this many rows, drawn at random
MAP_FIT_ROWS = 10_000


def embedding_map(emb: Any) -> np.ndarray:
    """A 2-D map of embeddings (N, D) -> (N, 2): their first two principal components.

    A disk-backed matrix (:class:`~headstart.features.store.LazyEmbeddings`) is never read
    whole: the components are fitted on a seeded sample of :data:`MAP_FIT_ROWS` rows and
    every row projected batch by batch."""
    if isinstance(emb, LazyEmbeddings):
        return _streamed_map(emb)
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or len(emb) < 3 or emb.shape[1] < 2:
        return np.zeros((len(emb), 2))
    return PCA(n_components=2, random_state=0).fit_transform(emb)


def _streamed_map(emb: LazyEmbeddings) -> np.ndarray:
    n = len(emb)
    if n < 3 or emb.dim < 2:
        return np.zeros((n, 2))
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, min(n, MAP_FIT_ROWS), replace=False))
    pca = PCA(n_components=2, random_state=0).fit(emb.take(sample).double().numpy())
    out = np.empty((n, 2))
    lo = 0
    for batch in emb.batches():
        out[lo : lo + len(batch)] = pca.transform(batch.double().numpy())
        lo += len(batch)
    return out


def read_history(path: Path) -> list[dict[str, Any]]:
    """The epochs of ``history.jsonl`` (a line torn by a crash is skipped)."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_predictions(run_dir: Path) -> dict[str, Any]:
    """The arrays ``predictions.safetensors`` holds, and its metadata."""
    with safe_open(str(run_dir / "predictions.safetensors"), framework="pt") as f:
        out: dict[str, Any] = {k: f.get_tensor(k).numpy() for k in f.keys()}  # noqa: SIM118
        meta = f.metadata() or {}
    out["split"] = meta.get("split", "test")
    out["temperature"] = float(meta.get("temperature", "1.0"))
    return out


# -- drawing ---------------------------------------------------------------------------------
def _svg(draw: Callable[[Any], None], size: tuple[float, float], salt: str) -> str:
    """Draw on a fresh figure and return it as inline SVG (ids salted to stay unique)."""
    # text.parse_math off: a class name with '$' signs is text, not math markup
    style: dict[str, Any] = {"svg.hashsalt": salt, "svg.fonttype": "none", "font.size": 9}
    style["text.parse_math"] = False
    with plt.rc_context(style):  # type: ignore[arg-type]
        fig = plt.figure(figsize=size)
        try:
            draw(fig)
            fig.tight_layout()
            buf = io.StringIO()
            fig.savefig(buf, format="svg")
        finally:
            plt.close(fig)
    text = buf.getvalue()
    # the RDF metadata block names URLs of vocabularies: drop it (namespaces stay w3.org)
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)


def _figure(name: str, title: str, body: str, caption: str) -> str:
    return (
        f'<figure data-figure="{name}"><h3>{html.escape(title)}</h3>{body}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def training_curves_svg(history: Sequence[dict[str, Any]], salt: str = "curves") -> str:
    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        phases = list(dict.fromkeys(str(h.get("phase", "train")) for h in history))
        step = 0
        for phase in phases:
            rows = [h for h in history if str(h.get("phase", "train")) == phase]
            x = np.arange(step, step + len(rows)) + 1
            step += len(rows)
            for key, ax, style in (
                ("train_loss", ax1, "-"),
                ("val_loss", ax1, "--"),
                ("val_accuracy", ax2, "-"),
                ("val_macro_f1", ax2, "--"),
            ):
                y = [_f(h.get(key)) for h in rows]
                if any(np.isfinite(y)):
                    ax.plot(x, y, style, marker="o", ms=3, label=f"{phase} {key}")
        for ax, ylabel in ((ax1, "loss"), (ax2, "validation score")):
            ax.set_xlabel("epoch (all phases in order)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no epochs (a fitted head)", ha="center", transform=ax.transAxes)

    return _svg(draw, (9, 3.2), salt)


def lr_find_svg(test: dict[str, Any], salt: str = "lrfind") -> str:
    """The learning-rate range test: loss (raw and smoothed) against the rate, on a log
    axis, with the suggested rates marked."""

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        lrs, smoothed = np.asarray(test["lrs"]), np.asarray(test["smoothed"], dtype=float)
        ax.plot(lrs, test["losses"], color="0.75", lw=0.8, label="loss")
        ax.plot(lrs, smoothed, color="C0", lw=1.6, label="smoothed")
        for key, color in (("valley", "C2"), ("steepest", "C3")):
            chosen = " (suggested)" if test["method"] == key else ""
            ax.axvline(
                test[key], color=color, ls="--", lw=1, label=f"{key} {test[key]:.2g}{chosen}"
            )
        finite = smoothed[np.isfinite(smoothed)]
        if finite.size:  # the divergence at the end would flatten the rest
            low = float(finite.min())
            raw = np.asarray(test["losses"], dtype=float)
            bottom = min(low, float(np.nanmin(raw[np.isfinite(raw)]))) * 0.95
            ax.set_ylim(bottom, min(float(finite.max()), 4 * low) * 1.1 + 1e-9)
        ax.set_xscale("log")
        # plain tick labels: the report draws text without math markup
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("learning rate of the head (the body's groups at their fraction)")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)

    return _svg(draw, (6.5, 3.4), salt)


def lr_find_figure(test: dict[str, Any], salt: str = "") -> str:
    return _figure(
        "lr-find",
        "Learning-rate range test",
        lr_find_svg(test, salt + "lrfind"),
        f"{test['steps']} optimiser steps at geometrically growing rates from the strategy's "
        f"start state ({html.escape(str(test['stopped']))}); the weights were put back "
        f"afterwards. Suggested rate ({test['method']}): <b>{test['suggestion']:.3g}</b>.",
    )


def confusion_svg(metrics: dict[str, Any], salt: str = "cm") -> str:
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    classes = list(metrics["classes"])
    k = len(classes)

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), [_short(c) for c in classes], rotation=45, ha="right")
        ax.set_yticks(range(k), [_short(c) for c in classes])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        color = "white" if rows[i, j] > 0.6 else "black"
                        ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                                fontsize=7, color=color)  # fmt: skip

    side = min(9.0, 2.5 + 0.45 * k)
    return _svg(draw, (side, side * 0.85), salt)


def per_class_f1_svg(metrics: dict[str, Any], salt: str = "f1") -> str:
    per = metrics["per_class"]
    names = list(per)

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        f1 = [per[c]["f1"] for c in names]
        y = np.arange(len(names))
        ax.barh(y, f1, color="#4c72b0")
        ax.set_yticks(y, [_short(c) for c in names])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("F1")
        ax.axvline(metrics["macro_f1"], color="#c44e52", ls="--", label="macro-F1")
        ax.legend(fontsize=7, loc="lower right")

    return _svg(draw, (6, 1.2 + 0.28 * len(names)), salt)


def reliability_svg(cal: dict[str, Any], temperature: float, salt: str = "rel") -> str:
    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="#999", ls=":", label="perfect calibration")
        for key, label, color in (
            ("reliability_before", f"before (ECE {cal['ece_before']:.3f})", "#c44e52"),
            ("reliability_after", f"T={temperature:.2f} (ECE {cal['ece_after']:.3f})", "#4c72b0"),
        ):
            r = cal[key]
            count = np.asarray(r["count"])
            keep = count > 0
            conf = np.asarray(r["confidence"])[keep]
            acc = np.asarray(r["accuracy"])[keep]
            ax.plot(conf, acc, marker="o", ms=4, color=color, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (mean max probability in the bin)")
        ax.set_ylabel("accuracy in the bin")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)

    return _svg(draw, (4.6, 4.2), salt)


def map_svg(points: np.ndarray, labels: np.ndarray, classes: list[str], salt: str = "map") -> str:
    points, labels = np.asarray(points), np.asarray(labels)
    if len(points) > MAX_MAP_POINTS:  # a stratified-enough random subset
        keep = np.random.default_rng(0).choice(len(points), MAX_MAP_POINTS, replace=False)
        points, labels = points[keep], labels[keep]

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
        for i, c in enumerate(classes):
            m = labels == i
            if m.any():
                ax.scatter(points[m, 0], points[m, 1], s=6, color=cmap(i % cmap.N),
                           label=_short(c), alpha=0.7, linewidths=0)  # fmt: skip
        ax.set_xlabel("principal component 1")
        ax.set_ylabel("principal component 2")
        if len(classes) <= 20:
            ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))

    return _svg(draw, (7, 4.8), salt)


def strategy_colors(names: Sequence[str]) -> dict[str, Any]:
    """One colour per strategy, the same in every figure of a report."""
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def budget_curves_svg(summary: dict[str, Any], salt: str = "budget") -> str:
    budgets = sorted(int(b) for b in summary["budgets"])
    names = list(
        dict.fromkeys(s for b in budgets for s in summary["budgets"][str(b)]["strategies"])
    )
    colors = strategy_colors(names)

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, 2)
        panels = ((axes[0], "accuracy", "accuracy"), (axes[1], "macro_f1", "macro-F1"))
        for ax, key, label in panels:
            for name in names:
                xs, mean, lo, hi = [], [], [], []
                for b in budgets:
                    s = summary["budgets"][str(b)]["strategies"].get(name)
                    if s is None or s[key]["mean"] is None:
                        continue
                    m = s[key]
                    xs.append(b)
                    mean.append(m["mean"])
                    lo.append(m["ci_low"] if m["ci_low"] is not None else m["mean"])
                    hi.append(m["ci_high"] if m["ci_high"] is not None else m["mean"])
                if not xs:
                    continue
                style = "--" if name == summary.get("baseline") else "-"
                color = colors[name]
                ax.plot(xs, mean, style, marker="o", ms=4, label=name, color=color)
                ax.fill_between(xs, np.clip(lo, 0, 1), np.clip(hi, 0, 1),
                                color=color, alpha=0.15)  # fmt: skip
            ax.set_xscale("log")
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
            ax.set_xlabel("labelled examples per class")
            ax.set_ylabel(f"test {label}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)

    return _svg(draw, (10, 3.8), salt)


#: how each forgetting measure is named on an axis or in a table
FORGETTING_LABELS = {
    "top1_agreement": "source top-1 agreement",
    "similarity_retention": "similarity retention (Spearman)",
}


def forgetting_svg(
    rows: list[dict[str, Any]], colors: dict[str, Any] | None = None, salt: str = "forget"
) -> str:
    """Source-task agreement per strategy and budget (mean over seeds)."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    colors = colors or strategy_colors(strategies)
    budgets = sorted({int(r["budget"]) for r in rows})

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        width = 0.8 / max(1, len(strategies))
        for i, s in enumerate(strategies):
            ys = []
            for b in budgets:
                v = [r["agreement"] for r in rows if r["strategy"] == s and r["budget"] == b]
                ys.append(float(np.mean(v)) if v else np.nan)
            ax.bar(np.arange(len(budgets)) + i * width, ys, width, label=s, color=colors[s])
        ax.set_xticks(np.arange(len(budgets)) + 0.4 - width / 2, [str(b) for b in budgets])
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel(FORGETTING_LABELS.get(rows[0].get("measure", ""), "source top-1 agreement"))
        ax.set_ylim(min(0.0, *(r["agreement"] for r in rows)), 1.05)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")

    return _svg(draw, (7, 3.4), salt)


def tradeoff_svg(doc: dict[str, Any], colors: dict[str, Any], salt: str = "tradeoff") -> str:
    """Per label budget (a column each): accuracy against what is kept of the source task
    (the Pareto front joined), and accuracy against trainable parameters (log scale)."""
    budgets = sorted(doc, key=int)

    def draw(fig: Any) -> None:
        axes = fig.subplots(2, len(budgets), squeeze=False)
        for col, b in enumerate(budgets):
            entry = doc[b]
            label = FORGETTING_LABELS.get(entry["measure"], entry["measure"])
            top, bottom = axes[0][col], axes[1][col]
            for r in entry["rows"]:
                c = colors.get(r["strategy"], "grey")
                marker = "*" if r["pareto"] else "o"
                size = 90 if r["pareto"] else 30
                if r["kept"] is not None:
                    top.scatter(r["kept"], r["accuracy"], color=c, marker=marker, s=size)
                    top.annotate(r["strategy"], (r["kept"], r["accuracy"]), fontsize=7,
                                 xytext=(3, 3), textcoords="offset points")  # fmt: skip
                if r["trainable"]:
                    bottom.scatter(r["trainable"], r["accuracy"], color=c, marker=marker, s=size)
                    bottom.annotate(r["strategy"], (r["trainable"], r["accuracy"]), fontsize=7,
                                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
            front = [r for r in entry["rows"] if r["pareto"]]
            front.sort(key=lambda r: r["kept"])
            if len(front) > 1:
                top.plot([r["kept"] for r in front], [r["accuracy"] for r in front],
                         color="black", lw=0.8, ls="--", label="Pareto front")  # fmt: skip
                top.legend(fontsize=7)
            top.axvline(KEEP_AT_LEAST, color="grey", lw=0.6, ls=":")
            top.set_title(f"{b} per class", fontsize=9)
            top.set_xlabel(label)
            top.set_ylabel("test accuracy")
            top.grid(alpha=0.3)
            bottom.set_xscale("log")
            bottom.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
            bottom.xaxis.set_minor_formatter(NullFormatter())
            bottom.set_xlabel("trainable parameters")
            bottom.set_ylabel("test accuracy")
            bottom.grid(alpha=0.3)

    return _svg(draw, (max(5.0, 4.2 * len(budgets)), 7.0), salt)


def _count(v: float) -> str:
    """A parameter count as a short label: 950, 12k, 3.4M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def tradeoff_rows(doc: dict[str, Any]) -> list[list[str]]:
    """The trade-off table: one row per budget and strategy."""
    rows = []
    for b in sorted(doc, key=int):
        for r in sorted(doc[b]["rows"], key=lambda r: -r["accuracy"]):
            rows.append(
                [
                    b,
                    r["strategy"],
                    f"{r['accuracy']:.4f}",
                    "-" if r["kept"] is None else f"{r['kept']:.3f}",
                    "-" if r["trainable"] is None else f"{r['trainable']:,}",
                    "yes" if r["pareto"] else "",
                ]
            )
    return rows


TRADEOFF_HEADER = ["per class", "strategy", "accuracy", "kept", "trainable params", "Pareto"]


def _thumbnail(image: Any) -> str:
    im = image.convert("RGB")
    im.thumbnail((96, 96))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def confident_errors_html(
    samples: ImageSamples | TextSamples,
    logits: np.ndarray,
    temperature: float,
    classes: list[str],
    k: int = N_ERRORS,
) -> str:
    """The ``k`` wrong predictions made with the highest (calibrated) confidence."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    proba = torch.softmax(z, 1).numpy()
    pred = proba.argmax(1)
    labels = np.asarray(samples.labels)
    wrong = np.flatnonzero(pred != labels)
    if len(wrong) == 0:
        return '<p class="note">No wrong predictions on this split.</p>'
    order = wrong[np.argsort(-proba[wrong, pred[wrong]])][:k]
    cards = []
    for i in order:
        head = (
            f"<b>true</b> {html.escape(classes[labels[i]])}<br><b>predicted</b> "
            f"{html.escape(classes[pred[i]])} ({proba[i, pred[i]]:.2f})"
        )
        if isinstance(samples, TextSamples):
            text = samples.texts[i]
            snippet = html.escape(text[:280] + ("..." if len(text) > 280 else ""))
            cards.append(f'<div class="card text">{head}<br>#{i}: {snippet}</div>')
        else:
            src = _thumbnail(samples.image(int(i)))
            cards.append(f'<div class="card"><img src="{src}" alt="example {i}"><br>{head}</div>')
    return f'<div class="grid">{"".join(cards)}</div>'


# -- pages -----------------------------------------------------------------------------------
def _page(title: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def model_sections(
    metrics: dict[str, Any],
    history: Sequence[dict[str, Any]],
    preds: dict[str, Any],
    samples: ImageSamples | TextSamples,
    salt: str = "",
) -> list[str]:
    """The figures of one trained model: curves, confusion, per-class F1, reliability,
    embedding map, confident errors, and the forgetting check."""
    split = preds["split"]
    m = metrics[split]
    classes = list(metrics["classes"])
    cal = metrics["calibration"][split]
    t = float(metrics["calibration"]["temperature"])
    out = [
        _figure(
            "training-curves",
            "Training curves",
            training_curves_svg(history, salt + "curves"),
            "Loss (left) and validation accuracy / macro-F1 (right) per epoch; a probe "
            "phase comes before the fine-tuning phase.",
        ),
        _figure(
            "confusion-matrix",
            f"Confusion matrix ({split})",
            confusion_svg(m, salt + "cm"),
            "Rows are the true classes, normalised per row; numbers are counts.",
        ),
        _figure(
            "per-class-f1",
            f"Per-class F1 ({split})",
            per_class_f1_svg(m, salt + "f1"),
            f"Accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} on {m['n']} examples.",
        ),
        _figure(
            "reliability",
            f"Reliability diagram ({split})",
            reliability_svg(cal, t, salt + "rel"),
            f"Temperature scaling fitted on the validation split "
            f"({metrics['calibration'].get('n', '?')} examples): T = {t:.3f}; expected "
            f"calibration error {cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after. "
            "Fitted on fewer than about 50 examples, T is noisy.",
        ),
        _figure(
            "embedding-map",
            f"Embeddings of the {split} examples",
            map_svg(preds["map"], preds["labels"], classes, salt + "map"),
            "The trained backbone's pooled features, projected on their first two principal "
            "components and coloured by true class.",
        ),
        _figure(
            "confident-errors",
            "Most confidently wrong predictions",
            confident_errors_html(samples, preds["logits"], t, classes),
            f"The {N_ERRORS} wrong {split} predictions with the highest calibrated confidence.",
        ),
    ]
    forgetting = metrics.get("forgetting", {})
    if forgetting.get("measure") == "similarity_retention":
        text = (
            f"The encoder has no source head; what it keeps is measured as similarity "
            f"retention: the Spearman correlation between the original and the trained "
            f"encoder's cosine similarities over {forgetting['pairs']} pairs of the "
            f"{forgetting['n']} {split} texts is <b>{forgetting['similarity_retention']:.3f}"
            f"</b> (1.0 = the similarities are ranked as before)."
        )
    elif forgetting.get("applicable"):
        text = (
            f"With its original source head put back, the backbone predicts the same source "
            f"class as the original pretrained model on "
            f"<b>{100 * forgetting['top1_agreement']:.1f}%</b> of the {forgetting['n']} "
            f"{split} examples (1.0 = no drift from the source task)."
        )
    else:
        text = f"Not applicable: {html.escape(str(forgetting.get('reason', 'no source head')))}."
    out.append(f'<h2>Forgetting of the source task</h2><p data-section="forgetting">{text}</p>')
    return out


def fit_report_html(
    title: str,
    cfg_doc: dict[str, Any],
    metrics: dict[str, Any],
    history: Sequence[dict[str, Any]],
    preds: dict[str, Any],
    samples: ImageSamples | TextSamples,
    range_test: dict[str, Any] | None = None,
) -> str:
    rows = []
    for split in ("validation", "test"):
        if split in metrics:
            m, cal = metrics[split], metrics["calibration"].get(split, {})
            rows.append(
                [
                    split,
                    m["n"],
                    f"{m['accuracy']:.4f}",
                    f"{m['macro_f1']:.4f}",
                    f"{cal.get('ece_before', math.nan):.4f}",
                    f"{cal.get('ece_after', math.nan):.4f}",
                ]
            )
    summary = _table(["split", "n", "accuracy", "macro-F1", "ECE", "ECE (calibrated)"], rows)
    summary += (
        '<p class="note">The temperature is fitted on the validation split, so its calibrated '
        "ECE there is in-sample; the test row is the honest one.</p>"
    )
    params = metrics.get("params", {})
    info = (
        f"<p>Backbone <b>{html.escape(str(metrics.get('backbone')))}</b> "
        f"(weights: {html.escape(str(metrics.get('weights')))}), strategy "
        f"<b>{html.escape(str(metrics.get('strategy')))}</b>, "
        f"{metrics.get('seconds', 0):.1f} s. Trainable parameters: "
        f"{html.escape(json.dumps(params))}.</p>"
    )
    config = f"<details><summary>Configuration</summary><pre>{html.escape(json.dumps(cfg_doc, indent=2))}</pre></details>"  # noqa: E501
    sections = [f"<h2>Summary</h2>{info}{summary}{config}"]
    if metrics.get("vocabulary"):
        sections.append(vocabulary_html(metrics["vocabulary"]))
    sections.append("<h2>Figures</h2>")
    sections += model_sections(metrics, history, preds, samples)
    if range_test is not None:
        sections.append(lr_find_figure(range_test))
    return _page(title, sections)


def vocabulary_html(vocab: dict[str, Any]) -> str:
    """How the backbone's vocabulary covers the training texts: a sentence and a table of
    the most fragmented words (subword tokenizers) or the most frequent words missing from
    it (word vectors)."""
    tokens, distinct = vocab.get("tokens", 0), vocab.get("distinct_words", 0)
    if vocab.get("kind") == "subword":
        text = (
            f"The tokenizer ({vocab.get('vocabulary')} tokens) reads the {tokens} words of "
            f"the training texts ({distinct} distinct) as <b>{vocab['pieces_per_word']:.2f}"
            f"</b> pieces per word; {100 * vocab['split_word_rate']:.1f}% of the words are "
            f"split into 2 or more pieces and {100 * vocab['unk_rate']:.2f}% hold the "
            "unknown token."
        )
        rows = vocab.get("most_fragmented", [])
        table = _table(["most fragmented word", "occurrences", "pieces"], rows) if rows else ""
        added = vocab.get("added_tokens")
        if added:
            after = vocab.get("pieces_per_word_after")
            text += (
                f" Added to the tokenizer (--add-domain-tokens), each embedding the mean of "
                f"its former pieces': {html.escape(', '.join(added))}"
                + (f"; pieces per word then {after:.2f}." if after is not None else ".")
            )
        elif added is not None:
            text += " --add-domain-tokens found no word to add."
    else:
        policy = vocab.get("oov_policy")
        text = (
            f"<b>{100 * vocab['oov_token_rate']:.1f}%</b> of the {tokens} tokens of the "
            f"training texts and {100 * vocab['oov_word_rate']:.1f}% of their {distinct} "
            f"distinct words are out of the vocabulary ({vocab.get('vocabulary')} words)"
            + (f"; --oov {html.escape(str(policy))} decides what they become." if policy else ".")
        )
        rows = vocab.get("top_oov", [])
        table = _table(["word out of the vocabulary", "occurrences"], rows) if rows else ""
    return f'<h2>Vocabulary</h2><div data-section="vocabulary"><p>{text}</p>{table}</div>'


def _strategy_names(summary: dict[str, Any]) -> list[str]:
    return list(
        dict.fromkeys(s for entry in summary["budgets"].values() for s in entry["strategies"])
    )


def _verdict_class(kind: str | None) -> str:
    return {"helps": "helps", "negative transfer": "negative"}.get(str(kind), "none")


def _pm(m: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    """'mean ± std' (just the mean from one seed)."""
    if m.get("mean") is None:
        return "-"
    s = f"{scale * m['mean']:.{digits}f}"
    if m.get("std") is not None:
        s += f" ± {scale * m['std']:.{digits}f}"
    return s


def _ci(m: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    if m.get("ci_low") is None:
        return "-"
    return f"[{scale * m['ci_low']:.{digits}f}, {scale * m['ci_high']:.{digits}f}]"


def comparison_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per (budget, strategy): the table of the terminal, the CSV and the report."""
    rows = []
    for b, entry in sorted(summary["budgets"].items(), key=lambda kv: int(kv[0])):
        for name, s in entry["strategies"].items():
            g = entry["gain_over_baseline"].get(name)
            rows.append(
                [
                    b,
                    name,
                    str(s["accuracy"]["n"]),
                    _pm(s["accuracy"]),
                    _ci(s["accuracy"]),
                    _pm(s["macro_f1"]),
                    _ci(s["macro_f1"]),
                    "-" if g is None else _pm(g["accuracy_gain"], 100, 1),
                    "-" if g is None else _ci(g["accuracy_gain"], 100, 1),
                    "-" if g is None else f"{g['mcnemar_max_p']:.2g}",
                    f"{_pm(s['ece_before'], digits=3).split(' ')[0]} -> "
                    f"{_pm(s['ece_after'], digits=3).split(' ')[0]}",
                ]
            )
    return rows


def comparison_header(confidence: float = 0.95) -> list[str]:
    ci = f"{100 * confidence:g}% CI"
    return [
        "per class",
        "strategy",
        "seeds",
        "accuracy",
        ci,
        "macro-F1",
        ci,
        "gain (points)",
        ci,
        "McNemar p (max over seeds)",
        "ECE -> calibrated",
    ]


def compare_report_html(
    title: str,
    summary: dict[str, Any],
    forgetting_rows: list[dict[str, Any]],
    example: dict[str, Any] | None,
    notes: list[str],
    trade: dict[str, Any] | None = None,
) -> str:
    """The comparison page: verdicts, the table, budget curves with confidence bands, the
    forgetting figure, and the figures of one example model (``example``: its metrics,
    history, predictions, samples and a caption)."""
    verdicts = "".join(
        f"<li><b>{b} per class</b>: "
        f'<span class="verdict {_verdict_class(v["verdict"]["verdict"])}">'
        f"{html.escape(v['verdict']['text'])}</span></li>"
        for b, v in sorted(summary["budgets"].items(), key=lambda kv: int(kv[0]))
    )
    sections = [
        f"<h2>Verdict</h2><ul>{verdicts}</ul>",
        "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes),
        "<h2>Comparison</h2>",
        _table(comparison_header(summary["confidence"]), comparison_rows(summary)),
        _figure(
            "budget-curves",
            "Label-budget curves",
            budget_curves_svg(summary),
            "Test accuracy and macro-F1 against labelled examples per class; bands are "
            f"{100 * summary['confidence']:g}% confidence intervals of the mean over seeds "
            "(dashed: the baseline).",
        ),
    ]
    if forgetting_rows:
        sections.append(
            _figure(
                "forgetting",
                "Forgetting of the source task",
                forgetting_svg(forgetting_rows, strategy_colors(_strategy_names(summary))),
                "How often the backbone with its original source head still predicts what the "
                "original model predicted, on the test examples (1.0 = no drift)."
                if forgetting_rows[0].get("measure") != "similarity_retention"
                else "The Spearman correlation between the original and the trained "
                "encoder's cosine similarities of a fixed sample of pairs of test texts "
                "(1.0 = no drift; the encoder has no source head).",
            )
        )
    else:
        sections.append(
            '<figure data-figure="forgetting"><h3>Forgetting of the source task</h3>'
            "<p>Not applicable: the backbone has no source-task head.</p></figure>"
        )
    if trade and any(e["front"] for e in trade.values()):
        lines = "".join(
            f"<li><b>{b} per class</b>: {html.escape(e['text'])}</li>"
            for b, e in sorted(trade.items(), key=lambda kv: int(kv[0]))
        )
        sections += [
            '<h2>Accuracy, forgetting and size</h2><ul data-section="tradeoff">' + lines + "</ul>",
            _table(TRADEOFF_HEADER, tradeoff_rows(trade)),
            _figure(
                "tradeoff",
                "Accuracy against forgetting and trainable parameters",
                tradeoff_svg(trade, strategy_colors(_strategy_names(summary))),
                "Means over seeds. Stars: the Pareto front of accuracy and what is kept of "
                f"the source task (no strategy is both more accurate and keeps more); the "
                f"dotted line marks {KEEP_AT_LEAST:.0%}.",
            ),
        ]
    if example is not None:
        sections.append(f"<h2>{html.escape(example['caption'])}</h2>")
        sections += model_sections(
            example["metrics"], example["history"], example["preds"], example["samples"], "ex"
        )
    return _page(title, sections)


def write_fit_report(
    run_dir: Path,
    cfg_doc: dict[str, Any],
    metrics: dict[str, Any],
    history: Sequence[dict[str, Any]],
    samples: ImageSamples | TextSamples,
) -> Path:
    """``report.html`` of a run folder (reads its ``predictions.safetensors``)."""
    preds = read_predictions(run_dir)
    title = f"headstart run: {metrics.get('strategy')} on {samples.name}"
    path = run_dir / "report.html"
    found = run_dir / LR_FIND_FILE
    test = json.loads(found.read_text()) if found.is_file() else None
    atomic_write(path, fit_report_html(title, cfg_doc, metrics, history, preds, samples, test))
    return path


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


# -- the ranking page (headstart rank) ---------------------------------------------------------
def rank_scores_svg(doc: dict[str, Any], salt: str = "rank") -> str:
    """One panel per score: a bar per candidate (n/a left empty), the recommended one
    highlighted."""
    scores = list(doc["config"]["scores"])
    rows = doc["rows"]
    names = [r["candidate"] for r in rows]
    ncol = min(3, len(scores))
    nrow = -(-len(scores) // ncol)

    def draw(fig: Any) -> None:
        for i, s in enumerate(scores):
            ax = fig.add_subplot(nrow, ncol, i + 1)
            vals = [r["scores"].get(s) for r in rows]
            colors = ["#2a9d8f" if n == doc["recommended"] else "#8d99ae" for n in names]
            ys = np.arange(len(rows))
            ax.barh(ys, [v if v is not None else 0.0 for v in vals], color=colors)
            for yy, v in zip(ys, vals, strict=True):
                if v is None:
                    ax.text(0, yy, " n/a", va="center", fontsize=7, color="#666")
            ax.set_yticks(ys, [_short(n, 26) for n in names] if i % ncol == 0 else [""] * len(ys))
            ax.invert_yaxis()
            ax.set_title(s + (" (recommends)" if s == doc["score"] else ""), fontsize=9)
            ax.axvline(0, color="#333", lw=0.5)

    height = max(2.2, 0.28 * len(rows) + 1.0) * nrow
    return _svg(draw, (4.0 * ncol, height), salt)


def rank_report_html(doc: dict[str, Any]) -> str:
    """The ranking page: recommendation, the table of scores and seconds, the bar panels."""
    scores = list(doc["config"]["scores"])
    header = ["candidate", "features", "features (s)"] + [f"{s}" for s in scores]
    key = doc["score"]
    rows = []
    for r in doc["rows"]:  # best first already
        cells = [r["candidate"] + (" *" if r["candidate"] == doc["recommended"] else ""), r["dim"]]
        cells.append(f"{r['feature_seconds']:.1f}" + (" (cached)" if r["cached"] else ""))
        for s in scores:
            v = r["scores"].get(s)
            cells.append("n/a" if v is None else f"{v:.4g} ({r['seconds'][s]:.2f} s)")
        rows.append(cells)
    notes = [f"{r['candidate']}, {k}: {n}" for r in doc["rows"] for k, n in r["notes"].items()]
    rec = doc["recommended"]
    sections = [
        "<h2>Recommendation</h2>"
        + (
            f"<p><b>{html.escape(rec)}</b>: the highest {html.escape(key)} of "
            f"{len(doc['rows'])} candidates, scored on {doc['n']} labelled examples "
            f"({len(doc['classes'])} classes) in {doc['seconds']:.1f} s.</p>"
            if rec
            else f"<p>No candidate has a {html.escape(key)} score.</p>"
        ),
        "<h2>Scores</h2>",
        _table(header, rows),
        "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes),
        '<p class="note">Higher is better for every score. '
        + "; ".join(f"{html.escape(s)}: {html.escape(h)}" for s, h in doc["scores"].items())
        + ".</p>",
        _figure(
            "rank-scores",
            "Scores by candidate",
            rank_scores_svg(doc),
            "Each panel is one score; the recommended candidate is highlighted.",
        ),
    ]
    return _page(f"headstart rank: {doc['source']}", sections)


# -- tuning ------------------------------------------------------------------------------------
def tune_history_svg(doc: dict[str, Any], salt: str = "tunehist") -> str:
    """Each trial's objective by trial number (pruned trials at their last reported
    value, hollow), with the best so far as a step line."""

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        done = [t for t in doc["trials"] if t["state"] == "COMPLETE"]
        pruned = [t for t in doc["trials"] if t["state"] == "PRUNED" and t["intermediate"]]
        ax.plot([t["number"] for t in done], [t["value"] for t in done], "o", color="C0",
                ms=4, label="finished")  # fmt: skip
        last = [list(t["intermediate"].values())[-1] for t in pruned]
        ax.plot([t["number"] for t in pruned], last, "o", mfc="none", color="C3", ms=4,
                label="pruned (last reported)")  # fmt: skip
        order = sorted(done, key=lambda t: t["number"])
        best: Any = np.maximum.accumulate([t["value"] for t in order]) if order else []
        ax.step([t["number"] for t in order], best, where="post", color="C2", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(doc["objective"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    return _svg(draw, (6.5, 3.2), salt)


def tune_importance_svg(doc: dict[str, Any], salt: str = "tuneimp") -> str:
    """Optuna's parameter importances (fANOVA) as bars."""

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        items = sorted(doc["importances"].items(), key=lambda kv: kv[1])
        if not items:
            ax.text(0.5, 0.5, "too few finished trials share a parameter", ha="center",
                    transform=ax.transAxes)  # fmt: skip
            ax.set_axis_off()
            return
        ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
        ax.set_xlabel("importance (share of the objective's variance)")
        ax.grid(alpha=0.3, axis="x")

    return _svg(draw, (6.0, max(1.8, 0.35 * len(doc["importances"]) + 1.0)), salt)


def tune_slices_svg(doc: dict[str, Any], salt: str = "tuneslice") -> str:
    """The objective against each parameter over the finished trials (a slice plot):
    log axes for the rates, categories as positions."""
    done = [t for t in doc["trials"] if t["state"] == "COMPLETE"]
    names = list(dict.fromkeys(k for t in done for k in t["params"]))
    ncol = 3
    nrow = max(1, math.ceil(len(names) / ncol))

    def draw(fig: Any) -> None:
        for i, name in enumerate(names):
            ax = fig.add_subplot(nrow, ncol, i + 1)
            pts = [(t["params"][name], t["value"]) for t in done if name in t["params"]]
            xs = [p[0] for p in pts]
            if all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
                ax.scatter(xs, [p[1] for p in pts], s=12, color="C0")
                if name in ("lr", "weight_decay") and min(xs) > 0:
                    ax.set_xscale("log")
                    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
                    ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                cats = sorted({str(x) for x in xs})
                ax.scatter([cats.index(str(x)) for x in xs], [p[1] for p in pts], s=12,
                           color="C0")  # fmt: skip
                ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=7)
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3)

    return _svg(draw, (10.0, 2.6 * nrow), salt)


def tune_report_html(doc: dict[str, Any]) -> str:
    """The tuning page: the best trial and its one test figure, the top trials, and the
    optimisation history, parameter importances and slice plots."""
    best = doc["best"]
    test = best["test"]
    done = sorted((t for t in doc["trials"] if t["state"] == "COMPLETE"), key=lambda t: -t["value"])
    rows = [
        [t["number"], f"{t['value']:.4f}", t.get("epochs") or 0, f"{t.get('seconds') or 0:.0f}",
         html.escape(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in t["params"].items()))]
        for t in done[:10]
    ]  # fmt: skip
    c = doc["counts"]
    sections = [
        "<h2>Best trial</h2>"
        f"<p>Trial <b>{best['number']}</b> of {len(doc['trials'])} ({c['COMPLETE']} finished, "
        f"{c['PRUNED']} pruned; {doc['epochs_trained']} epochs in all): "
        f"{html.escape(doc['objective'])} <b>{best['validation_macro_f1']:.4f}</b>. On the "
        f"test split, scored once for this trial only: accuracy <b>{test['accuracy']:.4f}</b>, "
        f"macro-F1 <b>{test['macro_f1']:.4f}</b> (n={test['n']}). Its run folder is "
        f"<code>{html.escape(best['folder'])}/</code>.</p>",
        "<h2>Top trials</h2>",
        _table(["trial", doc["objective"], "epochs", "seconds", "parameters"], rows),
        _figure(
            "tune-history",
            "Optimisation history",
            tune_history_svg(doc),
            f"Each trial's {html.escape(doc['objective'])}; pruned trials "
            f"({html.escape(doc['pruner'])} pruner) at the last value they reported.",
        ),
        _figure(
            "tune-importances",
            "Parameter importances",
            tune_importance_svg(doc),
            "Optuna's fANOVA importances over the finished trials (parameters that only "
            "some strategies use are left out when too few trials share them).",
        ),
        _figure(
            "tune-slices",
            "Objective by parameter",
            tune_slices_svg(doc),
            "Every finished trial, one panel per parameter.",
        ),
    ]
    return _page(f"headstart tune: {doc['study']}", sections)
