"""Dataclass configs for a run, validated on construction and round-tripped to YAML.

Help text lives once, in each field's metadata; the CLI reads it from there.
Unknown keys in a YAML file are an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from headstart.errors import ConfigError

C = TypeVar("C")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _lf(default: list[Any], help: str) -> Any:
    """A list-valued field (a fresh copy of ``default`` per instance)."""
    return field(default_factory=lambda: list(default), metadata={"help": help})


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
    image_size: int | None = _f(None, "Input size in pixels; default: the backbone's own.")
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
        None, "Text encoders: mean (over tokens) or cls; default: the backbone's own."
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
            _choice(self, "pooling", ("mean", "cls"))
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

    def __post_init__(self) -> None:
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(
                "layer_decay in (0, 1]", repr(self.layer_decay), "use a value such as 0.7"
            )
        _positive(self, "backbone_lr_scale", "head_c")
        _choice(self, "bn_stats", ("frozen", "update"))


@dataclass
class TrainConfig:
    epochs: int = _f(10, "Maximum training epochs.")
    batch_size: int = _f(32, "Batch size (per device).")
    lr: float = _f(1e-3, "Peak learning rate of the head (AdamW).")
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

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "lr", "grad_accum", "patience")
        _fraction(self, "warmup_fraction", "label_smoothing")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay >= 0", repr(self.weight_decay), "use e.g. 0.01")
        _choice(self, "mixed_precision", ("auto", "no", "fp16", "bf16"))
        _choice(self, "device", ("auto", "cpu", "cuda"))


@dataclass
class EvalConfig:
    batch_size: int = _f(64, "Batch size for embedding and evaluation.")

    def __post_init__(self) -> None:
        _positive(self, "batch_size")


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


ADAPT_METHODS = ("self-training", "fixmatch", "dann", "cdan", "coral", "mmd")


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
        ["dann"], f"Adaptation methods ({', '.join(ADAPT_METHODS)}) or all."
    )
    seeds: int = _f(3, "Seeds; every method and source-only train once per seed.")

    def __post_init__(self) -> None:
        if not self.target:
            raise ConfigError("a target domain", "none", "pass --target DATA")
        if self.methods == ["all"]:
            self.methods = list(ADAPT_METHODS)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError("methods named once each", repr(self.methods), "e.g. --method dann")
        _positive(self, "seeds")


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
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        try:
            d = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError("valid YAML", f"a parse error in {path}: {e}", "fix the file") from e
        # a run folder's config.yaml carries the backbone spec beside the config
        d.pop("spec", None)
        return cls.from_dict(d)
