"""The ``headstart`` command. Thin: it turns options into configs and calls the library."""

import dataclasses
import errno
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Only light modules at import time: the library (torch and the rest) is imported inside
# the commands, so that `headstart --help` answers at once (tests/unit/test_cli_light.py
# holds this). Defaults and help come from the config dataclasses. No `from __future__
# import annotations` here: Typer would evaluate every option's annotation string at
# start-up.
from headstart.config import (
    SECTIONS,
    SMALL_IMAGE_SIZE,
    AdaptConfig,
    BackboneConfig,
    CompareConfig,
    DataConfig,
    EmbedTrainConfig,
    EvalConfig,
    ExportConfig,
    FewShotConfig,
    MetaConfig,
    PredictConfig,
    RankConfig,
    RunConfig,
    ServeConfig,
    StrategyConfig,
    TrainConfig,
    TuneConfig,
    ZeroShotConfig,
    default_of,
    help_for,
)
from headstart.errors import ConfigError, HeadstartError

app = typer.Typer(
    name="headstart",
    help="Transfer learning for small datasets: fit, evaluate, predict, compare backbones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


#: what the help of an option adds to its config field's help
_HELP_EXTRA: dict[tuple[type, str], str] = {
    (StrategyConfig, "name"): " `headstart strategies` lists the registered names (freeze "
    "takes :N).",
    (StrategyConfig, "head"): " `headstart strategies` lists the registered heads.",
}


def _opt(cls: type, name: str, *flags: str, csv: bool = False, extra: str = "") -> Any:
    """A Typer option whose help text is the config field's own (one source of truth);
    ``csv``: a list field given as one comma-separated value."""
    help_text = help_for(cls, name) + _HELP_EXTRA.get((cls, name), "") + extra
    if csv:
        help_text += " Comma-separated."
    return typer.Option(*flags, help=help_text)


def _d(cls: type, name: str) -> Any:
    """The config field's default, so the CLI and the library cannot disagree."""
    return default_of(cls, name)


def _csv_d(cls: type, name: str) -> str:
    """The default of a list field, as the comma-separated value an option takes."""
    return ",".join(str(v) for v in default_of(cls, name))


# options that several commands share: declared once
ALLOW_DOWNLOAD_OPT = Annotated[bool, _opt(BackboneConfig, "allow_download", "--allow-download")]
AUGMENT_OPT = Annotated[str, _opt(DataConfig, "augment", "--augment")]
TTA_OPT = Annotated[str, _opt(DataConfig, "tta", "--tta")]
FEATURES_OPT = Annotated[str, _opt(BackboneConfig, "features", "--features")]
BACKBONE_LR_SCALE_OPT = Annotated[
    float, _opt(StrategyConfig, "backbone_lr_scale", "--backbone-lr-scale")
]
BACKBONE_OPT = Annotated[str, _opt(BackboneConfig, "name", "--backbone", "-b")]
BATCH_SIZE_OPT = Annotated[int, _opt(TrainConfig, "batch_size", "--batch-size")]
BN_STATS_OPT = Annotated[str, _opt(StrategyConfig, "bn_stats", "--bn-stats")]
DEVICE_OPT = Annotated[str, _opt(TrainConfig, "device", "--device")]
DROPOUT_OPT = Annotated[float, _opt(BackboneConfig, "drop_rate", "--dropout")]
EPOCHS_OPT = Annotated[int, _opt(TrainConfig, "epochs", "--epochs")]
HEAD_C_OPT = Annotated[float, _opt(StrategyConfig, "head_c", "--head-c")]
LORA_TARGETS_OPT = Annotated[str | None, _opt(StrategyConfig, "lora_targets", "--lora-targets")]
PEFT_OPT = Annotated[str | None, _opt(StrategyConfig, "peft", "--peft")]
HEAD_OPT = Annotated[str, _opt(StrategyConfig, "head", "--head")]
IMAGE_SIZE_OPT = Annotated[int | None, _opt(DataConfig, "image_size", "--image-size")]
LABEL_COL_OPT = Annotated[str, _opt(DataConfig, "label_col", "--label-col")]
LABEL_SMOOTHING_OPT = Annotated[float, _opt(TrainConfig, "label_smoothing", "--label-smoothing")]
LAYER_DECAY_OPT = Annotated[float | None, _opt(StrategyConfig, "layer_decay", "--layer-decay")]


def _lr_value(value: Any) -> Any:
    """``--lr``: a positive number, or auto (the range test's suggestion)."""
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise ConfigError(
            "--lr as a number or auto", repr(value), "pass e.g. --lr 1e-3 or --lr auto"
        ) from None


TRACKER_OPT = Annotated[str | None, _opt(TrainConfig, "tracker", "--tracker")]
LR_OPT = Annotated[
    float,
    typer.Option("--lr", help=help_for(TrainConfig, "lr"), parser=_lr_value, metavar="FLOAT|auto"),
]
MAX_LENGTH_OPT = Annotated[int | None, _opt(DataConfig, "max_length", "--max-length")]
MAX_TEST_OPT = Annotated[int | None, _opt(DataConfig, "max_test", "--max-test")]
MIXED_PRECISION_OPT = Annotated[str, _opt(TrainConfig, "mixed_precision", "--mixed-precision")]
NUM_WORKERS_OPT = Annotated[int, _opt(TrainConfig, "num_workers", "--num-workers")]
PROGRESS_OPT = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
POOLING_OPT = Annotated[str | None, _opt(BackboneConfig, "pooling", "--pooling")]
OOV_OPT = Annotated[str, _opt(BackboneConfig, "oov", "--oov")]
ADD_DOMAIN_TOKENS_OPT = Annotated[
    int, _opt(BackboneConfig, "add_domain_tokens", "--add-domain-tokens")
]
WORD_TOKENIZER_OPT = Annotated[str, _opt(BackboneConfig, "tokenizer", "--tokenizer")]
SKIP_BAD_OPT = Annotated[bool, _opt(DataConfig, "skip_bad", "--skip-bad")]
TEST_FRACTION_OPT = Annotated[float, _opt(DataConfig, "test_fraction", "--test-fraction")]
TEST_OPT = Annotated[str | None, _opt(DataConfig, "test", "--test")]
VAL_FRACTION_OPT = Annotated[float, _opt(DataConfig, "val_fraction", "--val-fraction")]
VAL_OPT = Annotated[str | None, _opt(DataConfig, "val", "--val")]
WEIGHTS_OPT = Annotated[str | None, _opt(BackboneConfig, "weights", "--weights")]
WEIGHT_DECAY_OPT = Annotated[float, _opt(TrainConfig, "weight_decay", "--weight-decay")]
ENGINE_OPT = Annotated[str, _opt(PredictConfig, "engine", "--engine")]


@app.callback()
def _root() -> None:
    """headstart: pick a pretrained backbone, transfer it, and prove whether it helped.

    Add --debug anywhere on the line to see full tracebacks on errors.
    """
    # --debug is read (and taken off the line) by main(): an option of this callback would
    # be parsed before every command, `headstart fit --help` included, which costs Typer
    # a slow import


@app.command()
def fit(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help=help_for(DataConfig, "source"))],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path(
        "runs/latest"
    ),
    backbone: BACKBONE_OPT = _d(BackboneConfig, "name"),
    strategy: Annotated[str, _opt(StrategyConfig, "name", "--strategy", "-s")] = _d(
        StrategyConfig, "name"
    ),
    head: HEAD_OPT = _d(StrategyConfig, "head"),
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(DataConfig, "label_col"),
    max_length: MAX_LENGTH_OPT = _d(DataConfig, "max_length"),
    val: VAL_OPT = _d(DataConfig, "val"),
    test: TEST_OPT = _d(DataConfig, "test"),
    per_class: Annotated[int | None, _opt(DataConfig, "per_class", "--per-class")] = _d(
        DataConfig, "per_class"
    ),
    max_test: MAX_TEST_OPT = _d(DataConfig, "max_test"),
    image_size: IMAGE_SIZE_OPT = _d(DataConfig, "image_size"),
    augment: AUGMENT_OPT = _d(DataConfig, "augment"),
    tta: TTA_OPT = _d(DataConfig, "tta"),
    features: FEATURES_OPT = _d(BackboneConfig, "features"),
    skip_bad: SKIP_BAD_OPT = _d(DataConfig, "skip_bad"),
    weights: WEIGHTS_OPT = _d(BackboneConfig, "weights"),
    pretrained: Annotated[
        bool, _opt(BackboneConfig, "pretrained", "--pretrained/--no-pretrained")
    ] = _d(BackboneConfig, "pretrained"),
    allow_download: ALLOW_DOWNLOAD_OPT = _d(BackboneConfig, "allow_download"),
    pooling: POOLING_OPT = _d(BackboneConfig, "pooling"),
    oov: OOV_OPT = _d(BackboneConfig, "oov"),
    tokenizer: WORD_TOKENIZER_OPT = _d(BackboneConfig, "tokenizer"),
    add_domain_tokens: ADD_DOMAIN_TOKENS_OPT = _d(BackboneConfig, "add_domain_tokens"),
    drop_rate: DROPOUT_OPT = _d(BackboneConfig, "drop_rate"),
    layer_decay: LAYER_DECAY_OPT = _d(StrategyConfig, "layer_decay"),
    backbone_lr_scale: BACKBONE_LR_SCALE_OPT = _d(StrategyConfig, "backbone_lr_scale"),
    bn_stats: BN_STATS_OPT = _d(StrategyConfig, "bn_stats"),
    head_c: HEAD_C_OPT = _d(StrategyConfig, "head_c"),
    lora_targets: LORA_TARGETS_OPT = _d(StrategyConfig, "lora_targets"),
    peft: PEFT_OPT = _d(StrategyConfig, "peft"),
    val_fraction: VAL_FRACTION_OPT = _d(DataConfig, "val_fraction"),
    test_fraction: TEST_FRACTION_OPT = _d(DataConfig, "test_fraction"),
    max_pixels: Annotated[int, _opt(DataConfig, "max_pixels", "--max-pixels")] = _d(
        DataConfig, "max_pixels"
    ),
    warmup_fraction: Annotated[float, _opt(TrainConfig, "warmup_fraction", "--warmup")] = _d(
        TrainConfig, "warmup_fraction"
    ),
    num_workers: NUM_WORKERS_OPT = _d(TrainConfig, "num_workers"),
    epochs: EPOCHS_OPT = _d(TrainConfig, "epochs"),
    batch_size: BATCH_SIZE_OPT = _d(TrainConfig, "batch_size"),
    lr: LR_OPT = _d(TrainConfig, "lr"),
    weight_decay: WEIGHT_DECAY_OPT = _d(TrainConfig, "weight_decay"),
    label_smoothing: LABEL_SMOOTHING_OPT = _d(TrainConfig, "label_smoothing"),
    patience: Annotated[int, _opt(TrainConfig, "patience", "--patience")] = _d(
        TrainConfig, "patience"
    ),
    grad_accum: Annotated[int, _opt(TrainConfig, "grad_accum", "--grad-accum")] = _d(
        TrainConfig, "grad_accum"
    ),
    mixed_precision: MIXED_PRECISION_OPT = _d(TrainConfig, "mixed_precision"),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    seed: Annotated[int, _opt(TrainConfig, "seed", "--seed")] = _d(TrainConfig, "seed"),
    deterministic: Annotated[bool, _opt(TrainConfig, "deterministic", "--deterministic")] = _d(
        TrainConfig, "deterministic"
    ),
    keep_checkpoint: Annotated[
        bool, _opt(TrainConfig, "keep_checkpoint", "--keep-checkpoint")
    ] = _d(TrainConfig, "keep_checkpoint"),
    tracker: TRACKER_OPT = _d(TrainConfig, "tracker"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out from its last checkpoint, with its config.yaml; "
            "options given must match it (only --device and --num-workers may change).",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run in --out.")
    ] = False,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Unlabelled target-domain data for a domain adaptation strategy "
            "(feature-std, feature-coral, adabn, dann, ...): a flat image folder, a table "
            "without the label column or a bundled dataset; labels, if any, are never shown "
            "to the strategy. The model written is the target domain's.",
        ),
    ] = None,
    progress: PROGRESS_OPT = True,
) -> None:
    """Transfer a pretrained backbone to a labelled image folder or bundled dataset."""
    options = {k: v for k, v in locals().items() if k != "ctx"}  # named like config fields
    from headstart.workflows.fit import fit as run_fit

    skip = ("out", "resume", "overwrite", "progress", "target")
    if resume:  # the run's config, with the options given on the command line over it
        from headstart.runfolder import read_run_config

        given = {k: v for k, v in options.items() if _given(ctx, k)}
        cfg = _run_config(given, skip, base=read_run_config(out))
    else:
        cfg = _run_config(options, skip)
    target_samples = None
    if target:
        from headstart.data.loading import load_target

        target_samples = load_target(target, cfg.data)
    run_fit(
        cfg,
        out,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        console=console,
        target=target_samples,
    )


@app.command("lr-find")
def lr_find(
    source: Annotated[str, typer.Argument(help=help_for(DataConfig, "source"))],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for lr_find.json and lr_find.svg.")
    ] = Path("runs/lr-find"),
    backbone: BACKBONE_OPT = _d(BackboneConfig, "name"),
    strategy: Annotated[str, _opt(StrategyConfig, "name", "--strategy", "-s")] = "lp-ft",
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(DataConfig, "label_col"),
    max_length: MAX_LENGTH_OPT = _d(DataConfig, "max_length"),
    per_class: Annotated[int | None, _opt(DataConfig, "per_class", "--per-class")] = _d(
        DataConfig, "per_class"
    ),
    image_size: IMAGE_SIZE_OPT = _d(DataConfig, "image_size"),
    augment: AUGMENT_OPT = _d(DataConfig, "augment"),
    layer_decay: LAYER_DECAY_OPT = _d(StrategyConfig, "layer_decay"),
    backbone_lr_scale: BACKBONE_LR_SCALE_OPT = _d(StrategyConfig, "backbone_lr_scale"),
    lora_targets: LORA_TARGETS_OPT = _d(StrategyConfig, "lora_targets"),
    peft: PEFT_OPT = _d(StrategyConfig, "peft"),
    epochs: EPOCHS_OPT = _d(TrainConfig, "epochs"),
    batch_size: BATCH_SIZE_OPT = _d(TrainConfig, "batch_size"),
    weight_decay: WEIGHT_DECAY_OPT = _d(TrainConfig, "weight_decay"),
    label_smoothing: LABEL_SMOOTHING_OPT = _d(TrainConfig, "label_smoothing"),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    seed: Annotated[int, _opt(TrainConfig, "seed", "--seed")] = _d(TrainConfig, "seed"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier range test in --out.")
    ] = False,
    progress: PROGRESS_OPT = True,
) -> None:
    """The learning-rate range test: the loss over a sweep of rates from the strategy's
    start state, plotted, and a suggested rate (what fit --lr auto trains at)."""
    options = dict(locals())  # named like config fields
    from headstart.workflows.lr_find import print_lr_find, run_lr_find

    cfg = _run_config(options, ("out", "overwrite", "progress"))
    test = run_lr_find(cfg, out, overwrite=overwrite, progress=progress, console=console)
    print_lr_find(test, source, out, console)


@app.command()
def tune(
    source: Annotated[str, typer.Argument(help=help_for(DataConfig, "source"))],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the trials, best/ and tune.json.")
    ] = Path("runs/tune"),
    trials: Annotated[int, _opt(TuneConfig, "trials", "--trials")] = _d(TuneConfig, "trials"),
    time_budget: Annotated[float | None, _opt(TuneConfig, "time_budget", "--time-budget")] = (
        _d(TuneConfig, "time_budget")
    ),
    space: Annotated[str | None, _opt(TuneConfig, "space", "--space")] = _d(TuneConfig, "space"),
    storage: Annotated[str | None, _opt(TuneConfig, "storage", "--storage")] = _d(
        TuneConfig, "storage"
    ),
    study_name: Annotated[
        str | None,
        typer.Option(
            "--study-name",
            help="The study's name in the storage (default: headstart-<name of --out>); "
            "workers on other machines pass the same name and --storage.",
        ),
    ] = None,
    workers: Annotated[int, _opt(TuneConfig, "workers", "--workers")] = _d(TuneConfig, "workers"),
    pruner: Annotated[str, _opt(TuneConfig, "pruner", "--pruner")] = _d(TuneConfig, "pruner"),
    seed: Annotated[int, _opt(TuneConfig, "seed", "--seed")] = _d(TuneConfig, "seed"),
    backbone: BACKBONE_OPT = _d(BackboneConfig, "name"),
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy", "-s", help="The strategy of every trial when the space has none."
        ),
    ] = "lp-ft",
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(DataConfig, "label_col"),
    max_length: MAX_LENGTH_OPT = _d(DataConfig, "max_length"),
    val: VAL_OPT = _d(DataConfig, "val"),
    test: TEST_OPT = _d(DataConfig, "test"),
    per_class: Annotated[int | None, _opt(DataConfig, "per_class", "--per-class")] = _d(
        DataConfig, "per_class"
    ),
    max_test: MAX_TEST_OPT = _d(DataConfig, "max_test"),
    image_size: IMAGE_SIZE_OPT = _d(DataConfig, "image_size"),
    epochs: EPOCHS_OPT = _d(TrainConfig, "epochs"),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    tracker: TRACKER_OPT = _d(TrainConfig, "tracker"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete the study's trials in --out first.")
    ] = False,
    progress: PROGRESS_OPT = True,
) -> None:
    """Tune the hyperparameters on the validation split with Optuna (TPE, pruning); the
    best trial is scored once on the test split and kept as OUT/best."""
    options = dict(locals())  # named like config fields
    from headstart.workflows.tune import run_tune

    spec = TuneConfig(
        trials=trials,
        time_budget=time_budget,
        space=space,
        storage=storage,
        workers=workers,
        pruner=pruner,
        seed=seed,
    )
    options["patience"] = epochs  # pruning, not early stopping, ends poor trials
    skip = ("out", "trials", "time_budget", "space", "storage", "study_name", "workers",
            "pruner", "overwrite", "progress")  # fmt: skip
    base = _run_config(options, skip)
    run_tune(
        base,
        spec,
        out,
        study_name=study_name,
        overwrite=overwrite,
        progress=progress,
        console=console,
    )
    console.print(f"results written to {out / 'tune.json'}; report {out / 'report.html'}")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)  # an enum of the click Typer runs on
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder written by `headstart fit`.")],
    source: Annotated[
        str,
        typer.Argument(help="Labelled image folder, table of texts, or bundled dataset."),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the metrics to this JSON file.")
    ] = None,
    text_col: Annotated[
        list[str] | None,
        typer.Option("--text-col", help="Text column(s); default: the training run's."),
    ] = None,
    label_col: Annotated[
        str | None,
        typer.Option("--label-col", help="Label column; default: the training run's."),
    ] = None,
    skip_bad: SKIP_BAD_OPT = _d(DataConfig, "skip_bad"),
    batch_size: Annotated[int, _opt(EvalConfig, "batch_size", "--batch-size")] = _d(
        EvalConfig, "batch_size"
    ),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    engine: ENGINE_OPT = _d(PredictConfig, "engine"),
) -> None:
    """Evaluate a trained run on labelled images or texts: accuracy, macro-F1, per class."""
    from headstart.workflows.evaluate import run_evaluate

    PredictConfig(engine=engine)
    run_evaluate(
        run, source, output, text_col, label_col, skip_bad, batch_size, device, console, engine
    )


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder written by `headstart fit`.")],
    inputs: Annotated[
        list[str],
        typer.Argument(help="Image files and/or folders; or texts, or one table of texts."),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many labels per image.")] = 1,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write predictions to a .csv or .json file.")
    ] = None,
    batch_size: Annotated[int, _opt(EvalConfig, "batch_size", "--batch-size")] = _d(
        EvalConfig, "batch_size"
    ),
    text_col: Annotated[
        list[str] | None,
        typer.Option("--text-col", help="Text column(s) of a table; default: the run's."),
    ] = None,
    skip_bad: SKIP_BAD_OPT = _d(DataConfig, "skip_bad"),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    engine: ENGINE_OPT = _d(PredictConfig, "engine"),
) -> None:
    """Predict the top-k labels of images or texts with a trained run."""
    from headstart.workflows.predict import run_predict

    PredictConfig(engine=engine)
    run_predict(run, inputs, top_k, output, batch_size, text_col, skip_bad, device, console, engine)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder written by `headstart fit`.")],
    format: Annotated[str, _opt(ExportConfig, "format", "--format")] = _d(ExportConfig, "format"),
    quantize: Annotated[str, _opt(ExportConfig, "quantize", "--quantize")] = _d(
        ExportConfig, "quantize"
    ),
    out: Annotated[str | None, _opt(ExportConfig, "out", "--out")] = _d(ExportConfig, "out"),
    tolerance: Annotated[float, _opt(ExportConfig, "tolerance", "--tolerance")] = _d(
        ExportConfig, "tolerance"
    ),
    parity: Annotated[bool, _opt(ExportConfig, "parity", "--parity/--no-parity")] = _d(
        ExportConfig, "parity"
    ),
    parity_samples: Annotated[int, _opt(ExportConfig, "parity_samples", "--parity-samples")] = _d(
        ExportConfig, "parity_samples"
    ),
    batch_size: Annotated[int, _opt(ExportConfig, "batch_size", "--batch-size")] = _d(
        ExportConfig, "batch_size"
    ),
) -> None:
    """Export a run's model to ONNX (RUN/export), checked against the run's own logits;
    predict and evaluate then run an exported image run on onnxruntime (CPU)."""
    from headstart.workflows.export import run_export

    cfg = ExportConfig(
        format=format,
        quantize=quantize,
        out=out,
        tolerance=tolerance,
        parity=parity,
        parity_samples=parity_samples,
        batch_size=batch_size,
    )
    run_export(run, cfg, console)


#: CLI option names that differ from their config field: option -> (section, field)
RENAMED_OPTIONS = {
    "text_col": ("data", "text_cols"),
    "backbone": ("backbone", "name"),
    "strategy": ("strategy", "name"),
}
COMPARE_ONLY = (
    "strategies",
    "budgets",
    "seeds",
    "baseline",
    "alpha",
    "confidence",
    "time_budget",
    "keep_models",
)


def _run_config(
    options: dict[str, Any], skip: tuple[str, ...], base: RunConfig | None = None
) -> RunConfig:
    """A RunConfig from a command's options, each routed to the config section that has a
    field of its name (train before eval for batch_size); fields not given keep their
    values in ``base`` (the defaults without one). One place for what fit and compare
    both build."""
    start = (base or RunConfig()).to_dict()
    sections: dict[str, dict[str, Any]] = {name: dict(start[name]) for name in SECTIONS}
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
    for key, value in options.items():
        if key in skip:
            continue
        if key in RENAMED_OPTIONS:
            section, name = RENAMED_OPTIONS[key]
        else:
            section = next((sec for sec, names in fields.items() if key in names), "")
            name = key
        if not section:
            raise KeyError(f"CLI option {key!r} matches no config field")
        sections[section][name] = (value or None) if name == "text_cols" else value
    return RunConfig(**{sec: SECTIONS[sec](**values) for sec, values in sections.items()})


def _csv_list(value: str, what: str, cast: type = str) -> list[Any]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return [cast(v) for v in items]
    except ValueError as e:
        raise ConfigError(
            f"--{what} as a comma-separated list of {cast.__name__}s",
            repr(value),
            f"pass e.g. --{what} 10,50,100",
        ) from e


@app.command()
def compare(
    source: Annotated[str, typer.Argument(help=help_for(DataConfig, "source"))],
    out: Annotated[Path, typer.Option("--out", "-o", help="Comparison folder to write.")] = Path(
        "runs/compare"
    ),
    backbone: BACKBONE_OPT = _d(BackboneConfig, "name"),
    strategies: Annotated[
        str, typer.Option("--strategies", help=help_for(CompareConfig, "strategies"))
    ] = _csv_d(CompareConfig, "strategies"),
    budgets: Annotated[
        str, typer.Option("--budgets", help=help_for(CompareConfig, "budgets"))
    ] = _csv_d(CompareConfig, "budgets"),
    seeds: Annotated[int, _opt(CompareConfig, "seeds", "--seeds")] = _d(CompareConfig, "seeds"),
    time_budget: Annotated[float | None, _opt(CompareConfig, "time_budget", "--time-budget")] = _d(
        CompareConfig, "time_budget"
    ),
    keep_models: Annotated[str, _opt(CompareConfig, "keep_models", "--keep-models")] = _d(
        CompareConfig, "keep_models"
    ),
    baseline: Annotated[str, _opt(CompareConfig, "baseline", "--baseline")] = _d(
        CompareConfig, "baseline"
    ),
    alpha: Annotated[float, _opt(CompareConfig, "alpha", "--alpha")] = _d(CompareConfig, "alpha"),
    confidence: Annotated[float, _opt(CompareConfig, "confidence", "--confidence")] = _d(
        CompareConfig, "confidence"
    ),
    seed: Annotated[
        int, typer.Option("--seed", help="The first seed; the others follow it (0: seeds 0, 1, 2).")
    ] = _d(TrainConfig, "seed"),
    head: HEAD_OPT = _d(StrategyConfig, "head"),
    head_c: HEAD_C_OPT = _d(StrategyConfig, "head_c"),
    layer_decay: LAYER_DECAY_OPT = _d(StrategyConfig, "layer_decay"),
    bn_stats: BN_STATS_OPT = _d(StrategyConfig, "bn_stats"),
    lora_targets: LORA_TARGETS_OPT = _d(StrategyConfig, "lora_targets"),
    peft: PEFT_OPT = _d(StrategyConfig, "peft"),
    skip_bad: SKIP_BAD_OPT = _d(DataConfig, "skip_bad"),
    allow_download: ALLOW_DOWNLOAD_OPT = _d(BackboneConfig, "allow_download"),
    pooling: POOLING_OPT = _d(BackboneConfig, "pooling"),
    oov: OOV_OPT = _d(BackboneConfig, "oov"),
    tokenizer: WORD_TOKENIZER_OPT = _d(BackboneConfig, "tokenizer"),
    add_domain_tokens: ADD_DOMAIN_TOKENS_OPT = _d(BackboneConfig, "add_domain_tokens"),
    drop_rate: DROPOUT_OPT = _d(BackboneConfig, "drop_rate"),
    weight_decay: WEIGHT_DECAY_OPT = _d(TrainConfig, "weight_decay"),
    label_smoothing: LABEL_SMOOTHING_OPT = _d(TrainConfig, "label_smoothing"),
    num_workers: NUM_WORKERS_OPT = _d(TrainConfig, "num_workers"),
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(DataConfig, "label_col"),
    max_length: MAX_LENGTH_OPT = _d(DataConfig, "max_length"),
    val: VAL_OPT = _d(DataConfig, "val"),
    test: TEST_OPT = _d(DataConfig, "test"),
    max_test: MAX_TEST_OPT = _d(DataConfig, "max_test"),
    val_fraction: VAL_FRACTION_OPT = _d(DataConfig, "val_fraction"),
    test_fraction: TEST_FRACTION_OPT = _d(DataConfig, "test_fraction"),
    image_size: IMAGE_SIZE_OPT = _d(DataConfig, "image_size"),
    augment: AUGMENT_OPT = _d(DataConfig, "augment"),
    tta: TTA_OPT = _d(DataConfig, "tta"),
    features: FEATURES_OPT = _d(BackboneConfig, "features"),
    weights: WEIGHTS_OPT = _d(BackboneConfig, "weights"),
    backbone_lr_scale: BACKBONE_LR_SCALE_OPT = _d(StrategyConfig, "backbone_lr_scale"),
    epochs: EPOCHS_OPT = _d(TrainConfig, "epochs"),
    batch_size: BATCH_SIZE_OPT = _d(TrainConfig, "batch_size"),
    lr: LR_OPT = _d(TrainConfig, "lr"),
    mixed_precision: MIXED_PRECISION_OPT = _d(TrainConfig, "mixed_precision"),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    tracker: TRACKER_OPT = _d(TrainConfig, "tracker"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier comparison in --out.")
    ] = False,
    progress: PROGRESS_OPT = True,
) -> None:
    """Prove whether transfer helps: every strategy at every label budget over several seeds,
    against training from scratch, with confidence intervals, McNemar's test and a verdict.

    Every strategy gets the same splits and the same epochs (no early stopping; the best
    validation epoch is kept). Run the same command again to continue a stopped comparison.
    """
    options = dict(locals())  # the options, named like the config fields
    from headstart.workflows.compare import run_compare

    spec = CompareConfig(
        strategies=_csv_list(strategies, "strategies"),
        budgets=_csv_list(budgets, "budgets", int),
        seeds=seeds,
        baseline=baseline,
        alpha=alpha,
        confidence=confidence,
        time_budget=time_budget,
        keep_models=keep_models,
    )
    options["patience"] = epochs  # the same training budget for every strategy
    base = _run_config(options, skip=(*COMPARE_ONLY, "out", "overwrite", "progress"))
    run_compare(base, spec, out, overwrite=overwrite, progress=progress, console=console)


@app.command()
def rank(
    source: Annotated[str, typer.Argument(help=help_for(DataConfig, "source"))],
    backbones: Annotated[
        str | None, typer.Option("--backbones", help=help_for(RankConfig, "backbones"))
    ] = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="One backbone (with --layers).")
    ] = None,
    layers: Annotated[str | None, _opt(RankConfig, "layers", "--layers")] = None,
    scores: Annotated[str, typer.Option("--scores", help=help_for(RankConfig, "scores"))] = _csv_d(
        RankConfig, "scores"
    ),
    score: Annotated[str, _opt(RankConfig, "score", "--score")] = _d(RankConfig, "score"),
    max_per_class: Annotated[int | None, _opt(RankConfig, "max_per_class", "--max-per-class")] = (
        _d(RankConfig, "max_per_class")
    ),
    seed: Annotated[int, _opt(RankConfig, "seed", "--seed")] = _d(RankConfig, "seed"),
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for rank.json and report.html.")
    ] = None,
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(DataConfig, "label_col"),
    max_length: MAX_LENGTH_OPT = _d(DataConfig, "max_length"),
    image_size: IMAGE_SIZE_OPT = _d(DataConfig, "image_size"),
    skip_bad: SKIP_BAD_OPT = _d(DataConfig, "skip_bad"),
    weights: WEIGHTS_OPT = _d(BackboneConfig, "weights"),
    allow_download: ALLOW_DOWNLOAD_OPT = _d(BackboneConfig, "allow_download"),
    pooling: POOLING_OPT = _d(BackboneConfig, "pooling"),
    oov: OOV_OPT = _d(BackboneConfig, "oov"),
    tokenizer: WORD_TOKENIZER_OPT = _d(BackboneConfig, "tokenizer"),
    batch_size: Annotated[int, _opt(EvalConfig, "batch_size", "--batch-size")] = _d(
        EvalConfig, "batch_size"
    ),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse and store features on disk.")
    ] = True,
    progress: PROGRESS_OPT = True,
) -> None:
    """Rank pretrained backbones, or the layers of one, for a labelled dataset before any
    training: transferability scores from cached features, with the seconds each took,
    and the recommended candidate."""
    from headstart.features import EmbeddingCache
    from headstart.selection import SCORES
    from headstart.workflows.rank import print_ranking, run_rank

    names = _csv_list(backbones, "backbones") if backbones else []
    if backbone:
        names.append(backbone)
    for name in _csv_list(scores, "scores"):
        SCORES.get(name)  # an unknown score is named as such, with suggestions
    rank_cfg = RankConfig(
        backbones=names,
        layers=layers,
        scores=_csv_list(scores, "scores"),
        score=score,
        max_per_class=max_per_class,
        seed=seed,
    )
    data_cfg = DataConfig(
        source=source,
        text_cols=text_col or None,
        label_col=label_col,
        max_length=max_length,
        image_size=image_size,
        skip_bad=skip_bad,
    )
    bcfg = BackboneConfig(
        weights=weights,
        allow_download=allow_download,
        pooling=pooling,
        oov=oov,
        tokenizer=tokenizer,
    )
    result = run_rank(
        data_cfg,
        rank_cfg,
        out,
        backbone_cfg=bcfg,
        batch_size=batch_size,
        device=device,
        cache=EmbeddingCache(enabled=cache),
        progress=progress,
        console=console,
    )
    print_ranking(result, console, out)


@app.command()
def adapt(
    source: Annotated[str, typer.Option("--source", help="Labelled source-domain data.")],
    target: Annotated[str, _opt(AdaptConfig, "target", "--target")],
    target_eval: Annotated[str | None, _opt(AdaptConfig, "target_eval", "--target-eval")] = None,
    method: Annotated[str, _opt(AdaptConfig, "methods", "--method", csv=True)] = _csv_d(
        AdaptConfig, "methods"
    ),
    seeds: Annotated[int, _opt(AdaptConfig, "seeds", "--seeds")] = _d(AdaptConfig, "seeds"),
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            "-s",
            help="How source-only fine-tunes (and so the ft- alignments built on it): a fit "
            "strategy such as lp-ft, ewc, lwf, l2-sp or lora.",
        ),
    ] = "lp-ft",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the runs and adapt.json.")
    ] = (Path("runs/adapt")),
    backbone: BACKBONE_OPT = _d(BackboneConfig, "name"),
    epochs: EPOCHS_OPT = _d(TrainConfig, "epochs"),
    batch_size: BATCH_SIZE_OPT = _d(TrainConfig, "batch_size"),
    lr: LR_OPT = _d(TrainConfig, "lr"),
    image_size: IMAGE_SIZE_OPT = _d(DataConfig, "image_size"),
    max_length: MAX_LENGTH_OPT = _d(DataConfig, "max_length"),
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(DataConfig, "label_col"),
    augment: AUGMENT_OPT = _d(DataConfig, "augment"),
    per_class: Annotated[int | None, _opt(DataConfig, "per_class", "--per-class")] = None,
    backbone_lr_scale: BACKBONE_LR_SCALE_OPT = _d(StrategyConfig, "backbone_lr_scale"),
    device: DEVICE_OPT = _d(TrainConfig, "device"),
    seed: Annotated[int, typer.Option("--seed", help="The first seed.")] = _d(TrainConfig, "seed"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace earlier runs in --out.")
    ] = False,
    progress: PROGRESS_OPT = True,
) -> None:
    """Adapt a model trained on a labelled source domain to an unlabelled target domain:
    source-only and each method over seeds, target accuracy (when target labels exist),
    the proxy A-distance, and which method label-free criteria would pick."""
    from headstart.workflows.adapt import print_adaptation, run_adapt

    spec = AdaptConfig(
        target=target,
        target_eval=target_eval,
        methods=_csv_list(method, "method"),
        seeds=seeds,
    )
    base = RunConfig(
        data=DataConfig(
            source=source,
            text_cols=text_col or None,
            label_col=label_col,
            image_size=image_size,
            max_length=max_length,
            augment=augment,
            per_class=per_class,
        ),
        backbone=BackboneConfig(name=backbone),
        strategy=StrategyConfig(name=strategy, backbone_lr_scale=backbone_lr_scale),
        train=TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed, patience=epochs
        ),
    )
    result = run_adapt(base, spec, out, progress=progress, console=console, overwrite=overwrite)
    print_adaptation(result.summary, console)
    console.print(f"results written to {out / 'adapt.json'}")


@app.command()
def zeroshot(
    source: Annotated[
        str,
        typer.Argument(
            help="Texts (a table or bundled name) or images (a folder, flat or one subfolder "
            "per class, or a bundled name) to classify; labels, if any, are used to score."
        ),
    ],
    labels: Annotated[str | None, _opt(ZeroShotConfig, "labels", "--labels", csv=True)] = None,
    template: Annotated[
        list[str] | None,
        _opt(ZeroShotConfig, "templates", "--template", extra=" Repeat the option for several."),
    ] = None,
    describe: Annotated[
        list[str] | None,
        _opt(
            ZeroShotConfig,
            "descriptions",
            "--describe",
            extra=" Given as LABEL=TEXT; repeat the option for several labels.",
        ),
    ] = None,
    backbone: Annotated[str, _opt(ZeroShotConfig, "backbone", "--backbone", "-b")] = _d(
        ZeroShotConfig, "backbone"
    ),
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results.")] = Path(
        "runs/zeroshot"
    ),
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(ZeroShotConfig, "label_col"),
    max_length: MAX_LENGTH_OPT = _d(ZeroShotConfig, "max_length"),
    image_size: IMAGE_SIZE_OPT = _d(ZeroShotConfig, "image_size"),
    max_examples: Annotated[
        int | None, _opt(ZeroShotConfig, "max_examples", "--max-examples")
    ] = _d(ZeroShotConfig, "max_examples"),
    refine: Annotated[int, _opt(ZeroShotConfig, "refine", "--refine")] = _d(
        ZeroShotConfig, "refine"
    ),
    device: DEVICE_OPT = _d(ZeroShotConfig, "device"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace earlier results in --out.")
    ] = False,
    progress: PROGRESS_OPT = True,
) -> None:
    """Classify without labelled examples, from the label names: texts by similarity to
    the labels under templates (a run folder `predict` can use), images through CLIP or
    an ImageNet classifier. Scored when the data has those labels."""
    from headstart.workflows.zeroshot import run_zeroshot

    descriptions = {}
    for item in describe or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ConfigError(
                "--describe LABEL=TEXT", repr(item), 'e.g. --describe "tech=computers, phones"'
            )
        descriptions[name.strip()] = text.strip()
    zcfg = ZeroShotConfig(
        labels=_csv_list(labels, "label") if labels else [],
        templates=list(template or []),
        descriptions=descriptions,
        backbone=backbone,
        max_length=max_length,
        image_size=image_size,
        max_examples=max_examples,
        refine=refine,
        device=device,
        text_cols=text_col or None,
        label_col=label_col,
    )
    run_zeroshot(source, zcfg, out, console=console, progress=progress, overwrite=overwrite)


@app.command("embed-train")
def embed_train(
    corpus: Annotated[
        str,
        typer.Argument(
            help="Unlabelled domain texts: a .txt file (one document per line), a table "
            "(.csv .tsv .jsonl .parquet; its text column) or a bundled text dataset "
            "(drug-reviews, drug-reviews:train, bbc-news)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the vectors (use it as `fit --backbone OUT`)."
        ),
    ],
    init: Annotated[str, _opt(EmbedTrainConfig, "init", "--init")] = _d(EmbedTrainConfig, "init"),
    model: Annotated[str, _opt(EmbedTrainConfig, "model", "--model")] = _d(
        EmbedTrainConfig, "model"
    ),
    epochs: Annotated[int, _opt(EmbedTrainConfig, "epochs", "--epochs")] = _d(
        EmbedTrainConfig, "epochs"
    ),
    window: Annotated[int, _opt(EmbedTrainConfig, "window", "--window")] = _d(
        EmbedTrainConfig, "window"
    ),
    min_count: Annotated[int, _opt(EmbedTrainConfig, "min_count", "--min-count")] = _d(
        EmbedTrainConfig, "min_count"
    ),
    keep: Annotated[str, _opt(EmbedTrainConfig, "keep", "--keep")] = _d(EmbedTrainConfig, "keep"),
    max_shift: Annotated[float, _opt(EmbedTrainConfig, "max_shift", "--max-shift")] = _d(
        EmbedTrainConfig, "max_shift"
    ),
    buckets: Annotated[int, _opt(EmbedTrainConfig, "buckets", "--buckets")] = _d(
        EmbedTrainConfig, "buckets"
    ),
    text_col: Annotated[list[str] | None, _opt(EmbedTrainConfig, "text_cols", "--text-col")] = None,
    seed: Annotated[int, _opt(EmbedTrainConfig, "seed", "--seed")] = _d(EmbedTrainConfig, "seed"),
    workers: Annotated[int, _opt(EmbedTrainConfig, "workers", "--workers")] = _d(
        EmbedTrainConfig, "workers"
    ),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace earlier vectors in --out.")
    ] = False,
    progress: PROGRESS_OPT = True,
) -> None:
    """Train word vectors on an unlabelled domain corpus (gensim word2vec or fastText),
    starting from pretrained ones: the domain's own words are learned in the pretrained
    space, the others keep their vectors. Needs gensim (the embeddings extra of headstart)."""
    from headstart.workflows.embed_train import embed_train as run_embed_train

    ecfg = EmbedTrainConfig(
        init=init,
        model=model,
        epochs=epochs,
        window=window,
        min_count=min_count,
        keep=keep,
        max_shift=max_shift,
        buckets=buckets,
        text_cols=text_col or None,
        seed=seed,
        workers=workers,
    )
    run_embed_train(corpus, out, ecfg, console=console, progress=progress, overwrite=overwrite)


@app.command()
def fewshot(
    source: Annotated[str, typer.Argument(help=help_for(DataConfig, "source"))],
    ways: Annotated[int, _opt(FewShotConfig, "ways", "--ways")] = _d(FewShotConfig, "ways"),
    shots: Annotated[str, _opt(FewShotConfig, "shots", "--shots", csv=True)] = _csv_d(
        FewShotConfig, "shots"
    ),
    episodes: Annotated[int, _opt(FewShotConfig, "episodes", "--episodes")] = _d(
        FewShotConfig, "episodes"
    ),
    queries: Annotated[int, _opt(FewShotConfig, "queries", "--queries")] = _d(
        FewShotConfig, "queries"
    ),
    classes: Annotated[str | None, _opt(FewShotConfig, "classes", "--classes")] = None,
    backbone: Annotated[
        str, _opt(FewShotConfig, "backbones", "--backbone", "-b", csv=True)
    ] = _csv_d(FewShotConfig, "backbones"),
    strategy: Annotated[
        str, _opt(FewShotConfig, "strategies", "--strategy", "-s", csv=True)
    ] = _csv_d(FewShotConfig, "strategies"),
    pool: Annotated[int, _opt(FewShotConfig, "pool", "--pool")] = _d(FewShotConfig, "pool"),
    image_size: Annotated[int | None, _opt(FewShotConfig, "image_size", "--image-size")] = _d(
        FewShotConfig, "image_size"
    ),
    max_length: MAX_LENGTH_OPT = _d(FewShotConfig, "max_length"),
    text_col: Annotated[list[str] | None, _opt(DataConfig, "text_cols", "--text-col")] = None,
    label_col: LABEL_COL_OPT = _d(FewShotConfig, "label_col"),
    seed: Annotated[int, _opt(FewShotConfig, "seed", "--seed")] = _d(FewShotConfig, "seed"),
    device: DEVICE_OPT = _d(FewShotConfig, "device"),
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for fewshot.json.")
    ] = None,
    progress: PROGRESS_OPT = True,
) -> None:
    """N-way K-shot evaluation: each backbone and strategy over episodes drawn from the
    data, mean accuracy and its 95% confidence interval."""
    from headstart.data.loading import load_source
    from headstart.workflows.fewshot import data_config, run_fewshot
    from headstart.workflows.meta_train import parse_classes

    fcfg = FewShotConfig(
        backbones=_csv_list(backbone, "backbone"),
        strategies=_csv_list(strategy, "strategy"),
        ways=ways,
        shots=_csv_list(shots, "shots", int),
        queries=queries,
        episodes=episodes,
        pool=pool,
        image_size=image_size,
        max_length=max_length,
        seed=seed,
        device=device,
        text_cols=text_col or None,
        label_col=label_col,
    )
    if classes:
        names = load_source(source, data_config(source, fcfg)).classes
        fcfg = dataclasses.replace(fcfg, classes=parse_classes(classes, list(names)))
    run_fewshot(source, fcfg, out, console=console, progress=progress)


@app.command("meta-train")
def meta_train(
    source: Annotated[str, typer.Argument(help=help_for(DataConfig, "source"))],
    classes: Annotated[str, _opt(MetaConfig, "classes", "--classes")],
    method: Annotated[str, _opt(MetaConfig, "method", "--method")] = _d(MetaConfig, "method"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path(
        "runs/meta"
    ),
    backbone: Annotated[str, _opt(MetaConfig, "backbone", "--backbone", "-b")] = _d(
        MetaConfig, "backbone"
    ),
    ways: Annotated[int, _opt(MetaConfig, "ways", "--ways")] = _d(MetaConfig, "ways"),
    shots: Annotated[int, _opt(MetaConfig, "shots", "--shots")] = _d(MetaConfig, "shots"),
    queries: Annotated[int, _opt(MetaConfig, "queries", "--queries")] = _d(MetaConfig, "queries"),
    episodes: Annotated[int, _opt(MetaConfig, "episodes", "--episodes")] = _d(
        MetaConfig, "episodes"
    ),
    lr: Annotated[float, _opt(MetaConfig, "lr", "--lr")] = _d(MetaConfig, "lr"),
    freeze: Annotated[int, _opt(MetaConfig, "freeze", "--freeze")] = _d(MetaConfig, "freeze"),
    image_size: Annotated[int | None, _opt(MetaConfig, "image_size", "--image-size")] = _d(
        MetaConfig, "image_size"
    ),
    seed: Annotated[int, _opt(MetaConfig, "seed", "--seed")] = _d(MetaConfig, "seed"),
    device: DEVICE_OPT = _d(MetaConfig, "device"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run in --out.")
    ] = False,
    progress: PROGRESS_OPT = True,
) -> None:
    """Episodic meta-training (prototypical networks) of a backbone on source classes, so
    that it does few-shot on classes it has not seen; resumes after a crash."""
    from headstart.data.loading import load_source
    from headstart.workflows.meta_train import parse_classes, run_meta_train

    names = load_source(source, DataConfig(source=source)).classes
    mcfg = MetaConfig(
        classes=parse_classes(classes, list(names)),
        method=method,
        backbone=backbone,
        image_size=image_size,
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=episodes,
        lr=lr,
        freeze=freeze,
        seed=seed,
        device=device,
    )
    run_meta_train(source, mcfg, out, console=console, progress=progress, overwrite=overwrite)


@app.command()
def backbones(
    name: Annotated[
        str | None,
        typer.Argument(help="Show this backbone's layer groups (what freeze:N counts)."),
    ] = None,
) -> None:
    """List the registered backbones and whether their weights are available offline."""
    from headstart.backbones import create_backbone, describe_backbones

    if name is not None:
        try:  # the architecture alone is enough, where it can be built without weights
            bb = create_backbone(BackboneConfig(name=name, pretrained=False), 2)
        except HeadstartError:
            bb = create_backbone(BackboneConfig(name=name), 2)
        table = Table(title=f"Layer groups of {name}, input to output (freeze:N freezes 1..N)")
        for col in ("#", "group", "parameters"):
            table.add_column(col, justify="right" if col != "group" else "left")
        for i, g in enumerate(bb.layer_groups(), start=1):
            table.add_row(str(i), g.name, f"{g.numel:,}")
        console.print(table)
        if len(bb.layer_groups()) > 1:
            console.print(
                f"Rank the features after each group: headstart rank DATA --backbone {name} "
                f"--layers all. Cut the network after one: --backbone {name}@GROUP.",
                highlight=False,
            )
        return
    table = Table(title="Registered backbones (any timm architecture name works too)")
    rows = describe_backbones()
    for col in rows[0]:
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        table.add_row(*r.values())
    console.print(table)
    console.print("`headstart backbones NAME` lists a backbone's layer groups.")


@app.command()
def strategies() -> None:
    """List the registered transfer strategies and classifier heads (for --strategy, --head)."""
    from headstart.heads import HEADS
    from headstart.strategies import STRATEGIES

    for title, registry in (
        ("Transfer strategies (--strategy)", STRATEGIES),
        ("Heads (--head)", HEADS),
    ):
        table = Table(title=title)
        table.add_column("name", no_wrap=True)
        table.add_column("description")
        for name in registry.names():
            table.add_row(name, registry.help(name))
        console.print(table)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo's run folders.")
    ] = Path("runs/demo"),
    text: Annotated[
        bool,
        typer.Option("--text", help="The text demo: MiniLM-L6 on BBC News, 20 labels/class."),
    ] = False,
    per_class: Annotated[
        int | None, typer.Option("--per-class", help="Labelled training examples per class.")
    ] = None,
    test_size: Annotated[int, typer.Option("--test-size", help="Held-out test images.")] = 2000,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs of the runs that train the backbone.")
    ] = None,
    image_size: Annotated[
        int, typer.Option("--image-size", help="Input size in pixels.")
    ] = SMALL_IMAGE_SIZE,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    progress: PROGRESS_OPT = True,
) -> None:
    """The embedded default: EfficientNet-Lite0 on Fashion-MNIST (scratch vs linear-probe
    vs lp-ft), or with --text MiniLM-L6 on BBC News (linear-probe vs finetune vs TF-IDF)."""
    from headstart.workflows.demo import print_demo_table, run_demo, run_text_demo

    if text:
        rows = run_text_demo(
            out / "text",
            per_class=per_class or 20,
            epochs=epochs or 5,
            seed=seed,
            progress=progress,
            console=console,
        )
        print_demo_table(rows, console, title="BBC News, all-MiniLM-L6-v2: 20 labels per class")
        return
    rows = run_demo(
        out,
        per_class=per_class or 100,
        test_size=test_size,
        epochs=epochs or 6,
        image_size=image_size,
        seed=seed,
        progress=progress,
        console=console,
    )
    print_demo_table(rows, console)


@app.command()
def serve(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run folders written by `headstart fit`, each served under its folder name, "
            "or under NAME with NAME=FOLDER."
        ),
    ],
    host: Annotated[str, _opt(ServeConfig, "host", "--host")] = _d(ServeConfig, "host"),
    port: Annotated[int, _opt(ServeConfig, "port", "--port")] = _d(ServeConfig, "port"),
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="HEADSTART_TOKEN",
            show_envvar=False,
            help=help_for(ServeConfig, "token"),
        ),
    ] = _d(ServeConfig, "token"),
    max_body_mb: Annotated[float, _opt(ServeConfig, "max_body_mb", "--max-body-mb")] = _d(
        ServeConfig, "max_body_mb"
    ),
    max_inputs: Annotated[int, _opt(ServeConfig, "max_inputs", "--max-inputs")] = _d(
        ServeConfig, "max_inputs"
    ),
    max_batch: Annotated[int, _opt(ServeConfig, "max_batch", "--max-batch")] = _d(
        ServeConfig, "max_batch"
    ),
    batch_wait_ms: Annotated[float, _opt(ServeConfig, "batch_wait_ms", "--batch-wait-ms")] = _d(
        ServeConfig, "batch_wait_ms"
    ),
    top_k: Annotated[int, _opt(ServeConfig, "top_k", "--top-k", "-k")] = _d(ServeConfig, "top_k"),
    device: Annotated[str, _opt(ServeConfig, "device", "--device")] = _d(ServeConfig, "device"),
    engine: Annotated[str, _opt(ServeConfig, "engine", "--engine")] = _d(ServeConfig, "engine"),
) -> None:
    """Serve run folders over HTTP: a JSON API (/predict, /info, /docs) and a web page at /.
    Needs the extra: pip install 'headstart[serve]'."""
    cfg = ServeConfig(
        host=host,
        port=port,
        token=token,
        max_body_mb=max_body_mb,
        max_inputs=max_inputs,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        top_k=top_k,
        device=device,
        engine=engine,
    )
    try:
        from headstart.workflows.serve import run_serve
    except ImportError as e:
        raise ConfigError(
            "FastAPI, uvicorn and python-multipart for `headstart serve`",
            f"{e.name or 'one of them'} not installed",
            "pip install 'headstart[serve]'",
        ) from e
    run_serve(runs, cfg, console)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: one clear message and a non-zero exit on errors (traceback with --debug)."""
    args = sys.argv[1:]
    debug = "--debug" in args  # accepted anywhere on the line, as users type it
    args = [a for a in args if a != "--debug"]
    err = Console(stderr=True)
    signal.signal(signal.SIGTERM, _terminated)  # cleanups run, as on Ctrl-C
    try:
        app(args)
    except HeadstartError as e:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (OSError, RuntimeError, TypeError, ValueError, ImportError) as e:
        if debug:
            raise
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            from headstart.storage import disk_full

            full = disk_full(Path(e.filename or Path.cwd() / "?"), None, e)
            err.print(f"[bold red]error:[/] {escape(str(full))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        err.print(
            f"[bold red]error:[/] {type(e).__name__}: {escape(str(e))}\n"
            "This is unexpected: run again with --debug for the traceback and report it.",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]: continue a fit with `headstart fit ... --resume`")
        sys.exit(130)
