"""Dataclass configs for a run, validated on construction and round-tripped to YAML.

Help text lives once, in each field's metadata; the CLI reads it from there.
Unknown keys in a YAML file are an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from headstart.errors import ConfigError

C = TypeVar("C")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _lf(default: list[Any], help: str) -> Any:
    """A list-valued field (a fresh copy of ``default`` per instance)."""
    return field(default_factory=lambda: list(default), metadata={"help": help})


def _like(cls: type, name: str, **change: Any) -> Any:
    """A field of another config described as field ``name`` of ``cls`` is: the same help
    and, unless ``default=`` is given, the same default (one setting, described once)."""
    default = change.get("default", default_of(cls, name))
    help_text = change.get("help", help_for(cls, name))
    return _lf(default, help_text) if isinstance(default, list) else _f(default, help_text)


def help_for(cls: type, name: str) -> str:
    """The help text of field ``name`` of config class ``cls`` (for the CLI)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)


def default_of(cls: type, name: str) -> Any:
    """The default value of field ``name`` of config class ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return f.default
    raise KeyError(name)


def _positive(cfg: object, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if v is not None and v <= 0:
            raise ConfigError(f"{n} > 0", f"{n}={v!r}", f"set {n} to a positive number")


def _fraction(cfg: object, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"{n} in [0, 1)", f"{n}={v!r}", f"set {n} to a fraction like 0.15")


def _choice(cfg: object, name: str, options: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in options:
        raise ConfigError(
            f"{name} to be one of {', '.join(options)}", repr(v), f"pass one of {options}"
        )


#: Input size of images, per command (the one place that says which default applies):
#:
#: * fit, compare, rank, adapt, zeroshot, evaluate, predict and the estimator read
#:   ``DataConfig.image_size`` (default None: the backbone's own input size, or a smaller
#:   one read from small images);
#: * fewshot, meta-train and the image demo read ``SMALL_IMAGE_SIZE`` pixels: they embed
#:   or train on thousands of images per run, and their benchmarks were measured at it.
SMALL_IMAGE_SIZE = 64

#: The input sizes a config accepts, in pixels. Below 16 px a ViT has no 16 px patch to
#: embed and a CNN's five stride-2 stages reduce the image to nothing; the largest input
#: any pretrained backbone here (or in timm) was trained at is under 1024 px (800 for
#: EfficientNet-L2, 518 for DINOv2), and one batch of 32 RGB images at 1024 px already
#: needs about 400 MB before a single activation. Beyond that a typo (``100000``) would
#: only end in a MemoryError after the whole preflight.
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 1024


def _image_size(cfg: object) -> None:
    v = getattr(cfg, "image_size", None)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or not MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"image_size (--image-size) a whole number of pixels from {MIN_IMAGE_SIZE} to "
            f"{MAX_IMAGE_SIZE}, or unset for the backbone's own input size",
            f"image_size={v!r}",
            "pass e.g. --image-size 224 (the usual ImageNet size), or drop the option",
        )


@dataclass
class DataConfig:
    source: str = _f(
        "",
        "Image folder (one subfolder per class), a table of texts (.csv .tsv .jsonl "
        ".parquet) or a bundled dataset name.",
    )
    text_cols: list[str] | None = _f(  # noqa: RUF009 (the default is None)
        None, "Text column(s) of a table, joined when several (default: 'text')."
    )
    label_col: str = _f("label", "Label column of a table.")
    val: str | None = _f(None, "Validation folder; default: a stratified split of the source.")
    test: str | None = _f(None, "Test folder; default: a stratified split of the source.")
    val_fraction: float = _f(0.15, "Fraction of the source held out for validation.")
    test_fraction: float = _f(0.15, "Fraction of the source held out for testing.")
    per_class: int | None = _f(None, "Use only this many labelled training images per class.")
    max_test: int | None = _f(None, "Evaluate on at most this many test images (stratified).")
    image_size: int | None = _f(
        None, "Input size in pixels (16 to 1024); default: the backbone's own."
    )
    max_length: int | None = _f(
        None, "Texts: tokens kept per text (longer ones are truncated); default 256."
    )
    augment: str = _f("light", "Training augmentation: none, light or strong.")
    tta: str = _f(
        "auto",
        "Test-time augmentation of a frozen image backbone's features: hflip (the mean of "
        "the image's and its mirror image's embeddings; the probe trains on both), none, "
        "or auto (hflip for images).",
    )
    skip_bad: bool = _f(False, "Leave out unreadable images instead of stopping.")
    max_pixels: int = _f(89_478_485, "Images with more pixels are refused (decompression bombs).")
    split_seed: int = _f(0, "Seed of the train/validation/test split.")
    label_seed: int | None = _f(
        None, "Seed of the per_class draw of labelled examples; default: split_seed."
    )

    def __post_init__(self) -> None:
        _fraction(self, "val_fraction", "test_fraction")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                "val_fraction + test_fraction < 1",
                f"{self.val_fraction} + {self.test_fraction}",
                "hold out less data",
            )
        _positive(self, "per_class", "max_test", "image_size", "max_length", "max_pixels")
        _image_size(self)
        _choice(self, "augment", ("none", "light", "strong"))
        _choice(self, "tta", ("auto", "none", "hflip"))


@dataclass
class BackboneConfig:
    name: str = _f(
        "auto",
        "Backbone: a registered name, any timm architecture, a Hugging Face encoder "
        "folder, or an image run folder (its trained backbone, e.g. from meta-train); auto "
        "picks efficientnet_lite0 for images and minilm-l6 for texts.",
    )
    weights: str | None = _f(
        None, "Local weights file (.safetensors; .pth/.bin loaded without code execution)."
    )
    pretrained: bool = _f(True, "Load pretrained weights (False: random initialisation).")
    allow_download: bool = _f(False, "Allow downloading weights from the Hugging Face hub.")
    drop_rate: float = _f(0.0, "Dropout before the classifier head.")
    pooling: str | None = _f(
        None,
        "Text: how token vectors become one embedding. Transformer encoders: mean (over "
        "tokens) or cls; word vectors: sif (smooth inverse frequency, the default), mean or "
        "max. Default: the backbone's own.",
    )
    oov: str = _f(
        "auto",
        "Word vectors: what a word outside the vocabulary becomes: unk (one shared vector), "
        "skip (dropped), subword (composed from fastText character n-grams), domain (the "
        "domain words of vectors from `headstart embed-train`); auto: subword when the "
        "vectors have n-grams, domain for domain-trained vectors, else skip.",
    )
    tokenizer: str = _f(
        "default",
        "Word vectors: how texts become words: default (numbers, clitics and punctuation "
        "split as GloVe's and word2vec's corpora were) or simple (runs of letters and digits).",
    )
    add_domain_tokens: int = _f(
        0,
        "Hugging Face text encoders: add the N most frequent over-fragmented words of the "
        "training texts to the tokenizer (letters only, 4 or more long, seen twice or more, "
        "split into 2 or more pieces; those of 3 or more pieces first), each new embedding "
        "the mean of its former pieces'; then train as --strategy says (finetune trains "
        "them). Saved with the run. 0: none.",
    )
    features: str = _f(
        "auto",
        "Features a frozen backbone gives its probe: layers (the pooled outputs of its "
        "last 3 layer groups, each unit-scaled, concatenated), final (the last layer "
        "only), or auto (layers for a pretrained backbone under linear-probe, prototypes "
        "or auto, else final).",
    )

    def __post_init__(self) -> None:
        _choice(self, "features", ("auto", "layers", "final"))
        if self.pooling is not None:
            _choice(self, "pooling", ("mean", "cls", "sif", "max"))
        _choice(self, "oov", ("auto", "unk", "skip", "subword", "domain"))
        _choice(self, "tokenizer", ("default", "simple"))
        if self.add_domain_tokens < 0:
            raise ConfigError(
                "add_domain_tokens >= 0",
                repr(self.add_domain_tokens),
                "pass 0 (none) or a positive number of words",
            )
        if not self.name:
            raise ConfigError("a backbone name", "an empty name", "pass --backbone NAME")
        _fraction(self, "drop_rate")


@dataclass
class StrategyConfig:
    name: str = _f(
        "auto",
        "Transfer strategy (a registered name); auto chooses from the labels per class and "
        "a cross-validated probe score, and says why.",
    )
    head: str = _f(
        "auto",
        "Classifier head fitted on embeddings: auto (the strategy's own: prototype for "
        "prototypes and setfit, else linear) or a registered name.",
    )
    layer_decay: float | None = _f(
        None,
        "Discriminative learning rates: each layer group below the head gets lr x decay^depth.",
    )
    backbone_lr_scale: float = _f(0.1, "Backbone learning rate as a fraction of the head's.")
    head_c: float = _f(1.0, "Inverse regularisation strength C of a scikit-learn head.")
    bn_stats: str = _f(
        "frozen",
        "BatchNorm statistics of a pretrained backbone while fine-tuning: frozen (kept as "
        "pretrained, the stable choice for small data) or update.",
    )
    peft: str | None = _f(
        None,
        "With freeze:N or gradual: train only parameter-efficient tensors in the groups "
        "that train (lora: LoRA adapters; bitfit: biases and norms); the run folder keeps "
        "only those.",
    )
    lora_targets: str | None = _f(
        None,
        "LoRA: the layers that get adapters, module names or their last parts, "
        "comma-separated (default: every linear and non-depthwise convolutional layer of "
        "the body).",
    )

    def __post_init__(self) -> None:
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(
                "layer_decay in (0, 1]", repr(self.layer_decay), "use a value such as 0.7"
            )
        _positive(self, "backbone_lr_scale", "head_c")
        _choice(self, "bn_stats", ("frozen", "update"))
        if self.peft is not None:
            _choice(self, "peft", ("lora", "bitfit"))


#: the experiment trackers ``--tracker`` names (Accelerate's tracker API)
TRACKERS = ("tensorboard", "mlflow", "trackio")


@dataclass
class TrainConfig:
    epochs: int = _f(10, "Maximum training epochs.")
    batch_size: int = _f(32, "Batch size (per device).")
    lr: float = _f(
        1e-3, "Peak learning rate of the head (AdamW); auto: the range test's suggestion."
    )
    lr_find: bool = _f(
        False,
        "Before training, run the learning-rate range test from the strategy's start state "
        "and train at its suggestion (what --lr auto sets).",
    )
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to norms and biases).")
    warmup_fraction: float = _f(0.1, "Fraction of steps spent warming up the learning rate.")
    label_smoothing: float = _f(0.1, "Label smoothing of the cross-entropy loss.")
    patience: int = _f(3, "Early stopping: epochs without a better validation macro-F1.")
    grad_accum: int = _f(1, "Gradient accumulation steps.")
    mixed_precision: str = _f("auto", "auto (bf16 on a supporting GPU), no, fp16 or bf16.")
    device: str = _f("auto", "auto, cpu or cuda.")
    seed: int = _f(0, "Random seed of initialisation, shuffling and augmentation.")
    deterministic: bool = _f(False, "Use deterministic algorithms only (slower on GPU).")
    num_workers: int = _f(0, "Data loading worker processes.")
    checkpoint: bool = _f(True, "Save a checkpoint after every epoch, for --resume.")
    tracker: str | None = _f(
        None,
        "Log the config and per-epoch metrics to an experiment tracker through Accelerate: "
        "tensorboard, mlflow or trackio (the extra headstart[trackers]); files under "
        "OUT/trackers unless the tracker is configured otherwise (MLFLOW_TRACKING_URI, "
        "TRACKIO_DIR).",
    )
    keep_checkpoint: bool = _f(
        False,
        "Keep the training checkpoint (weights and optimiser state, for --resume) when the "
        "run finishes; by default it is removed, since a finished run has nothing to resume.",
    )

    def __post_init__(self) -> None:
        if self.lr == "auto":  # lr: auto in a config file
            self.lr, self.lr_find = default_of(TrainConfig, "lr"), True
        _positive(self, "epochs", "batch_size", "lr", "grad_accum", "patience")
        _fraction(self, "warmup_fraction", "label_smoothing")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay >= 0", repr(self.weight_decay), "use e.g. 0.01")
        _choice(self, "mixed_precision", ("auto", "no", "fp16", "bf16"))
        _choice(self, "device", ("auto", "cpu", "cuda"))
        if self.tracker is not None:
            _choice(self, "tracker", TRACKERS)


@dataclass
class EvalConfig:
    batch_size: int = _f(64, "Batch size for embedding and evaluation.")

    def __post_init__(self) -> None:
        _positive(self, "batch_size")


#: what --keep-models may keep of a sweep's cells
KEEP_MODELS = ("best", "all", "none")


#: the engines that compute a loaded run's logits (see headstart.engines)
ENGINE_CHOICES = ("auto", "onnx", "torch")


@dataclass
class PredictConfig:
    """How ``headstart predict`` and ``evaluate`` (and ``headstart.load``) run a model."""

    engine: str = _f(
        "auto",
        "Prediction engine: auto (onnxruntime for an image run with a fresh `headstart "
        "export` on the CPU, else torch), onnx or torch.",
    )

    def __post_init__(self) -> None:
        _choice(self, "engine", ENGINE_CHOICES)


@dataclass
class ExportConfig:
    """``headstart export``: a run's model as ONNX, checked against the run's own model."""

    format: str = _f("onnx", "Export format (onnx).")
    quantize: str = _f(
        "none",
        "Also write an int8 model.int8.onnx: int8 (dynamic for text encoders, static QDQ "
        "calibrated on training images for convnets), or none.",
    )
    out: str | None = _f(None, "Output folder (default: RUN/export, which predict uses).")
    tolerance: float = _f(
        1e-3,
        "Parity check: the largest |ONNX - torch| logit difference allowed, relative to the "
        "logit scale (max(1, largest |torch logit|)).",
    )
    parity: bool = _f(
        True,
        "Check the ONNX logits against the run's model on a sample of its test split (needs "
        "the run's data); --no-parity skips it.",
    )
    parity_samples: int = _f(64, "How many test inputs the parity check compares.")
    calibration_samples: int = _f(
        128, "Training images that calibrate static int8 quantisation (convnets)."
    )
    batch_size: int = _f(64, "Batch size of the checks.")

    def __post_init__(self) -> None:
        _choice(self, "format", ("onnx",))
        _choice(self, "quantize", ("none", "int8"))
        _positive(self, "tolerance", "parity_samples", "calibration_samples", "batch_size")


@dataclass
class CompareConfig:
    strategies: list[str] = _lf(  # noqa: RUF009 (a default_factory field)
        ["scratch", "linear-probe", "finetune", "lp-ft", "gradual"],
        "Strategies to compare, every one on the same splits and training budget.",
    )
    budgets: list[int] = _lf(  # noqa: RUF009
        [10, 50, 100], "Label budgets: labelled training examples per class."
    )
    seeds: int = _f(3, "Seeds per budget (each draws its own labelled examples).")
    baseline: str = _f("scratch", "The strategy every other is compared against.")
    alpha: float = _f(0.05, "Significance level of McNemar's test for the verdict.")
    confidence: float = _f(0.95, "Confidence level of the intervals.")
    time_budget: float | None = _f(
        None,
        "Minutes: start no new cell after this long (each run trains at least one); run "
        "the same command again to go on.",
    )
    keep_models: str = _f(
        "best",
        "Which cells keep their model once the comparison is complete: best (the cells of "
        "the most accurate strategy at each budget), all, or none. The others keep what "
        "the report needs (metrics, history, test predictions).",
    )

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ConfigError("at least one strategy", "none", "pass --strategies scratch,lp-ft")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(
                "each strategy once", ", ".join(self.strategies), "remove the repeated names"
            )
        if not self.budgets or any(int(b) <= 0 for b in self.budgets):
            raise ConfigError(
                "label budgets > 0 (examples per class)",
                repr(self.budgets),
                "pass e.g. --budgets 10,50,100",
            )
        self.budgets = sorted({int(b) for b in self.budgets})
        _positive(self, "seeds", "time_budget")
        _choice(self, "keep_models", KEEP_MODELS)
        for name in ("alpha", "confidence"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ConfigError(f"{name} in (0, 1)", repr(v), f"use e.g. {name}=0.05")


RANDOM_PREFIX = "random:"


@dataclass
class RankConfig:
    backbones: list[str] = _lf(  # noqa: RUF009 (a default_factory field)
        [],
        "Candidates to rank: backbone names; NAME@GROUP for the features after one layer "
        f"group; {RANDOM_PREFIX}NAME for the architecture with random weights (a floor).",
    )
    layers: str | None = _f(
        None,
        "Rank the pooled features after layer groups of each backbone: all, or group names "
        "separated by commas (see `headstart backbones NAME`).",
    )
    scores: list[str] = _lf(  # noqa: RUF009
        ["logme", "leep", "nce", "hscore", "hscore-shrink", "knn", "linear", "ridge"],
        "Transferability scores to compute.",
    )
    score: str = _f(
        "linear",
        "The score that picks the recommended candidate (default: the cross-validated linear "
        "probe, the score that agreed best with fine-tuned accuracy in benchmarks/bench_rank.py).",
    )
    max_per_class: int | None = _f(
        100, "Score a stratified subsample of at most this many examples per class."
    )
    seed: int = _f(0, "Seed of the subsample and of randomly initialised candidates.")

    def __post_init__(self) -> None:
        if not self.backbones:
            raise ConfigError(
                "at least one candidate backbone",
                "none",
                "pass --backbones efficientnet_lite0,efficientnet_lite1 or --backbone NAME",
            )
        for name in ("backbones", "scores"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"each of --{name} once", ", ".join(values), "remove repeats")
        if not self.scores:
            raise ConfigError("at least one score", "none", "pass e.g. --scores logme,knn")
        if self.score not in self.scores:
            raise ConfigError(
                f"the recommending score among the scores computed ({', '.join(self.scores)})",
                repr(self.score),
                f"add {self.score} to --scores or pick --score from them",
            )
        _positive(self, "max_per_class")


#: the pruners of ``headstart tune`` (Optuna's MedianPruner, SuccessiveHalvingPruner)
PRUNERS = ("median", "halving", "none")


@dataclass
class TuneConfig:
    trials: int = _f(20, "Trials in the study in all (a study run again adds up to this many).")
    time_budget: float | None = _f(
        None, "Start no new trial after this many seconds (a trial under way finishes)."
    )
    space: str | None = _f(
        None,
        "A YAML file of the search space (parameters and their ranges, see the README); "
        "default: headstart's space over strategy, learning rate, batch size, weight decay, "
        "dropout, label smoothing, augmentation, layer decay and freeze depth.",
    )
    storage: str | None = _f(
        None,
        "Optuna storage URL shared by workers (postgresql://..., sqlite:///..., or a journal "
        "file path ending in .log); default: OUT/study.db (SQLite), so running again adds "
        "trials to the same study.",
    )
    workers: int = _f(1, "Worker processes on this machine sharing the study's storage.")
    pruner: str = _f(
        "median",
        "Stop poor trials early from their per-epoch validation macro-F1: median, halving "
        "(successive halving) or none.",
    )
    seed: int = _f(0, "Seed of the TPE sampler (and of every trial's run).")

    def __post_init__(self) -> None:
        _positive(self, "trials", "workers", "time_budget")
        _choice(self, "pruner", PRUNERS)


@dataclass
class AdaptConfig:
    target: str = _f(
        "",
        "Target domain: a folder of images (flat: unlabelled; or one subfolder per class), "
        "a table of texts (without the label column: unlabelled) or a bundled dataset. "
        "Labels, if present, are never shown to the methods; they score the result when "
        "--target-eval is not given.",
    )
    target_eval: str | None = _f(None, "Labelled target data to evaluate on (optional).")
    methods: list[str] = _lf(  # noqa: RUF009 (a default_factory field)
        ["dann"],
        "Adaptation methods (the domain adaptation strategies `headstart strategies` lists) "
        "or all.",
    )
    seeds: int = _f(3, "Seeds; every method and source-only train once per seed.")

    def __post_init__(self) -> None:
        if not self.target:
            raise ConfigError("a target domain", "none", "pass --target DATA")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError("methods named once each", repr(self.methods), "e.g. --method dann")
        _positive(self, "seeds")


#: the strategies of ``headstart fewshot`` (episode classifiers, not fit strategies)
FEWSHOT_STRATEGIES = ("prototypes", "logistic", "prototypes-ft", "zeroshot", "setfit")
#: few-shot strategies for texts only
FEWSHOT_TEXT_ONLY = ("zeroshot", "setfit")
#: few-shot strategies that train a copy of the backbone in every episode
FEWSHOT_TRAINED = ("prototypes-ft", "setfit")


def _fewshot_strategy_notes() -> str:
    names = []
    for s in FEWSHOT_STRATEGIES:
        notes = [
            note
            for note, applies in (
                ("texts", s in FEWSHOT_TEXT_ONLY),
                ("trains once per episode", s in FEWSHOT_TRAINED),
            )
            if applies
        ]
        names.append(f"{s} ({'; '.join(notes)})" if notes else s)
    return ", ".join(names)


@dataclass
class FewShotConfig:
    """``headstart fewshot``: N-way K-shot episodes over backbones and strategies."""

    backbones: list[str] = _lf(  # noqa: RUF009 (a default_factory field)
        ["auto"], "Backbones: names as in fit, or run folders (e.g. from `headstart meta-train`)."
    )
    strategies: list[str] = _lf(  # noqa: RUF009
        ["prototypes", "logistic"], f"Few-shot strategies: {_fewshot_strategy_notes()}."
    )
    ways: int = _f(5, "Classes per episode.")
    shots: list[int] = _lf([1, 5], "Labelled examples per class.")  # noqa: RUF009
    queries: int = _f(15, "Query examples per class.")
    episodes: int = _f(300, "Episodes per setting.")
    classes: list[int] | None = _f(  # noqa: RUF009 (the default is None)
        None, "Classes to draw episodes from: 5-9, 0,3,7 or names (default all)."
    )
    pool: int = _f(100, "Examples per class embedded to draw episodes from.")
    image_size: int | None = _f(SMALL_IMAGE_SIZE, "Input size in pixels.")
    max_length: int | None = _like(DataConfig, "max_length")
    seed: int = _f(0, "Seed of the episodes.")
    device: str = _like(TrainConfig, "device")
    text_cols: list[str] | None = _like(DataConfig, "text_cols")  # noqa: RUF009 (None)
    label_col: str = _like(DataConfig, "label_col")

    def __post_init__(self) -> None:
        _image_size(self)
        unknown = [s for s in self.strategies if s not in FEWSHOT_STRATEGIES]
        if unknown:
            raise ConfigError(
                f"few-shot strategies among {', '.join(FEWSHOT_STRATEGIES)}",
                ", ".join(unknown),
                "pass e.g. --strategy prototypes,logistic",
            )
        if self.pool < max(self.shots) + self.queries:
            raise ConfigError(
                f"a pool of at least shots + queries = {max(self.shots) + self.queries} "
                "examples per class",
                f"--pool {self.pool}",
                "raise --pool or lower --queries",
            )


#: meta-learning methods of ``headstart meta-train``
META_METHODS = ("protonet",)


@dataclass
class MetaConfig:
    """``headstart meta-train``: episodic meta-training of a backbone on source classes."""

    classes: list[int] = field(
        metadata={"help": "Source classes to train on: 0-4, 0,3,7 or names."}
    )
    method: str = _f("protonet", f"Meta-learning method: {', '.join(META_METHODS)}.")
    backbone: str = _f("efficientnet_lite0", "Image backbone to meta-train.")
    image_size: int | None = _f(SMALL_IMAGE_SIZE, "Input size in pixels.")
    ways: int = _f(5, "Classes per training episode.")
    shots: int = _f(5, "Support examples per class.")
    queries: int = _f(10, "Query examples per class.")
    episodes: int = _f(300, "Training episodes.")
    # Fashion-MNIST 0-4 -> 5-9, 300 episodes: 1e-4 overfits the source classes (held-out
    # 1-shot 0.60 vs 0.64 without meta-training), 3e-5 gives 0.66, 1e-5 0.63
    lr: float = _f(3e-5, "Learning rate (AdamW).")
    freeze: int = _f(0, "Layer groups kept as pretrained, from the input.")
    bn_stats: str = _like(StrategyConfig, "bn_stats")
    augment: str = _like(DataConfig, "augment")
    val_episodes: int = _f(
        200, "Episodes on held-out images of the source classes that measure the training."
    )
    seed: int = _f(0, "Seed.")
    device: str = _like(TrainConfig, "device")
    checkpoint_every: int = _f(50, "Save a checkpoint every this many episodes.")

    def __post_init__(self) -> None:
        _image_size(self)
        if self.method not in META_METHODS:
            raise ConfigError(
                f"a meta-learning method: {', '.join(META_METHODS)}",
                repr(self.method),
                "pass --method protonet",
            )
        if self.bn_stats not in ("frozen", "update"):
            raise ConfigError(
                "bn_stats frozen or update", repr(self.bn_stats), "pass bn_stats='frozen'"
            )
        if self.freeze < 0:
            raise ConfigError("--freeze 0 or more groups", str(self.freeze), "pass --freeze 0")
        if len(self.classes) < 2:
            raise ConfigError(
                "at least 2 source classes to draw episodes from",
                f"{self.classes}",
                "pass e.g. --classes 0-4",
            )


#: rounds of refinement of zero-shot label directions on the data (0: the prompts alone)
REFINE_ROUNDS = 5


def match_descriptions(given: dict[str, str], labels: list[str]) -> dict[str, str]:
    """Descriptions keyed by the label they describe (matched ignoring case)."""
    lookup = {name.casefold(): name for name in labels}
    unknown = [k for k in given if k.casefold() not in lookup]
    if unknown:
        raise ConfigError(
            f"descriptions of the labels {labels}",
            f"descriptions of {unknown}",
            "name each description after a label: --describe LABEL=TEXT",
        )
    return {lookup[k.casefold()]: v for k, v in given.items()}


@dataclass
class ZeroShotConfig:
    """``headstart zeroshot``: classification from label names, without labelled examples."""

    labels: list[str] = _lf([], "Label names; default: the data's class names.")  # noqa: RUF009
    templates: list[str] = _lf(  # noqa: RUF009
        [],
        "Prompts with {} for the label; several are averaged. Default: built-in text or "
        "image templates.",
    )
    descriptions: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Descriptions of labels (label -> text), each one more prompt of it."},
    )
    backbone: str = _f(
        "auto",
        "Texts: a sentence encoder (default minilm-l6). Images: an ImageNet-1k classifier "
        "(default efficientnet_lite0, mapped to the labels by ConSE; weak) or a local folder "
        "holding a transformers CLIP model.",
    )
    text_backbone: str = _f(
        "minilm-l6", "Images through ConSE: the sentence encoder of labels and class names."
    )
    max_length: int | None = _like(DataConfig, "max_length")
    image_size: int | None = _like(DataConfig, "image_size")
    max_examples: int | None = _f(None, "Classify a stratified sample of this many.")
    refine: int = _f(
        REFINE_ROUNDS,
        "Rounds of k-means on the data, seeded by the label directions, that move each "
        "direction to where its examples are (0: the prompts alone).",
    )
    batch_size: int = _like(EvalConfig, "batch_size")
    device: str = _like(TrainConfig, "device")
    seed: int = _f(0, "Seed of the --max-examples sample.")
    text_cols: list[str] | None = _like(DataConfig, "text_cols")  # noqa: RUF009 (None)
    label_col: str = _like(DataConfig, "label_col")

    def __post_init__(self) -> None:
        _image_size(self)
        for t in self.templates:
            if t.count("{}") != 1:
                raise ConfigError(
                    "a template with one {} where the label goes",
                    repr(t),
                    'write it like --template "This article is about {}."',
                )
        if self.labels:
            match_descriptions(self.descriptions, self.labels)
        if self.refine < 0:
            raise ConfigError("--refine 0 or more rounds", str(self.refine), "pass --refine 5")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(
                "--max-examples of at least 1", str(self.max_examples), "drop it or pass e.g. 500"
            )


@dataclass
class ContrastiveConfig:
    """SetFit-style contrastive fine-tuning: how many pairs, in steps of how many, at which
    learning rate."""

    # chosen on BBC News label draws (seeds 10-12, 8 per class) that the benchmark does not
    # use: 512 pairs among the texts of a step beat 64 pairs (0.918 vs 0.916 with the
    # prototype head, 0.911 vs 0.908 with logistic regression) for 25% more time
    pairs_per_example: int = _f(100, "Pairs drawn per labelled example.")
    max_pairs: int = _f(4000, "At most this many pairs in all.")
    pairs_per_step: int = _f(512, "Pairs per training step, drawn among the step's texts.")
    texts_per_step: int = _f(64, "Texts encoded per training step, at most.")
    lr: float = _f(1e-4, "Learning rate of the encoder.")
    warmup_fraction: float = _like(TrainConfig, "warmup_fraction")
    seed: int = _f(0, "Seed of the pairs and of the texts of each step.")


#: the engines of ``headstart embed-train`` (gensim's models)
EMBED_MODELS = ("word2vec", "fasttext")
#: what ``embed-train`` does to the vectors of words the init vectors already have
EMBED_KEEP = ("frozen", "slow")


@dataclass
class EmbedTrainConfig:
    """``headstart embed-train``: word vectors trained on an unlabelled domain corpus,
    starting from pretrained ones."""

    init: str = _f(
        "glove-6b-50d",
        "Pretrained word vectors to start from: a registered name (glove-6b-50d), a "
        "word2vec, fastText or GloVe file, or a headstart vectors folder. Their dimension "
        "is the new vectors' own.",
    )
    model: str = _f(
        "word2vec",
        "Engine (gensim): word2vec (CBOW), or fasttext (CBOW with character n-grams, which "
        "also compose vectors for words never seen: --oov subword).",
    )
    epochs: int = _f(30, "Passes over the corpus (a corpus of a few hundred documents needs many).")
    window: int = _f(5, "Context words on each side of a word.")
    min_count: int = _f(
        1,
        "A word outside the init vectors is learned when the corpus has it this often (1: "
        "every domain word; one that is seen once starts from the pretrained vectors of its "
        "context, a fair estimate).",
    )
    keep: str = _f(
        "slow",
        "Vectors of the words the init vectors have: frozen (exactly the pretrained ones) or "
        "slow (updated at a tenth of the learning rate, then held within --max-shift).",
    )
    max_shift: float = _f(
        0.25,
        "With --keep slow: each pretrained word's vector ends at most this fraction of its "
        "length away from the pretrained vector.",
    )
    buckets: int = _f(
        100_000,
        "fasttext: rows of hashed character n-gram vectors (ignored when the init vectors "
        "carry their own n-grams).",
    )
    text_cols: list[str] | None = _like(DataConfig, "text_cols")  # noqa: RUF009 (None)
    seed: int = _f(0, "Seed of the initial vectors and of gensim's sampling.")
    workers: int = _f(1, "gensim worker threads (1: the same vectors on every run).")

    def __post_init__(self) -> None:
        if self.model not in EMBED_MODELS:
            raise ConfigError(
                f"--model one of {', '.join(EMBED_MODELS)}",
                repr(self.model),
                "pass --model word2vec (the default) or --model fasttext",
            )
        if self.keep not in EMBED_KEEP:
            raise ConfigError(
                f"--keep one of {', '.join(EMBED_KEEP)}",
                repr(self.keep),
                "pass --keep slow (the default) or --keep frozen",
            )
        _positive(self, "epochs", "window", "min_count", "buckets", "workers")
        if not 0.0 <= self.max_shift < float("inf"):
            raise ConfigError(
                "--max-shift a fraction >= 0", repr(self.max_shift), "pass e.g. --max-shift 0.25"
            )
        if not self.init:
            raise ConfigError("init word vectors", "an empty name", "pass --init glove-6b-50d")


#: what ``headstart serve --engine`` accepts (``auto``: ONNX when the run folder has an
#: exported model and onnxruntime is installed, else torch)
SERVE_ENGINES = ("auto", "onnx", "torch")


@dataclass
class ServeConfig:
    """``headstart serve``: run folders behind an HTTP API and a web page."""

    host: str = _f(
        "127.0.0.1",
        "Address to listen on. The default answers this machine only; 0.0.0.0 listens on "
        "every network interface (then set --token).",
    )
    port: int = _f(8000, "TCP port to listen on.")
    token: str | None = _f(
        None,
        "Require this bearer token (header `Authorization: Bearer TOKEN`) on every request "
        "but /health and the web page; default: the HEADSTART_TOKEN environment variable, "
        "else none.",
    )
    max_body_mb: float = _f(
        16.0, "Largest request body in MB; a larger one is refused (413) before it is read."
    )
    max_inputs: int = _f(64, "Most images or texts in one request (more: 400).")
    max_batch: int = _f(
        32, "Most inputs per forward pass, gathered across requests (1: no batching)."
    )
    batch_wait_ms: float = _f(
        5.0,
        "How long a batch waits, at most, for requests still being received, in "
        "milliseconds (a lone request runs at once).",
    )
    top_k: int = _f(5, "Labels per input in a response, unless the request asks ?top_k=N.")
    device: str = _like(TrainConfig, "device")
    engine: str = _f(
        "auto",
        "Inference engine: auto (ONNX when the run folder has an exported model), onnx or torch.",
    )

    def __post_init__(self) -> None:
        _positive(self, "max_body_mb", "max_inputs", "max_batch", "top_k")
        if not 0 <= self.port <= 65535:
            raise ConfigError("--port from 0 to 65535", repr(self.port), "pass e.g. --port 8000")
        if not 0 <= self.batch_wait_ms <= 10_000:
            raise ConfigError(
                "--batch-wait-ms from 0 to 10000", repr(self.batch_wait_ms), "pass e.g. 5"
            )
        if not self.host:
            raise ConfigError("a --host address", "an empty one", "pass --host 127.0.0.1")
        if self.token is not None and not self.token.strip():
            raise ConfigError("a non-empty --token", "an empty one", "drop --token or set one")
        _choice(self, "engine", SERVE_ENGINES)
        _choice(self, "device", ("auto", "cpu", "cuda"))


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "backbone": BackboneConfig,
    "strategy": StrategyConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


#: settings that older versions wrote and that no longer exist (dropped when reading):
#: the torch linear probe's epochs (the probe is now fitted to convergence)
RETIRED_KEYS = {"strategy": ("probe_epochs",)}


def _build(cls: type[C], values: dict[str, Any], where: str) -> C:
    if not isinstance(values, dict):
        raise ConfigError(f"a mapping under {where!r}", type(values).__name__, "fix the YAML")
    values = {k: v for k, v in values.items() if k not in RETIRED_KEYS.get(where, ())}
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"keys of {where!r} among {', '.join(sorted(known))}",
            f"unknown key(s) {', '.join(unknown)}",
            "remove or rename them",
        )
    return cls(**values)


@dataclass
class RunConfig:
    """``headstart fit`` (and each run of compare and adapt): one transfer, in sections."""

    data: DataConfig = field(
        default_factory=DataConfig, metadata={"help": "The data and how it is read and split."}
    )
    backbone: BackboneConfig = field(
        default_factory=BackboneConfig, metadata={"help": "The pretrained backbone."}
    )
    strategy: StrategyConfig = field(
        default_factory=StrategyConfig, metadata={"help": "How the backbone is transferred."}
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "The training loop."})
    eval: EvalConfig = field(
        default_factory=EvalConfig, metadata={"help": "Embedding and evaluation."}
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"sections among {', '.join(SECTIONS)}",
                f"unknown section(s) {', '.join(unknown)}",
                "remove or rename them",
            )
        return cls(**{k: _build(SECTIONS[k], v or {}, k) for k, v in d.items()})

    def to_yaml(self, path: str | Path) -> None:
        from headstart.storage import write_yaml  # the CLI imports this module first

        write_yaml(path, self.to_dict())

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        import yaml

        try:
            d = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError("valid YAML", f"a parse error in {path}: {e}", "fix the file") from e
        # a run folder's config.yaml carries the backbone spec beside the config
        d.pop("spec", None)
        return cls.from_dict(d)
