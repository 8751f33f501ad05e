"""scikit-learn style facade: ``TransferClassifier`` and ``PretrainedEmbedder``.

Follows scikit-learn's estimator rules: ``__init__`` only stores its arguments, learned
attributes end in ``_``, ``fit`` returns ``self``, predicting before fitting raises a
not-fitted error. Both work inside ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import sklearn.exceptions
from rich.console import Console
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin

from headstart import errors
from headstart.backbones import create_backbone
from headstart.backbones.catalog import DEFAULT_BACKBONES
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.data import TextSamples, from_arrays, from_texts
from headstart.data.loading import prepare_data
from headstart.data.text_samples import is_missing, is_missing_label
from headstart.device import resolve_device
from headstart.features import compute_embeddings
from headstart.paths import is_file
from headstart.runfolder import Predictor, save_config, save_model, write_json
from headstart.storage import atomic_write
from headstart.strategies import build_strategy
from headstart.training.callbacks import json_line
from headstart.workflows.fit import fit as fit_run


def as_samples(X: Any, y: Any = None, classes: list[str] | None = None) -> Any:
    """Texts when ``X`` holds strings that are not all existing files (a list, a tuple, a
    string array or a pandas Series of them; missing texts are read as empty); otherwise
    images (an array, or a list of image paths)."""
    if isinstance(X, str):
        X = [X]
    if type(X).__module__.startswith("pandas") and getattr(X, "ndim", 0) == 1:
        X = X.tolist()  # a Series or Index of texts
    if isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind in "USO":
        X = X.tolist()
    if _texts(X):
        return from_texts(list(X), y, classes=classes)
    return from_arrays(X, y, classes=classes)


def _texts(X: Any) -> bool:
    """A non-empty list or tuple of strings (missing values allowed) that are not all
    existing files."""
    if not isinstance(X, (list, tuple)) or not X:
        return False
    strings = [x for x in X if isinstance(x, str)]
    if not strings or len(strings) + sum(is_missing(x) for x in X) != len(X):
        return False
    return len(strings) != len(X) or not all(is_file(x) for x in strings)


class NotFittedError(errors.NotFittedError, sklearn.exceptions.NotFittedError):
    """Raised when predicting before ``fit``; also scikit-learn's NotFittedError."""


def _check_fitted(est: BaseEstimator, attr: str) -> None:
    if not hasattr(est, attr):
        raise NotFittedError(
            f"a fitted {type(est).__name__}",
            "one that has not been fitted",
            "call fit(X, y) first, or load a saved model with load(path)",
        )


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Transfer a pretrained backbone to images or texts ``X`` with labels ``y``.

    ``X``: an array of images (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or floats in
    [0, 1]; a list of image file paths; or a list of texts. ``y``: any labels (strings or
    integers). ``backbone="auto"`` picks efficientnet_lite0 for images, minilm-l6 for texts;
    ``strategy="auto"`` chooses from the data as ``headstart fit`` does (a cross-validated
    probe or class means with few labels per class, lp-ft from 50 per class).
    """

    def __init__(
        self,
        backbone: str = "auto",
        strategy: str = "auto",
        head: str = "auto",
        epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-3,
        layer_decay: float | None = None,
        image_size: int | None = None,
        max_length: int | None = None,
        augment: str = "light",
        val_fraction: float = 0.15,
        weights: str | None = None,
        seed: int = 0,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        self.backbone = backbone
        self.strategy = strategy
        self.head = head
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.layer_decay = layer_decay
        self.image_size = image_size
        self.max_length = max_length
        self.augment = augment
        self.val_fraction = val_fraction
        self.weights = weights
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _config(self) -> RunConfig:
        return RunConfig(
            data=DataConfig(
                source="arrays",
                val_fraction=self.val_fraction,
                test_fraction=0.0,
                image_size=self.image_size,
                max_length=self.max_length,
                augment=self.augment,
                split_seed=self.seed,
            ),
            backbone=BackboneConfig(name=self.backbone, weights=self.weights),
            strategy=StrategyConfig(
                name=self.strategy, head=self.head, layer_decay=self.layer_decay
            ),
            train=TrainConfig(
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                seed=self.seed,
                device=self.device,
            ),
        )

    def fit(self, X: Any, y: Any) -> TransferClassifier:
        y = np.asarray(y)
        if y.ndim != 1:
            raise errors.DataError(
                "y as a 1-D array of labels", f"shape {y.shape}", "pass y.ravel()"
            )
        missing = [i for i, v in enumerate(y.tolist()) if is_missing_label(v)]
        if missing:
            raise errors.DataError(
                "a label for every example in y (a missing label is not a class)",
                f"{len(missing)} missing label(s) (None, NaN or empty) at position(s) "
                + ", ".join(str(i) for i in missing[:10])
                + (" ..." if len(missing) > 10 else ""),
                "fill in those labels, or leave those examples out of X and y",
            )
        self.classes_ = np.unique(y)
        samples = as_samples(
            X, np.searchsorted(self.classes_, y), classes=[str(c) for c in self.classes_]
        )
        cfg = self._config()
        console = Console(quiet=not self.verbose)
        few_shot = build_strategy(cfg.strategy).few_shot
        data = prepare_data(
            cfg.data, console, progress=self.verbose, source=samples, few_shot=few_shot
        )
        with tempfile.TemporaryDirectory(prefix="headstart-") as tmp:
            result = fit_run(
                cfg, Path(tmp) / "run", progress=self.verbose, console=console, data=data
            )
        temperature = float(result.metrics.get("calibration", {}).get("temperature", 1.0))
        self.model_ = Predictor(result.backbone, result.classes, cfg, self.device, temperature)
        self.metrics_ = result.metrics
        self.history_ = result.history
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        _check_fitted(self, "model_")
        return self.model_.predict_proba(X, self.batch_size)

    def predict(self, X: Any) -> np.ndarray:
        _check_fitted(self, "model_")
        return self.classes_[self.predict_proba(X).argmax(1)]

    def save(self, path: str | Path) -> Path:
        """Write a run folder loadable by :meth:`load`, ``headstart.load`` and the CLI."""
        _check_fitted(self, "model_")
        path = Path(path)
        save_config(path, self.model_.cfg, self.model_.backbone.spec, list(self.model_.classes))
        save_model(path, self.model_.backbone)
        write_json(path / "metrics.json", self.metrics_)
        write_json(path / "calibration.json", {"temperature": self.model_.temperature})
        atomic_write(path / "history.jsonl", "".join(json_line(h) + "\n" for h in self.history_))
        write_json(
            path / "estimator.json",
            {"params": self.get_params(), "classes": self.classes_.tolist()},
        )
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> TransferClassifier:
        path = Path(path)
        est_file = path / "estimator.json"
        model = Predictor.load(path, device)
        if est_file.is_file():
            doc = json.loads(est_file.read_text())
            est = cls(**doc["params"])
            est.classes_ = np.asarray(doc["classes"])
        else:  # a run folder written by `headstart fit`
            est = cls(backbone=model.backbone.spec.name, strategy=model.cfg.strategy.name)
            est.classes_ = np.asarray(model.classes)
        est.model_ = model
        metrics_file = path / "metrics.json"
        est.metrics_ = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        est.history_ = []
        return est


class PretrainedEmbedder(TransformerMixin, BaseEstimator):
    """A frozen pretrained backbone as a scikit-learn transformer: images in, embeddings out."""

    def __init__(
        self,
        backbone: str = "auto",
        image_size: int | None = None,
        batch_size: int = 64,
        weights: str | None = None,
        device: str = "auto",
    ) -> None:
        self.backbone = backbone
        self.image_size = image_size
        self.batch_size = batch_size
        self.weights = weights
        self.device = device

    def fit(self, X: Any = None, y: Any = None) -> PretrainedEmbedder:
        name = self.backbone
        if name == "auto":
            texts = X is not None and isinstance(as_samples(X), TextSamples)
            name = DEFAULT_BACKBONES["text" if texts else "image"]
        self.backbone_ = create_backbone(
            BackboneConfig(name=name, weights=self.weights), 2, self.image_size
        )
        self.backbone_.eval()
        self.n_features_out_ = self.backbone_.spec.feature_dim
        return self

    def transform(self, X: Any) -> np.ndarray:
        _check_fitted(self, "backbone_")
        ds = self.backbone_.make_dataset(as_samples(X))
        emb = compute_embeddings(
            self.backbone_, ds, self.batch_size, resolve_device(self.device), progress=False
        )
        return emb.numpy()
