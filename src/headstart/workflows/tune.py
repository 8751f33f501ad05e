"""``headstart tune``: hyperparameter search on Optuna.

Each trial draws its settings from the search space with Optuna's TPE sampler (seeded,
multivariate over the parameters trials share, so conditional parameters are sampled where
they apply), trains one ordinary run folder ``OUT/trials/NNNN`` with :func:`fit` and
returns its validation macro-F1. The training loop reports every epoch's validation
macro-F1 to the trial; the pruner (median, or successive halving) stops a poor trial
there, and its folder is marked ``pruned.json``.

The test split is held back from the search: trials are trained and scored on the training
and validation splits only, and after the search the best trial (copied to ``OUT/best``,
loadable by ``predict``) is scored on the test split once; that figure is the only test
figure of a tuning, reported as such.

The study lives in Optuna storage: ``OUT/study.db`` (SQLite) unless ``--storage`` names
another (a PostgreSQL URL shared by workers on many machines, or a journal file ending in
``.log``). Running the command again adds ``--trials`` trials to the same study.
``--workers N`` starts N-1 more worker processes on this machine on the same storage,
each on its share of the CPU threads. The folder is bound to its settings and data like
any sweep (:mod:`headstart.workflows.sweep`): a rerun with other data or another space is
refused.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from headstart.config import RunConfig, StrategyConfig, TuneConfig
from headstart.data.dataset import data_fingerprint
from headstart.data.loading import Splits, prepare_data
from headstart.errors import ConfigError
from headstart.evaluation import calibration_summary, classification_metrics
from headstart.evaluation.report import tune_report_html
from headstart.runfolder import Predictor, check_out_folder, write_json
from headstart.storage import atomic_write
from headstart.strategies import build_strategy
from headstart.training.callbacks import Callback, TrainState
from headstart.workflows.fit import fit
from headstart.workflows.sweep import Sweep, SweepCell

TRIALS = "trials"
BEST = "best"
RESULTS_FILE = "tune.json"
SETTINGS_FILE = "tune.yaml"
PRUNED_FILE = "pruned.json"
REPORT_FILE = "report.html"
#: the objective every trial returns
OBJECTIVE = "validation macro-F1"

#: where each parameter of the space goes in the run config; ``strategy`` and ``freeze``
#: (the depth of freeze:N) name the strategy
ROUTES: dict[str, tuple[str, str]] = {
    "lr": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "weight_decay": ("train", "weight_decay"),
    "label_smoothing": ("train", "label_smoothing"),
    "epochs": ("train", "epochs"),
    "drop_rate": ("backbone", "drop_rate"),
    "augment": ("data", "augment"),
    "layer_decay": ("strategy", "layer_decay"),
    "backbone_lr_scale": ("strategy", "backbone_lr_scale"),
}
PARAMETERS = ("strategy", "freeze", *ROUTES)
#: the strategies of the default space: the transfer strategies for a labelled dataset
#: (no domain adaptation, few-shot or from-scratch ones), from cheapest to dearest
DEFAULT_STRATEGIES = ("linear-probe", "lp-ft", "finetune", "gradual", "freeze", "l2-sp", "lora")
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "strategy": {"choices": list(DEFAULT_STRATEGIES)},
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "batch_size": {"choices": [16, 32, 64]},
    "weight_decay": {"low": 1e-4, "high": 0.1, "log": True},
    "drop_rate": {"low": 0.0, "high": 0.5},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "augment": {"choices": ["none", "light", "strong"]},
    "layer_decay": {"low": 0.5, "high": 1.0},
    "freeze": {"low": 1, "high": 4},
}
RANGE_KEYS = {"low", "high", "log", "step"}
#: the parameters that only a training loop reads
LOOP_PARAMETERS = {"lr", "batch_size", "weight_decay", "label_smoothing", "epochs", "drop_rate",
                   "augment", "layer_decay", "backbone_lr_scale"}  # fmt: skip
#: tries at opening the study (workers starting together race to create its schema)
OPEN_ATTEMPTS = 3


@dataclass
class TuneResult:
    out: Path
    doc: dict[str, Any]


# -- the search space ------------------------------------------------------------------------
def read_space(path: str | None) -> dict[str, dict[str, Any]]:
    """The space of ``path`` (YAML: a mapping of parameter to ``choices: [...]`` or
    ``low``/``high`` with optional ``log``/``step``), or the default one. Unknown
    parameters and malformed ranges are errors naming what is allowed."""
    if path is None:
        return {k: dict(v) for k, v in DEFAULT_SPACE.items()}
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError("a readable YAML search space", f"{path}: {e}", "fix the file") from e
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(
            "a mapping of parameters to ranges", f"{path}: {type(doc).__name__}",
            "write e.g. lr: {low: 1.0e-4, high: 1.0e-2, log: true}",
        )  # fmt: skip
    for name, spec in doc.items():
        if name not in PARAMETERS:
            raise ConfigError(
                f"search-space parameters among {', '.join(PARAMETERS)}",
                f"{name!r} in {path}",
                "remove it or use one of those names",
            )
        _check_range(name, spec, path)
    return doc


def _check_range(name: str, spec: Any, path: str) -> None:
    ok = isinstance(spec, dict) and (
        (set(spec) == {"choices"} and isinstance(spec["choices"], list) and spec["choices"])
        or ({"low", "high"} <= set(spec) <= RANGE_KEYS and spec["low"] < spec["high"])
    )
    if not ok:
        raise ConfigError(
            f"{name}: either choices: [a list] or low < high (with optional log, step)",
            f"{name}: {spec!r} in {path}",
            f"write e.g. {name}: {{low: 0.0, high: 0.5}}",
        )


def applies(name: str, strategy: str, modality: str) -> bool:
    """Whether parameter ``name`` means anything for a trial of ``strategy``: the training
    loop's settings only for strategies with a training loop (a linear probe's head is
    fitted in closed form on cached features, its regularisation cross-validated), layer
    decay and the body's rate only where the loop trains the body's weights, the freeze
    depth only for freeze, augmentation only for images."""
    if name == "freeze":
        return strategy == "freeze"
    s = build_strategy(StrategyConfig(name="freeze:1" if strategy == "freeze" else strategy))
    if name in LOOP_PARAMETERS and not s.loop_trains:
        return False
    if name == "augment":
        return modality == "image"
    if name in ("layer_decay", "backbone_lr_scale"):
        return s.trains_body and s.part is None
    return True


def same_trial(trial: Any) -> Any | None:
    """The first finished trial of the study with ``trial``'s parameters, or None.
    Every trial trains at the same seed, so its score is that trial's: Optuna's answer to
    repeated samples (its FAQ) rather than training the same run again."""
    import optuna

    done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return next((t for t in done if t.params == trial.params), None)


def suggest(trial: Any, space: dict[str, dict[str, Any]], base: str, modality: str) -> dict:
    """One trial's parameters: the strategy first (or the base config's), then each other
    parameter that applies to it."""
    params: dict[str, Any] = {}
    if "strategy" in space:
        params["strategy"] = trial.suggest_categorical("strategy", space["strategy"]["choices"])
    strategy = params.get("strategy", base)
    for name, spec in space.items():
        if name == "strategy" or not applies(name, strategy, modality):
            continue
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif name in ("freeze", "batch_size", "epochs") or (
            isinstance(spec["low"], int) and (isinstance(spec["high"], int) and not spec.get("log"))
        ):
            params[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1))
            )
        else:
            params[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                step=spec.get("step"),
            )  # fmt: skip
    return params


def configure(base: RunConfig, params: dict[str, Any], base_strategy: str) -> RunConfig:
    """``base`` with a trial's parameters in their sections."""
    doc = base.to_dict()
    strategy = params.get("strategy", base_strategy)
    if strategy == "freeze":
        strategy = f"freeze:{params.get('freeze', 1)}"
    doc["strategy"]["name"] = strategy
    for name, value in params.items():
        if name in ROUTES:
            section, field = ROUTES[name]
            doc[section][field] = value
    return RunConfig.from_dict(doc)


# -- the study ---------------------------------------------------------------------------------
def storage_url(spec: TuneConfig, out: Path) -> str:
    return spec.storage or f"sqlite:///{(out / 'study.db').resolve()}"


def open_study(spec: TuneConfig, out: Path, name: str, worker: int = 0) -> Any:
    """The study ``name`` in the storage (created if new), with the seeded TPE sampler and
    the pruner asked for; an unreachable storage is a clear error."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = storage_url(spec, out)
    pruner: Any = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "halving": optuna.pruners.SuccessiveHalvingPruner(),
        "none": optuna.pruners.NopPruner(),
    }[spec.pruner]
    for attempt in range(OPEN_ATTEMPTS):
        try:
            study = optuna.create_study(
                study_name=name,
                storage=_storage(optuna, url),
                load_if_exists=True,
                direction="maximize",
                sampler=_sampler(optuna, spec.seed, worker, 0),
                pruner=pruner,
            )
            held = len(study.get_trials(deepcopy=False))
            if held:  # run again: seeded afresh, or its random start repeats the first trials
                study.sampler = _sampler(optuna, spec.seed, worker, held)
            return study
        except Exception as e:  # SQLAlchemy, psycopg and file errors alike
            if attempt < OPEN_ATTEMPTS - 1:
                # workers creating one new schema at once collide (a duplicate key): the
                # schema is there a moment later
                time.sleep(1.0 + worker)
                continue
            raise ConfigError(
                "a reachable Optuna storage (postgresql://USER@HOST:PORT/DB, sqlite:///FILE "
                "or a journal file ending in .log)",
                f"{url}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "start the database server, check the URL, or leave --storage out (SQLite "
                "in --out)",
            ) from e
    raise AssertionError("unreachable")


def _sampler(optuna: Any, seed: int, worker: int, held: int) -> Any:
    """TPE seeded by the tuning seed, the worker and how many trials the study held when
    this process opened it (each its own stream of samples, reproducibly)."""
    return optuna.samplers.TPESampler(
        seed=seed + 1000 * worker + 100_003 * held, multivariate=True, group=True
    )


def _storage(optuna: Any, url: str) -> Any:
    if url.endswith(".log") and "://" not in url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url))
    return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))


def _engine_kwargs(url: str) -> dict[str, Any]:
    """A PostgreSQL server that does not answer fails in seconds, not minutes."""
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    return {}


class PruningReport(Callback):
    """Sends each epoch's validation macro-F1 to the trial and stops the run (raising
    ``optuna.TrialPruned``) when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.epochs = 0

    def on_epoch_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        import optuna

        self.epochs += 1
        self.trial.set_user_attr("epochs", self.epochs)
        value = float(logs["val_macro_f1"])
        if not math.isfinite(value):
            return
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {state.epoch} at {value:.4f}")


def _count(study: Any) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_tune(
    base: RunConfig,
    spec: TuneConfig,
    out: str | Path,
    *,
    study_name: str | None = None,
    until: int | None = None,
    worker: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> TuneResult | None:
    """The search (``spec.trials`` more trials in the study), then, unless ``worker``, the
    best trial scored on the test split, ``OUT/best``, ``tune.json`` and the report.
    ``until``: the study's total of finished trials to stop at, and ``worker`` the number
    of a worker process (what :func:`work` passes; its sampler is seeded apart)."""
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError(
            "Optuna for headstart tune", "it is not installed", "pip install 'headstart[tune]'"
        )
    import optuna

    console = console or Console()
    out = Path(out)
    check_out_folder(out)
    name = study_name or f"headstart-{out.resolve().name}"
    space = read_space(spec.space)
    data = prepare_data(base.data, console, progress, small_data=False)
    if not len(data.val):
        raise ConfigError(
            "a validation split to tune on", "none", "pass --val DIR or more labelled data"
        )
    modality = "text" if hasattr(data.train, "texts") else "image"
    base_strategy = "lp-ft" if base.strategy.name == "auto" else base.strategy.name
    held_back = data.test
    search = Splits(data.train, data.val, data.val.subset(np.arange(0)))  # no test split
    settings = {"run": _shared(base), "space": space, "pruner": spec.pruner, "seed": spec.seed}
    fingerprints = {
        "train": data_fingerprint(data.train),
        "validation": data_fingerprint(data.val),
    }
    owned = (TRIALS, BEST, RESULTS_FILE, REPORT_FILE, "study.db")

    def bind(cells: Sequence[SweepCell], fresh: bool = False) -> Sweep:
        return Sweep.bind(
            out,
            cells,
            settings,
            data=fingerprints,
            overwrite=fresh,
            settings_file=SETTINGS_FILE,
            result_file="metrics.json",
            owned=owned,
            kind="tuning",
        )

    bind([], fresh=overwrite and not worker)
    study = open_study(spec, out, name, worker)
    target = until if until is not None else _count(study) + spec.trials
    quiet = Console(quiet=True)

    def train(trial: Any, params: dict[str, Any], folder: Path) -> dict[str, Any]:
        cfg = configure(base, params, base_strategy)
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, seed=spec.seed, tracker=base.train.tracker)
        )
        report = PruningReport(trial)
        try:
            res = fit(cfg, folder, overwrite=True, progress=False, console=quiet, data=search,
                      callbacks=[report])  # fmt: skip
        except optuna.TrialPruned as e:
            shutil.rmtree(folder / "checkpoint", ignore_errors=True)
            write_json(folder / PRUNED_FILE, {"trial": trial.number, "epochs": report.epochs,
                                              "why": str(e)})  # fmt: skip
            raise
        if "epochs" not in trial.user_attrs:  # a probe: no epochs
            trial.set_user_attr("epochs", 0)
        return res.metrics

    def objective(trial: Any) -> float:
        params = suggest(trial, space, base_strategy, modality)
        same = same_trial(trial)
        if same is not None:  # nothing new to train: that trial's run and score
            for key in ("folder", "out"):
                trial.set_user_attr(key, same.user_attrs.get(key))
            trial.set_user_attr("same_as", same.number)
            trial.set_user_attr("epochs", 0)
            trial.set_user_attr("seconds", 0.0)
            if progress:
                console.print(
                    f"trial {trial.number}: the parameters of trial {same.number}, its "
                    f"{OBJECTIVE} {same.value:.4f} (not trained again)", highlight=False,
                )  # fmt: skip
            return float(same.value)
        cell = f"{TRIALS}/{trial.number:04d}"
        trial.set_user_attr("folder", cell)
        trial.set_user_attr("out", str(out.resolve()))
        t0 = time.perf_counter()
        sweep = bind([SweepCell(cell, partial(train, trial, params))])
        outcome = next(sweep.run())
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        value = float((outcome.result or {})["validation"]["macro_f1"])
        if progress:
            console.print(
                f"trial {trial.number}: {OBJECTIVE} {value:.4f} "
                f"({_params_text(params)})", highlight=False,
            )  # fmt: skip
        return value

    procs = [] if worker else _start_workers(base, spec, out, name, target)
    stop = optuna.study.MaxTrialsCallback(
        target, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    try:
        if _count(study) < target:
            study.optimize(objective, callbacks=[stop], timeout=spec.time_budget,
                           catch=(), gc_after_trial=True)  # fmt: skip
    finally:
        for p in procs:
            p.wait()
    bad = [p.returncode for p in procs if p.returncode]
    if bad:
        raise ConfigError(
            "every worker to finish", f"{len(bad)} worker(s) failed (exit {bad[0]})",
            f"see {out / 'workers'} for their logs",
        )  # fmt: skip
    if worker:
        return None
    doc = summarise(study, out, base, spec, name, held_back, console)
    return TuneResult(out, doc)


def _shared(base: RunConfig) -> dict[str, Any]:
    """The run settings every trial shares (a trial's parameters and seed aside)."""
    doc = base.to_dict()
    doc["train"].pop("tracker", None)
    return doc


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _start_workers(
    base: RunConfig, spec: TuneConfig, out: Path, name: str, target: int
) -> list[Any]:
    """``spec.workers - 1`` more processes on the same study (``OUT/workers/job.yaml``
    says what they run), each on its share of the CPU threads, as is this one."""
    if spec.workers <= 1:
        return []
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    import torch

    torch.set_num_threads(threads)
    logs = out / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    job = {
        "run": base.to_dict(),
        "tune": {**dataclasses.asdict(spec), "storage": storage_url(spec, out), "workers": 1},
        "study": name,
        "until": target,
        "out": str(out),
    }
    atomic_write(logs / "job.yaml", yaml.safe_dump(job, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = "import sys; from headstart.workflows.tune import work; work(*sys.argv[1:])"
    procs = []
    for i in range(1, spec.workers):
        log = open(logs / f"worker-{i}.log", "w")  # noqa: SIM115 (the process holds it)
        cmd = [sys.executable, "-c", code, str(logs / "job.yaml"), str(i)]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def work(job_file: str, number: str) -> None:
    """A worker process: trials on the study of ``job_file`` until it holds its total."""
    job = yaml.safe_load(Path(job_file).read_text())
    run_tune(
        RunConfig.from_dict(job["run"]),
        TuneConfig(**job["tune"]),
        job["out"],
        study_name=job["study"],
        until=int(job["until"]),
        worker=int(number),
        progress=False,
    )


# -- after the search ----------------------------------------------------------------------------
def summarise(
    study: Any,
    out: Path,
    base: RunConfig,
    spec: TuneConfig,
    name: str,
    test: Any,
    console: Console,
) -> dict[str, Any]:
    """``OUT/best`` (the best trial's folder) scored once on the test split, ``tune.json``
    and ``report.html``."""
    import optuna

    trials = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]  # fmt: skip
    if not complete:
        raise ConfigError(
            "at least one finished trial", "none (all pruned or failed)",
            "run again with more --trials or --pruner none",
        )  # fmt: skip
    here = [t for t in complete if t.user_attrs.get("out") == str(out.resolve())]
    if not here:
        raise ConfigError(
            "a finished trial trained into this --out", "none: the study's trials ran in "
            "other workers' folders", "summarise from a worker that trained trials",
        )  # fmt: skip
    best = max(here, key=lambda t: t.value)
    study_best = study.best_trial
    best_dir = out / BEST
    if best_dir.exists():
        shutil.rmtree(best_dir)
    shutil.copytree(out / best.user_attrs["folder"], best_dir)
    tested = score_on_test(best_dir, test)
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study, evaluator=evaluator)
            importances = {k: float(v) for k, v in found.items()}
        except (ValueError, RuntimeError):  # too few trials share a parameter
            importances = {}
    doc: dict[str, Any] = {
        "study": name,
        "storage": storage_url(spec, out).replace(str(out.resolve()), "OUT"),
        "objective": OBJECTIVE,
        "direction": "maximize",
        "pruner": spec.pruner,
        "trials": trials,
        "best": {
            "number": best.number,
            "params": best.params,
            "validation_macro_f1": best.value,
            "folder": BEST,
            "trial_folder": best.user_attrs["folder"],
            "test": tested,
        },
        "study_best": {
            "number": study_best.number,
            "validation_macro_f1": study_best.value,
            "here": study_best.number == best.number,
            "out": study_best.user_attrs.get("out"),
        },
        "importances": importances,
        "counts": {
            s: sum(1 for t in trials if t["state"] == s)
            for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
        },
        "epochs_trained": int(sum(t.get("epochs") or 0 for t in trials)),
    }
    if study_best.number != best.number:
        console.print(
            f"[yellow]note[/] the study's best trial, {study_best.number} "
            f"({study_best.value:.4f}), was trained by another worker into "
            f"{study_best.user_attrs.get('out')}; best/ here is this worker's best"
        )
    write_json(out / RESULTS_FILE, doc)
    atomic_write(out / REPORT_FILE, tune_report_html(doc))
    print_tune(doc, console)
    return doc


def score_on_test(run: Path, test: Any) -> dict[str, Any]:
    """The best trial on the test split: the one time a tuning reads it."""
    model = Predictor.load(run, "auto")
    logits = model.logits(test, 64)
    metrics = classification_metrics(test.labels, logits.argmax(1).numpy(), model.classes)
    metrics["calibration"] = calibration_summary(logits, test.labels, model.temperature)
    return metrics


def _trial_row(t: Any) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": t.params,
        "epochs": t.user_attrs.get("epochs"),
        "seconds": t.user_attrs.get("seconds"),
        "folder": t.user_attrs.get("folder"),
        "same_as": t.user_attrs.get("same_as"),
        "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
    }


def print_tune(doc: dict[str, Any], console: Console, top: int = 5) -> None:
    rows = sorted(
        (t for t in doc["trials"] if t["state"] == "COMPLETE" and t.get("same_as") is None),
        key=lambda t: -(t["value"] if t["value"] is not None else -np.inf),
    )[:top]
    table = Table(title=f"Top trials by {OBJECTIVE} (of {len(doc['trials'])})")
    for col in ("trial", OBJECTIVE, "epochs", "seconds", "parameters"):
        table.add_column(col)
    for t in rows:
        table.add_row(
            str(t["number"]), f"{t['value']:.4f}", str(t.get("epochs") or 0),
            f"{t.get('seconds') or 0:.0f}", _params_text(t["params"]),
        )  # fmt: skip
    console.print(table)
    c = doc["counts"]
    repeats = sum(1 for t in doc["trials"] if t.get("same_as") is not None)
    again = f" ({repeats} repeating an earlier trial's parameters, not trained again)"
    console.print(
        f"{c['COMPLETE']} finished{again if repeats else ''}, {c['PRUNED']} pruned; "
        f"{doc['epochs_trained']} epochs"
    )
    b = doc["best"]
    console.print(
        f"[bold]best[/] trial {b['number']}: {OBJECTIVE} {b['validation_macro_f1']:.4f}; "
        f"on the test split (scored once, for this trial only): accuracy "
        f"{b['test']['accuracy']:.4f}, macro-F1 {b['test']['macro_f1']:.4f}; run folder "
        f"{b['folder']}/",
        highlight=False,
    )
