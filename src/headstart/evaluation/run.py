"""Evaluation of a trained run: metrics of validation and test, temperature scaling, the
forgetting check on the source task and the leave-one-out estimate of prototypes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from headstart.backbones import Backbone
from headstart.config import RunConfig
from headstart.data.loading import (
    Samples,
    Splits,
)
from headstart.evaluation import (
    calibration_summary,
    classification_metrics,
    fit_temperature,
    print_metrics,
)
from headstart.features.embedder import Embedder
from headstart.features.store import Embeddings, LazyEmbeddings, as_batches
from headstart.heads.prototypes import leave_one_out_predictions
from headstart.strategies import Strategy

#: what a data source yields; both kinds share classes, labels, subset() and len()

#: below this many validation examples the fitted temperature is flagged as unreliable
FEW_FOR_CALIBRATION = 50


@dataclass
class EvalOutputs:
    """What evaluation computed on the split the report shows (test, else validation)."""

    split: str
    samples: Samples
    logits: torch.Tensor
    #: in memory, or disk-backed for a split above the embedder's ``disk_rows``
    embeddings: Embeddings
    temperature: float
    source_agreement: np.ndarray | None = None  # per example, when the backbone has one


def shown_split(data: Splits) -> tuple[str, Samples]:
    """The split the report and the forgetting check use: test, else validation, else
    (with no held-out data at all) the training data, named as such."""
    if data.test is not None and len(data.test):
        return "test", data.test
    if len(data.val):
        return "validation", data.val
    return "train", data.train


#: the fixed sample of pairs of shown texts whose similarities the retention compares
RETENTION_PAIRS = 2000


def source_features(
    backbone: Backbone, strategy: Strategy, emb: Embedder, data: Splits
) -> Embeddings | None:
    """Embeddings of the shown split by the original pretrained backbone (cached), for the
    forgetting check; None when there is nothing to check (an image backbone that came
    without a source-task head, or random weights)."""
    source = backbone.source_backbone()  # a probe's source head reads the final layer
    if source is not backbone:
        emb = Embedder(source, emb.cfg, emb.cache, emb.device, False, emb.console)
        backbone = source
    if backbone.source_head() is None and backbone.spec.modality != "text":
        return None
    if not strategy.uses_pretrained:
        return None
    name, samples = shown_split(data)
    return emb.lazy(samples, name)


def _split_outputs(
    backbone: Backbone,
    strategy: Strategy,
    emb: Embedder,
    samples: Samples,
    name: str,
) -> tuple[Embeddings, torch.Tensor]:
    """Embeddings and logits of a split: cached when the backbone is frozen, else computed
    from the trained backbone (one pass; the logits are the head applied to them). A
    frozen backbone's split above the embedder's ``disk_rows`` stays on disk and its logits
    are computed batch by batch."""
    e = emb.uncached(samples, name) if strategy.loop_trains else emb.lazy(samples, name)
    head = backbone.head()
    device_of_head = next(head.parameters()).device
    with torch.no_grad():  # any head module (a linear layer, timm's NormLinear, ...)
        if isinstance(e, LazyEmbeddings):
            logits = torch.cat(
                [head.eval()(b.to(device_of_head)).float().cpu() for b in e.batches()]
            )
        else:
            logits = head.eval()(e.to(device_of_head)).float().cpu()
    return e, logits


def evaluate_run(
    cfg: RunConfig,
    strategy: Strategy,
    backbone: Backbone,
    emb: Embedder,
    data: Splits,
    device: str,
    console: Console,
    progress: bool = False,
    source_before: Embeddings | None = None,
    oof_logits: np.ndarray | None = None,
) -> tuple[dict[str, Any], EvalOutputs]:
    """Metrics of validation and test, temperature scaling fitted on validation (ECE
    before and after on both), and the forgetting check on the source task."""
    result: dict[str, Any] = {"classes": data.classes}
    outputs: dict[str, tuple[Samples, Embeddings, torch.Tensor]] = {}
    shown, _ = shown_split(data)
    splits = [("validation", data.val), ("test", data.test)]
    if shown == "train":  # no held-out data: figures of the training data, said so
        splits.append(("train", data.train))
    for name, samples in splits:
        if samples is None or len(samples) == 0:
            continue
        e, logits = _split_outputs(backbone, strategy, emb, samples, name)
        outputs[name] = (samples, e, logits)
        pred = logits.argmax(1).numpy()
        result[name] = classification_metrics(samples.labels, pred, data.classes)
    temperature, fitted_on, n_fit = 1.0, "none", 0
    if "validation" in outputs:
        temperature = fit_temperature(outputs["validation"][2], outputs["validation"][0].labels)
        fitted_on, n_fit = "validation", len(outputs["validation"][0])
    elif oof_logits is not None:  # no validation split: the probe's out-of-fold predictions
        temperature = fit_temperature(torch.as_tensor(oof_logits).float(), data.train.labels)
        fitted_on, n_fit = "out-of-fold predictions of the cross-validated probe", len(oof_logits)
    result["calibration"] = {"temperature": temperature, "fitted_on": fitted_on, "n": n_fit}
    for name, (samples, _, logits) in outputs.items():
        result["calibration"][name] = calibration_summary(logits, samples.labels, temperature)
    samples, e, logits = outputs[shown]
    agreement = None
    result["forgetting"] = {"applicable": False, "reason": _no_source_reason(backbone)}
    source_backbone = backbone.source_backbone()
    if source_before is not None and source_backbone.source_head() is not None:
        # a probe's body is frozen: its final-layer features are the ones it started with
        after = source_before if source_backbone is not backbone else e
        agreement = _source_agreement(source_backbone, source_before, after)
        result["forgetting"] = {
            "applicable": True,
            "split": shown,
            "n": len(agreement),
            "top1_agreement": float(agreement.mean()),
            "source_classes": backbone.spec.num_source_classes,
            "what": "how often the backbone, with its original source head put back, "
            "predicts the same source class as the original pretrained model",
        }
    elif source_before is not None and source_backbone.spec.modality == "text":
        after = source_before if source_backbone is not backbone else e
        retention = similarity_retention(source_before, after)
        if retention is not None:
            rho, pairs = retention
            result["forgetting"] = {
                "applicable": True,
                "measure": "similarity_retention",
                "split": shown,
                "n": len(samples),
                "pairs": pairs,
                "similarity_retention": rho,
                "kept": rho,
                "what": "the Spearman correlation, over a fixed sample of pairs of texts, "
                "between the cosine similarities of the original encoder's embeddings and "
                "the trained encoder's (1.0: the encoder is unchanged)",
            }
            console.print(
                f"[bold]forgetting[/] similarity retention {rho:.3f} (Spearman of the cosine "
                f"similarities of {pairs} pairs of {shown} texts, original vs trained encoder)"
            )
    if agreement is not None:
        result["forgetting"].update(measure="top1_agreement", kept=float(agreement.mean()))
    if "test" in result:
        print_metrics(result["test"], console, title=f"Test metrics ({strategy.describe()})")
    cal = result["calibration"][shown]
    if n_fit:
        console.print(
            f"[bold]calibration[/] temperature {temperature:.3f} (fitted on {n_fit} "
            f"{fitted_on}): {shown} ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}"
        )
    else:
        console.print(
            f"[bold]calibration[/] no validation data, temperature not fitted: {shown} ECE "
            f"{cal['ece_before']:.4f}"
        )
    if 0 < n_fit < FEW_FOR_CALIBRATION:
        console.print(
            f"  [yellow]note[/] a temperature fitted on fewer than {FEW_FOR_CALIBRATION} "
            "examples is noisy and can make calibration worse; give more validation data "
            "(--val DIR or --val-fraction) for calibrated probabilities you can trust"
        )
    if agreement is not None:
        console.print(
            f"[bold]forgetting[/] the source head still agrees with the original model on "
            f"{100 * agreement.mean():.1f}% of {shown} images"
        )
    return result, EvalOutputs(shown, samples, logits, e, temperature, agreement)


def retention_pairs(n: int, m: int = RETENTION_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """A fixed sample of ``m`` distinct pairs ``(i, j)``, ``i < j < n`` (all of them when
    there are fewer), the same for every run on the same split."""
    total = n * (n - 1) // 2
    if total <= m:
        i, j = np.triu_indices(n, 1)
        return i, j
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(total, m, replace=False))
    # the k-th pair of the row-major upper triangle, without building it
    i = (n - 2 - np.floor(np.sqrt(-8 * chosen + 4 * n * (n - 1) - 7) / 2 - 0.5)).astype(int)
    j = (chosen + i + 1 - n * (n - 1) // 2 + (n - i) * ((n - i) - 1) // 2).astype(int)
    return i, j


def similarity_retention(before: Embeddings, after: Embeddings) -> tuple[float, int] | None:
    """The Spearman correlation between the cosine similarities of a fixed sample of
    pairs under the original embeddings and under the trained ones, and the number of
    pairs; None with fewer than 3 examples or constant similarities."""
    from scipy.stats import spearmanr

    n = len(before)
    if n < 3:
        return None
    i, j = retention_pairs(n)
    rows = np.unique(np.concatenate([i, j]))
    where = {int(r): k for k, r in enumerate(rows)}
    ii = np.array([where[int(r)] for r in i])
    jj = np.array([where[int(r)] for r in j])

    def cosines(e: Embeddings) -> np.ndarray:
        x = e[torch.as_tensor(rows)] if isinstance(e, torch.Tensor) else e.take(rows)
        unit = nn.functional.normalize(x.float(), dim=1).numpy()
        return np.einsum("ij,ij->i", unit[ii], unit[jj])

    if after is before:  # a frozen encoder: unchanged by definition
        return 1.0, len(i)
    a, b = cosines(before), cosines(after)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic), len(i)


def _no_source_reason(backbone: Backbone) -> str:
    if backbone.spec.modality != "image":
        return "the backbone has no source-task head (only ImageNet vision backbones do)"
    return "the backbone was not loaded with its source head (random, headless or cut weights)"


def _source_agreement(backbone: Backbone, before: Embeddings, after: Embeddings) -> np.ndarray:
    """Per example: does the source head on the trained backbone's features predict the
    same source class as on the original backbone's features? (In batches: either may be
    disk-backed.)"""
    head = backbone.source_head()
    assert head is not None  # the caller computed ``before`` with it
    w, b = head
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        top_before = nn.functional.linear(before.float(), w, b).argmax(1)
        return (top_before == nn.functional.linear(after.float(), w, b).argmax(1)).numpy()
    same = [
        nn.functional.linear(x.float(), w, b).argmax(1)
        == nn.functional.linear(z.float(), w, b).argmax(1)
        for x, z in zip(as_batches(before), as_batches(after), strict=True)
    ]
    return torch.cat(same).numpy() if same else np.zeros(0, dtype=bool)


def leave_one_out(x: torch.Tensor, data: Splits, console: Console) -> dict[str, Any]:
    """Nearest-prototype accuracy of each training example against prototypes made without
    it: an honest estimate when nothing was held out. Examples alone in their class cannot
    be scored (without them the class has no prototype) and are counted apart."""
    y = np.asarray(data.train.labels)
    result: dict[str, Any] = {"n": 0, "unscored_singletons": len(y)}
    counts = np.bincount(y, minlength=len(data.classes))
    scored = np.flatnonzero(counts[y] >= 2)
    if len(scored):
        result = {"n": len(scored), "unscored_singletons": len(y) - len(scored)}
        result["accuracy"] = float(
            np.mean(leave_one_out_predictions(x.numpy(), y)[scored] == y[scored])
        )
        console.print(
            f"[bold]leave-one-out[/] nearest-prototype accuracy {result['accuracy']:.4f} on "
            f"{len(scored)} training examples"
        )
    else:
        console.print(
            "[bold]leave-one-out[/] not possible: every class has a single example (one-shot); "
            "pass --test data to measure accuracy"
        )
    return result
