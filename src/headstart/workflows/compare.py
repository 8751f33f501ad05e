"""Does transfer help on *this* data? Every strategy, at every label budget, over several
seeds, on the same splits and the same training budget, against training from scratch.

Layout of a comparison folder::

    compare.yaml               the settings (a re-run with other settings is refused)
    cells/<budget>/<seed>/<strategy>/   one run folder per trained model
    comparison.json            per budget and strategy: mean, std, confidence interval;
                               gain over the baseline with its interval and McNemar's test;
                               the verdict; every cell; cells not run
    comparison.csv             the table as printed
    report.html                verdicts, table, label-budget curves, forgetting, and the
                               figures of the best model at the largest budget

The cells are one :mod:`headstart.workflows.sweep`: a cell whose ``metrics.json`` exists is finished
and is never trained again, so a killed comparison run again goes on where it stopped (a
cell killed mid-training resumes from its last epoch checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headstart.backbones import check_backbone
from headstart.config import CompareConfig, RunConfig
from headstart.data import data_fingerprint, per_class_subsample, up_to_per_class
from headstart.data.loading import MIN_VAL_PER_CLASS, Splits, prepare_data
from headstart.errors import ConfigError, RunFolderError
from headstart.evaluation import Cell, read_history, read_predictions, summarise
from headstart.evaluation.report import (
    TRADEOFF_HEADER,
    compare_report_html,
    comparison_header,
    comparison_rows,
    tradeoff_rows,
)
from headstart.evaluation.stats import tradeoff
from headstart.features import EmbeddingCache
from headstart.runfolder import can_resume, check_out_folder, remove_model, write_json
from headstart.storage import atomic_write, locked, write_csv
from headstart.strategies import build_strategy
from headstart.workflows.fit import fit
from headstart.workflows.sweep import REUSED, SKIPPED, Sweep, SweepCell

SETTINGS_FILE = "compare.yaml"
#: what a comparison writes beside its settings (deleted by ``overwrite``)
OUTPUTS = ("cells", "comparison.json", "comparison.csv", "report.html")


@dataclass
class CompareResult:
    out: Path
    summary: dict[str, Any]
    cells: list[Cell]
    not_run: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def cell_dir(out: Path, strategy: str, budget: int, seed: int) -> Path:
    return out / "cells" / f"{budget}-per-class" / f"seed-{seed}" / strategy.replace(":", "-")


def budget_splits(data: Splits, budget: int, seed: int, cfg: RunConfig) -> Splits:
    """``budget`` labelled training examples per class drawn with ``seed``, validation in
    proportion (as ``fit --per-class`` does), and the one fixed test split of every cell.
    A validation split of fewer than ``MIN_VAL_PER_CLASS`` examples per class is not
    drawn: decisions on it would be noise (``fit``'s small-data policy)."""
    idx = per_class_subsample(data.train.labels, budget, seed=seed, classes=data.classes)
    train = data.train.subset(idx)
    val = data.val
    policy = {"validation": "given (--val)" if cfg.data.val else "held out"}
    if not cfg.data.val and len(val):
        val_f = cfg.data.val_fraction
        test_f = 0.0 if cfg.data.test else cfg.data.test_fraction
        n_val = max(1, round(budget * val_f / (1.0 - val_f - test_f)))
        if n_val < MIN_VAL_PER_CLASS:
            val = val.subset(np.arange(0))
            policy["validation"] = (
                f"none: {n_val} per class would be fewer than {MIN_VAL_PER_CLASS}; training "
                "runs its fixed number of epochs"
            )
        else:
            val = val.subset(up_to_per_class(val.labels, n_val, seed))
    return Splits(train, val, data.test, policy)


def cell_config(base: RunConfig, strategy: str, budget: int, seed: int) -> RunConfig:
    """One cell's run: the budget, the strategy, the seed, and the same training budget
    for every strategy (``patience = epochs``: no early stopping; the best validation
    epoch is still the one kept)."""
    return dataclasses.replace(
        base,
        # the draw of labelled examples follows the seed: the cell's config.yaml
        # reproduces its data with `fit` (`budget_splits` draws exactly the same)
        data=dataclasses.replace(base.data, per_class=budget, label_seed=seed),
        strategy=dataclasses.replace(base.strategy, name=strategy),
        train=dataclasses.replace(base.train, seed=seed, patience=base.train.epochs),
    )


def cell_name(strategy: str, budget: int, seed: int) -> str:
    """A cell as the comparison names it in its messages."""
    return f"{strategy}, {budget} per class, seed {seed}"


def seeds_of(base: RunConfig, spec: CompareConfig) -> list[int]:
    """``spec.seeds`` seeds counted from the run's own seed."""
    return [base.train.seed + i for i in range(spec.seeds)]


def _data_fingerprint(data: Splits) -> dict[str, str | None]:
    """The content of the data a comparison folder is bound to."""
    return {
        "train": data_fingerprint(data.train),
        "validation": data_fingerprint(data.val),
        "test": data_fingerprint(data.test) if data.test is not None else None,
    }


def _check_budgets(data: Splits, spec: CompareConfig) -> None:
    counts = np.bincount(data.train.labels, minlength=len(data.classes))
    smallest = int(counts.min())
    if max(spec.budgets) > smallest:
        name = data.classes[int(counts.argmin())]
        raise ConfigError(
            f"label budgets of at most {smallest} per class (the training examples of the "
            f"smallest class, {name!r})",
            f"--budgets {','.join(map(str, spec.budgets))}",
            f"pass budgets up to {smallest}, or add data to the small classes",
        )


def _read_cell(
    run_dir: Path, strategy: str, budget: int, seed: int, test_labels: np.ndarray
) -> tuple[Cell, dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    preds = read_predictions(run_dir)
    if preds["split"] != "test" or not np.array_equal(preds["labels"], test_labels):
        raise RunFolderError(
            f"the cell {run_dir} scored on this comparison's test set "
            f"({len(test_labels)} examples)",
            f"predictions of its {preds['split']} split ({len(preds['labels'])} examples)",
            "pass --overwrite (or another --out) to run the comparison again",
        )
    correct = preds["logits"].argmax(1) == preds["labels"]
    split = preds["split"]
    cal = metrics.get("calibration", {}).get(split, {})
    m = metrics[split]
    cell = Cell(
        strategy=strategy,
        budget=budget,
        seed=seed,
        accuracy=float(m["accuracy"]),
        macro_f1=float(m["macro_f1"]),
        correct=correct,
        ece_before=cal.get("ece_before"),
        ece_after=cal.get("ece_after"),
        seconds=float(metrics.get("seconds", 0.0)),
    )
    return cell, metrics


@locked("comparison")
def run_compare(
    base: RunConfig,
    spec: CompareConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
    cache: EmbeddingCache | None = None,
) -> CompareResult:
    """Train every (strategy, budget, seed) cell not yet finished, then summarise all."""
    t0 = time.perf_counter()
    console = console or Console()
    out = Path(out)
    check_out_folder(out)
    for name in spec.strategies:  # a typo or a head conflict must not cost a preflight
        build_strategy(dataclasses.replace(base.strategy, name=name)).head_name()
    check_backbone(base.backbone)
    if spec.baseline not in spec.strategies:
        console.print(
            f"[yellow]note[/] the baseline {spec.baseline!r} is not among the strategies: "
            "there will be no gains and no verdict"
        )
    # everything that can be checked is checked before the folder is bound to settings
    data_cfg = dataclasses.replace(base.data, per_class=None)
    # the pool's validation split is kept: each budget draws its own (or none) from it
    data = prepare_data(data_cfg, console, progress, small_data=False)
    if data.test is None or len(data.test) == 0:
        raise ConfigError(
            "a test split to compare the strategies on",
            "none (test_fraction 0 and no --test)",
            "pass --test DIR or a test fraction above 0",
        )
    _check_budgets(data, spec)
    cells_of = {
        cell_name(name, budget, seed): (name, budget, seed)
        for budget in spec.budgets
        for seed in seeds_of(base, spec)
        for name in spec.strategies
    }
    cache = cache or EmbeddingCache()
    quiet = Console(quiet=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=True,
    )
    task = bar.add_task("comparison", total=len(cells_of))
    split_cache: dict[tuple[int, int], Splits] = {}
    resumed: set[str] = set()

    def train(label: str, name: str, budget: int, seed: int, run_dir: Path) -> dict[str, Any]:
        bar.update(task, description=label)
        if (budget, seed) not in split_cache:
            split_cache.clear()
            split_cache[(budget, seed)] = budget_splits(data, budget, seed, base)
        resume = can_resume(run_dir)
        if resume:
            resumed.add(label)
        return fit(
            cell_config(base, name, budget, seed),
            run_dir,
            resume=resume,
            overwrite=not resume,
            progress=False,
            console=quiet,
            data=split_cache[(budget, seed)],
            cache=cache,
        ).metrics

    grid = [
        SweepCell(
            label,
            partial(train, label, name, budget, seed),
            folder=cell_dir(Path(), name, budget, seed).as_posix(),
        )
        for label, (name, budget, seed) in cells_of.items()
    ]
    sweep = Sweep.bind(
        out,
        grid,
        {"compare": dataclasses.asdict(spec), **base.to_dict()},
        data=_data_fingerprint(data),
        overwrite=overwrite,
        settings_file=SETTINGS_FILE,
        result_file="metrics.json",
        # the time budget may change between runs: it limits a run, not the results
        may_change=("compare.time_budget", "compare.keep_models", "train.tracker"),
        owned=OUTPUTS,
        kind="comparison",
    )
    cells: list[Cell] = []
    metrics_of: dict[tuple[str, int, int], dict[str, Any]] = {}
    not_run: list[dict[str, Any]] = []
    budget_s = None if spec.time_budget is None else 60 * spec.time_budget
    with bar:
        for outcome in sweep.run(budget_s=budget_s):
            name, budget, seed = cells_of[outcome.name]
            bar.advance(task)
            if outcome.state == SKIPPED:
                not_run.append({"strategy": name, "budget": budget, "seed": seed})
                continue
            if outcome.state == REUSED:
                state = "already finished"
            else:
                state = "resumed and finished" if outcome.name in resumed else "finished"
            cell, metrics = _read_cell(outcome.folder, name, budget, seed, data.test.labels)
            cells.append(cell)
            metrics_of[(name, budget, seed)] = metrics
            console.print(
                f"  {outcome.name}: accuracy {cell.accuracy:.4f}, macro-F1 {cell.macro_f1:.4f} "
                f"({state}, {cell.seconds:.0f} s)",
                highlight=False,
            )
    if not_run:
        console.print(
            f"[yellow]time budget[/] of {spec.time_budget} min reached: {len(not_run)} cells "
            "not run; run the same command again to go on"
        )
    summary = summarise(cells, spec.baseline, spec.alpha, spec.confidence)
    result = CompareResult(out, summary, cells, not_run, time.perf_counter() - t0)
    trade = tradeoff(_tradeoff_rows(cells, metrics_of))
    _write_outputs(result, spec, metrics_of, data, trade)
    print_comparison(summary, console)
    print_tradeoff(trade, console)
    if not not_run:  # a comparison still going on may yet need any model
        freed = keep_models(out, cells, spec.keep_models)
        if freed:
            console.print(
                f"[bold]models[/] kept: {spec.keep_models} (--keep-models); "
                f"{freed / 2**20:.1f} MB of other cells' models removed"
            )
    console.print(f"[bold green]comparison[/] {out} (report.html, comparison.json, .csv)")
    return result


def kept_cells(cells: list[Cell], keep: str) -> set[tuple[str, int, int]]:
    """The cells whose model ``--keep-models keep`` keeps: all, none, or (best) every seed
    of the strategy with the highest mean test accuracy at each budget."""
    if keep == "all":
        return {(c.strategy, c.budget, c.seed) for c in cells}
    if keep == "none":
        return set()
    kept: set[tuple[str, int, int]] = set()
    for budget in sorted({c.budget for c in cells}):
        at = [c for c in cells if c.budget == budget]
        by_strategy: dict[str, list[float]] = {}
        for c in at:
            by_strategy.setdefault(c.strategy, []).append(c.accuracy)
        best = max(by_strategy, key=lambda s: float(np.mean(by_strategy[s])))
        kept |= {(c.strategy, c.budget, c.seed) for c in at if c.strategy == best}
    return kept


def keep_models(out: Path, cells: list[Cell], keep: str) -> int:
    """Remove the models of the cells ``keep`` does not keep (their metrics, history and
    test predictions stay: the report reads only those); returns the bytes freed."""
    kept = kept_cells(cells, keep)
    freed = 0
    for c in cells:
        folder = cell_dir(out, c.strategy, c.budget, c.seed)
        if (c.strategy, c.budget, c.seed) not in kept and (folder / "model.safetensors").exists():
            freed += remove_model(folder, f"compare --keep-models {keep}")
    return freed


def _forgetting_rows(metrics_of: dict[tuple[str, int, int], dict[str, Any]]) -> list[dict]:
    rows = []
    for (name, budget, seed), m in metrics_of.items():
        f = m.get("forgetting", {})
        if f.get("applicable"):
            measure = f.get("measure", "top1_agreement")
            rows.append(
                {
                    "strategy": name,
                    "budget": budget,
                    "seed": seed,
                    "agreement": f.get("kept", f.get("top1_agreement")),
                    "measure": measure,
                }
            )
    return rows


def _tradeoff_rows(
    cells: list[Cell], metrics_of: dict[tuple[str, int, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per cell for :func:`tradeoff`: accuracy, what is kept of the source task
    and the trainable parameters of the phase that trained the most."""
    rows = []
    for c in cells:
        m = metrics_of.get((c.strategy, c.budget, c.seed), {})
        f = m.get("forgetting", {})
        params = m.get("params", {})
        trained = params.get("train") or params.get("probe") or {}
        rows.append(
            {
                "strategy": c.strategy,
                "budget": c.budget,
                "seed": c.seed,
                "accuracy": c.accuracy,
                "kept": f.get("kept", f.get("top1_agreement")) if f.get("applicable") else None,
                "measure": f.get("measure", "top1_agreement") if f.get("applicable") else None,
                "trainable": trained.get("trainable"),
            }
        )
    return rows


def _write_outputs(
    result: CompareResult,
    spec: CompareConfig,
    metrics_of: dict[tuple[str, int, int], dict[str, Any]],
    data: Splits,
    trade: dict[str, Any],
) -> None:
    out, summary = result.out, result.summary
    forgetting = _forgetting_rows(metrics_of)
    doc = {
        **summary,
        "strategies": spec.strategies,
        "seeds": spec.seeds,
        "test_examples": len(data.test) if data.test is not None else 0,
        "cells": [
            {
                "strategy": c.strategy,
                "budget": c.budget,
                "seed": c.seed,
                "accuracy": c.accuracy,
                "macro_f1": c.macro_f1,
                "ece_before": c.ece_before,
                "ece_after": c.ece_after,
                "seconds": c.seconds,
                "run_dir": str(cell_dir(out, c.strategy, c.budget, c.seed).relative_to(out)),
            }
            for c in result.cells
        ],
        "forgetting": forgetting,
        "tradeoff": trade,
        "not_run": result.not_run,
        "seconds": result.seconds,
    }
    write_json(out / "comparison.json", doc)
    write_csv(
        out / "comparison.csv", [comparison_header(spec.confidence), *comparison_rows(summary)]
    )
    example = _example(out, summary, metrics_of, data)
    notes = [
        f"{len(data.test) if data.test is not None else 0} test examples, the same for every "
        f"cell; {spec.seeds} seeds per budget, each drawing its own labelled examples.",
        f"Gains are in accuracy points with paired {100 * spec.confidence:g}% t intervals "
        "over seeds. McNemar's test runs per seed on that seed's paired test predictions; "
        "a verdict of 'helps' or 'negative transfer' needs p below alpha divided by the "
        "number of pretrained strategies in every seed.",
    ]
    if result.not_run:
        notes.append(f"{len(result.not_run)} cells not run yet (time budget).")
    page = compare_report_html(
        f"headstart comparison: {data.train.name}", summary, forgetting, example, notes, trade
    )
    atomic_write(out / "report.html", page)


def _example(
    out: Path,
    summary: dict[str, Any],
    metrics_of: dict[tuple[str, int, int], dict[str, Any]],
    data: Splits,
) -> dict[str, Any] | None:
    """The best strategy at the largest budget (its first seed) for the detailed figures."""
    if not metrics_of or data.test is None:
        return None
    budget = max(b for _, b, _ in metrics_of)
    entry = summary["budgets"][str(budget)]
    best = entry["verdict"].get("best")
    if best is None:
        best = max(entry["strategies"], key=lambda s: entry["strategies"][s]["accuracy"]["mean"])
    seed = min(s for n, b, s in metrics_of if n == best and b == budget)
    run_dir = cell_dir(out, best, budget, seed)
    return {
        "caption": f"The best model at {budget} per class: {best}, seed {seed}",
        "metrics": metrics_of[(best, budget, seed)],
        "history": read_history(run_dir / "history.jsonl"),
        "preds": read_predictions(run_dir),
        "samples": data.test,
    }


def print_comparison(summary: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Transfer vs {summary['baseline']} (test set)")
    for i, col in enumerate(comparison_header(summary["confidence"])):
        table.add_column(col, justify="left" if i < 2 else "right", no_wrap=True)
    for row in comparison_rows(summary):
        table.add_row(*row)
    # written to a file or a pipe the console is 80 columns: keep the rows whole there
    if not console.is_terminal:
        console.width = max(console.width, 170)
    console.print(table)
    for b, entry in sorted(summary["budgets"].items(), key=lambda kv: int(kv[0])):
        v = entry["verdict"]
        color = {"helps": "green", "negative transfer": "red"}.get(str(v["verdict"]), "yellow")
        console.print(f"[bold]{b} per class[/]: [{color}]{v['text']}[/]")


def print_tradeoff(trade: dict[str, Any], console: Console) -> None:
    """The trade-off table and each budget's line on what is kept of the source task."""
    if not any(e["front"] for e in trade.values()):
        return
    table = Table(title="Accuracy, forgetting and trainable parameters (means over seeds)")
    for i, col in enumerate(TRADEOFF_HEADER):
        table.add_column(col, justify="left" if i < 2 else "right", no_wrap=True)
    for row in tradeoff_rows(trade):
        table.add_row(*row)
    console.print(table)
    for b, entry in sorted(trade.items(), key=lambda kv: int(kv[0])):
        console.print(f"[bold]{b} per class[/], forgetting: {entry['text']}")
