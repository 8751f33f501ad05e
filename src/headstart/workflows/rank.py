"""``headstart rank``: score candidate backbones (or their layers) on a labelled dataset
before any training, from cached features, and recommend one.

Every candidate embeds the same stratified subsample once (through the embedding cache);
every score then works on those features in well under a second. A candidate is a
backbone name, ``NAME@GROUP`` (the pooled features after one layer group) or
``random:NAME`` (the architecture with random weights: the floor a pretrained candidate
should clear)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

from headstart.backbones import Backbone, check_backbone, create_backbone
from headstart.backbones.catalog import DEFAULT_BACKBONES
from headstart.backbones.cut import split_cut
from headstart.config import RANDOM_PREFIX, BackboneConfig, DataConfig, RankConfig
from headstart.data import TextSamples, data_fingerprint, up_to_per_class
from headstart.data.loading import Samples, check_samples, load_source
from headstart.device import resolve_device
from headstart.errors import ConfigError
from headstart.evaluation.report import rank_report_html
from headstart.features import (
    EmbeddingCache,
    cache_key,
    calibrate_batchnorm,
    compute_embeddings,
)
from headstart.features.cache import compute_layer_embeddings
from headstart.runfolder import check_out_folder, write_json
from headstart.selection import SCORES, NotApplicable
from headstart.storage import atomic_write, locked

FORMAT_VERSION = 1


@dataclass
class Candidate:
    """One row of the ranking: a backbone, at a layer group or at its final features."""

    backbone: str
    layer: str | None = None
    pretrained: bool = True

    @property
    def name(self) -> str:
        prefix = "" if self.pretrained else RANDOM_PREFIX
        return f"{prefix}{self.backbone}" + (f"@{self.layer}" if self.layer else "")


@dataclass
class RankRow:
    candidate: str
    backbone: str
    layer: str | None
    pretrained: bool
    dim: int = 0
    feature_seconds: float = 0.0
    cached: bool = False
    scores: dict[str, float | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class RankResult:
    rows: list[RankRow]
    score: str
    recommended: str | None
    n: int
    classes: list[str]
    seconds: float
    doc: dict[str, Any]


def parse_candidate(text: str) -> Candidate:
    pretrained = not text.startswith(RANDOM_PREFIX)
    base, layer = split_cut(text.removeprefix(RANDOM_PREFIX))
    if not base:
        raise ConfigError("a backbone name", repr(text), "pass e.g. efficientnet_lite0")
    return Candidate(base, layer or None, pretrained)


def _layer_names(spec: str, backbone: Backbone, cut: bool = False) -> list[str]:
    """The layer groups ``spec`` names (``all``, or names separated by commas), checked
    against the groups ``backbone`` can give features after. ``cut``: spec came from
    ``NAME@GROUP`` rather than ``--layers``."""
    names = list(backbone.layer_modules())
    if spec.strip() == "all" and not cut:
        return names
    asked = [s.strip() for s in spec.split(",") if s.strip()]
    fix = (
        f"write {backbone.spec.name}@GROUP with one of those groups"
        if cut
        else "pass --layers all, or some of those names separated by commas"
    )
    if not asked:
        raise ConfigError(f"layer group names ({', '.join(names)})", repr(spec), fix)
    unknown = [a for a in asked if a not in names]
    if unknown:
        raise ConfigError(
            f"layer groups of {backbone.spec.name} ({', '.join(names)})",
            ", ".join(repr(u) for u in unknown),
            fix,
        )
    return asked


def subsample(samples: Samples, max_per_class: int | None, seed: int) -> Samples:
    """The labelled examples, at most ``max_per_class`` of each class (stratified, seeded)."""
    labels = np.asarray(samples.labels)
    keep = np.flatnonzero(labels >= 0)
    if max_per_class:
        keep = keep[up_to_per_class(labels[keep], max_per_class, seed)]
    return samples.subset(keep)


def _source_probs(backbone: Backbone, emb: torch.Tensor) -> np.ndarray | None:
    """The source head's class probabilities for final embeddings (None without one)."""
    head = backbone.source_head()
    if head is None or head[0].shape[1] != emb.shape[1]:
        return None
    weight, bias = head
    return torch.softmax(emb.double() @ weight.double().T + bias.double(), 1).numpy()


def _features(
    backbone: Backbone,
    samples: Samples,
    layers: list[str | None],
    cache: EmbeddingCache,
    device: str,
    batch_size: int,
    progress: bool,
) -> tuple[dict[str | None, torch.Tensor], bool]:
    """Features of ``samples`` at each of ``layers`` (None: the final embedding), from the
    cache where present and otherwise from at most two passes (final, and every layer)."""
    fp = data_fingerprint(samples)
    out: dict[str | None, torch.Tensor] = {}
    missing: list[str | None] = []
    for layer in layers:
        got = cache.load(cache_key(backbone, fp, layer))
        if got is not None:
            out[layer] = got
        else:
            missing.append(layer)
    if not missing:
        return out, True
    dataset = backbone.make_dataset(samples)
    name = backbone.spec.name
    if None in missing:
        emb = compute_embeddings(
            backbone, dataset, batch_size, device, progress, f"embedding {name}"
        )
        out[None] = emb
        cache.store(cache_key(backbone, fp), emb)
    named = [m for m in missing if m is not None]
    if named:
        got_layers = compute_layer_embeddings(
            backbone, dataset, named, batch_size, device, progress, f"embedding {name} layers"
        )
        for layer in named:
            out[layer] = got_layers[layer]
            cache.store(cache_key(backbone, fp, layer), got_layers[layer])
    return out, False


def _no_source_reason(row: RankRow, backbone: Backbone | None) -> str:
    if row.layer is not None:
        return f"{row.candidate} is an intermediate layer, below the source head"
    if not row.pretrained:
        return f"{row.candidate} has random weights, so no trained source head"
    if backbone is not None and backbone.spec.modality == "text":
        return f"{row.candidate} is a text encoder without a source classification head"
    return f"{row.candidate} was loaded without its source classification head"


def _score_row(
    row: RankRow,
    x: np.ndarray,
    y: np.ndarray,
    probs: np.ndarray | None,
    scores: list[str],
    backbone: Backbone | None = None,
) -> None:
    why = _no_source_reason(row, backbone)
    # one BLAS thread: right after a torch forward pass, torch's OpenMP threads and a
    # multi-threaded BLAS fight over the cores (measured: the linear probe's 5 folds took
    # 3.2 s with two BLAS threads, 0.2 s with one, on 2 cores)
    with threadpool_limits(limits=1, user_api="blas"):
        _score_each(row, x, y, probs, scores, why)


def _score_each(
    row: RankRow,
    x: np.ndarray,
    y: np.ndarray,
    probs: np.ndarray | None,
    scores: list[str],
    why: str,
) -> None:
    for name in scores:
        scorer = SCORES.get(name)
        t0 = time.perf_counter()
        try:
            row.scores[name] = scorer(x, y, probs, why)
        except NotApplicable as e:
            row.scores[name] = None
            row.notes[name] = f"not applicable: {e}"
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as e:
            row.scores[name] = None
            row.notes[name] = f"failed: {type(e).__name__}: {e}"
        row.seconds[name] = time.perf_counter() - t0
        value = row.scores[name]
        if value is not None and not np.isfinite(value):
            row.notes[name] = "failed: not a finite number"
            row.scores[name] = None


def order_rows(rows: list[RankRow], score: str) -> list[RankRow]:
    """Best first by ``score``; candidates where it does not apply go last, in input order."""
    return sorted(rows, key=lambda r: -(v if (v := r.scores.get(score)) is not None else -np.inf))


@locked("ranking")
def run_rank(
    data_cfg: DataConfig,
    rank_cfg: RankConfig,
    out: str | Path | None = None,
    *,
    backbone_cfg: BackboneConfig | None = None,
    batch_size: int = 64,
    device: str = "auto",
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    console: Console | None = None,
    samples: Samples | None = None,
) -> RankResult:
    """Rank ``rank_cfg.backbones`` on ``data_cfg.source`` (or ``samples``); write
    ``rank.json`` and ``report.html`` to ``out`` when given."""
    console = console or Console()
    out = Path(out) if out is not None else None
    if out is not None:
        check_out_folder(out)
    for name in rank_cfg.scores:
        SCORES.get(name)  # unknown names fail before any work
    start = time.perf_counter()
    base_cfg = backbone_cfg or BackboneConfig()
    cache = cache or EmbeddingCache()
    device = resolve_device(device)
    candidates: dict[str, Candidate] = {}
    for text in rank_cfg.backbones:
        c = parse_candidate(text)
        candidates.setdefault(c.name, c)
        # a mistyped name must not cost a preflight (the layer is checked once built)
        check_backbone(dataclasses.replace(base_cfg, name=c.backbone))
    if samples is None:
        samples = load_source(data_cfg.source, data_cfg)
    # the subsample first: only the examples that are scored get opened and checked
    data, report = check_samples(
        subsample(samples, rank_cfg.max_per_class, rank_cfg.seed), data_cfg, progress
    )
    y = np.asarray(data.labels)
    counts = np.bincount(y, minlength=len(data.classes))
    console.print(
        f"[bold]data[/] {samples.name}: {len(data)} examples to score (at most "
        f"{rank_cfg.max_per_class} per class; fewest {counts.min()}): {report.summary()}"
    )
    modality = "text" if isinstance(data, TextSamples) else "image"
    groups: dict[tuple[str, bool], list[Candidate]] = {}
    for c in candidates.values():
        if c.backbone == "auto":
            c.backbone = DEFAULT_BACKBONES[modality]
        groups.setdefault((c.backbone, c.pretrained), []).append(c)
    # every backbone built and every layer name checked before any feature is computed
    jobs: list[tuple[Backbone, bool, list[Candidate]]] = []
    for (name, pretrained), cands in groups.items():
        bcfg = BackboneConfig(
            name=name,
            pretrained=pretrained,
            weights=base_cfg.weights if pretrained else None,
            allow_download=base_cfg.allow_download,
            pooling=base_cfg.pooling,
            oov=base_cfg.oov,
            tokenizer=base_cfg.tokenizer,
        )
        with torch.random.fork_rng(devices=[]):  # random weights from --seed, RNG untouched
            torch.manual_seed(rank_cfg.seed)
            backbone = create_backbone(
                bcfg, len(data.classes), data_cfg.image_size, data_cfg.max_length
            )
        wanted: list[Candidate] = []
        for c in cands:
            if c.layer is None and rank_cfg.layers is not None:
                layers = _layer_names(rank_cfg.layers, backbone)
                wanted += [Candidate(name, n, pretrained) for n in layers]
            else:
                if c.layer is not None:
                    _layer_names(c.layer, backbone, cut=True)
                wanted.append(c)
        unique = list({c.name: c for c in wanted}.values())
        jobs.append((backbone, pretrained, unique))
    rows: list[RankRow] = []
    while jobs:
        backbone, pretrained, wanted = jobs.pop(0)
        t0 = time.perf_counter()
        if not pretrained:  # random weights: normalise with this data's statistics
            calibrate_batchnorm(backbone, backbone.make_dataset(data), batch_size, device, progress)
        feats, cached = _features(
            backbone,
            data,
            list(dict.fromkeys(c.layer for c in wanted)),
            cache,
            device,
            batch_size,
            progress,
        )
        seconds = time.perf_counter() - t0
        probs = _source_probs(backbone, feats[None]) if None in feats else None
        for c in wanted:
            x = feats[c.layer].double().numpy()
            row = RankRow(
                c.name, c.backbone, c.layer, c.pretrained, int(x.shape[1]), seconds, cached
            )
            _score_row(row, x, y, probs if c.layer is None else None, rank_cfg.scores, backbone)
            rows.append(row)
            console.print(f"  scored {c.name} ({x.shape[1]} features)", highlight=False)
        del backbone, feats
    ordered = order_rows(rows, rank_cfg.score)
    best = ordered[0] if ordered and ordered[0].scores.get(rank_cfg.score) is not None else None
    elapsed = time.perf_counter() - start
    doc = {
        "format_version": FORMAT_VERSION,
        "source": data_cfg.source or samples.name,
        "n": len(data),
        "classes": data.classes,
        "per_class": {c: int(n) for c, n in zip(data.classes, counts, strict=True)},
        "config": asdict(rank_cfg),
        "score": rank_cfg.score,
        "recommended": best.candidate if best else None,
        "seconds": elapsed,
        "scores": {s: SCORES.help(s) for s in rank_cfg.scores},
        "rows": [asdict(r) for r in ordered],
    }
    recommended = best.candidate if best else None
    result = RankResult(rows, rank_cfg.score, recommended, len(data), data.classes, elapsed, doc)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "rank.json", doc)
        atomic_write(out / "report.html", rank_report_html(doc))
    return result


def print_ranking(result: RankResult, console: Console, out: Path | None = None) -> None:
    """The ranking as a table: every score with the seconds it took, best first by the
    recommending score."""
    scores = list(result.doc["config"]["scores"])
    table = Table(
        title=f"Transferability ranking ({result.n} examples, by {result.score})",
        caption="under each name: feature width and seconds to extract (one pass shared by a "
        "backbone's layers); under each score: seconds to compute",
    )
    table.add_column("candidate", overflow="fold")
    for s in scores:
        table.add_column(s.replace("-", "-\n"), justify="right", no_wrap=True, min_width=6)
    for r in order_rows(result.rows, result.score):
        cells = []
        for s in scores:
            v = r.scores.get(s)
            cells.append(f"{v:.3g}\n[dim]{r.seconds[s]:.2f}[/]" if v is not None else "[dim]n/a[/]")
        mark = " [green]*[/]" if r.candidate == result.recommended else ""
        feat = f"{r.dim}-d, {r.feature_seconds:.1f} s" + (" cached" if r.cached else "")
        table.add_row(f"{r.candidate}{mark}\n[dim]{feat}[/]", *cells)
    console.print(table)
    for r in result.rows:
        na = [n for n, note in r.notes.items() if note.startswith("not applicable")]
        if na:
            why = r.notes[na[0]].rpartition("; ")[2]
            console.print(f"  [dim]n/a {', '.join(na)}: {why}[/]", highlight=False)
        for name, note in r.notes.items():
            if name not in na:
                console.print(f"  [yellow]{r.candidate}, {name}[/]: {note}", highlight=False)
    if result.recommended:
        console.print(f"[bold]recommended[/] {result.recommended} (highest {result.score})")
    else:
        console.print(f"[yellow]no recommendation[/]: {result.score} applies to no candidate")
    if out is not None:
        console.print(f"ranking written to {out / 'rank.json'} and {out / 'report.html'}")
