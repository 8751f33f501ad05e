"""``headstart fewshot``: N-way K-shot accuracy of backbones and few-shot strategies,
as the mean over episodes with a 95 % confidence interval.

A pool of examples per class is embedded once per backbone; every episode then draws
its support and query sets from the pool (never sharing an example) and each strategy
classifies the queries from the support alone:

* ``prototypes``: nearest class mean by cosine;
* ``logistic``: logistic regression fitted on the support embeddings;
* ``prototypes-ft``: a copy of the backbone fine-tuned on the support through its
  prototypes (``FT_STEPS`` full-batch steps), then the prototypes taken again; it trains
  once per episode;
* ``zeroshot`` (texts): no support at all, the class names under templates;
* ``setfit`` (texts): the encoder fine-tuned on pairs of the support, then its
  prototypes; it trains once per episode, so it costs seconds per episode.

A backbone is a name (as in ``fit``) or a run folder (e.g. one written by ``headstart
meta-train``), whose trained backbone is then used.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from headstart.backbones import Backbone, check_backbone, create_backbone
from headstart.config import (
    FEWSHOT_TEXT_ONLY,
    BackboneConfig,
    ContrastiveConfig,
    DataConfig,
    FewShotConfig,
    TrainConfig,
)
from headstart.data import TextSamples, up_to_per_class
from headstart.device import resolve_device, seeded
from headstart.errors import ConfigError
from headstart.features import EmbeddingCache, embed_samples
from headstart.fewshot.episodes import Episode, episode_accuracy, mean_ci, sample_episodes
from headstart.fewshot.zeroshot import DEFAULT_TEXT_TEMPLATES, embed_texts, label_directions, unit
from headstart.heads import class_means, fit_sklearn_head, nearest_prototype, prototype_head
from headstart.runfolder import check_out_folder, write_json
from headstart.storage import locked
from headstart.strategies import ParamGroup
from headstart.strategies.steps import SupervisedStep
from headstart.training import Trainer
from headstart.training.procedures import contrastive_finetune

#: prototypes-ft in an episode: full-batch steps on the support, and their learning rate
FT_STEPS = 10
FT_LR = 5e-5


def data_config(source: str, fcfg: FewShotConfig) -> DataConfig:
    """How the few-shot data is read."""
    return DataConfig(
        source=source,
        image_size=fcfg.image_size,
        max_length=fcfg.max_length,
        text_cols=fcfg.text_cols,
        label_col=fcfg.label_col,
    )


def load_backbone(name: str, image_size: int | None, max_length: int | None) -> Backbone:
    """A registered / timm / Hugging Face backbone by name, or the backbone of a run folder."""
    path = Path(name).expanduser()
    if (path / "config.yaml").is_file() and (path / "model.safetensors").is_file():
        from headstart.backbones.weights import sha256_file
        from headstart.runfolder import load

        backbone = load(path, device="cpu").backbone
        # the spec names the weights the run started from; embeddings are cached under the
        # digest of the trained ones
        backbone.spec.weights_sha256 = sha256_file(path / "model.safetensors")
        backbone.spec.name = str(path)
        backbone.spec.extra["run_folder"] = True
        return backbone
    if name == "auto":
        raise ConfigError("a backbone name", "auto", "resolve auto before loading")
    return create_backbone(BackboneConfig(name=name), 2, image_size, max_length)


@locked("few-shot")
def run_fewshot(
    source: str,
    fcfg: FewShotConfig,
    out: str | Path | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every backbone x strategy x shots: mean query accuracy over episodes and its CI."""
    from headstart.backbones.catalog import DEFAULT_BACKBONES
    from headstart.data.loading import check_samples, load_source

    t0 = time.perf_counter()
    console = console or Console()
    if out is not None:
        check_out_folder(out)
    for name in fcfg.backbones:  # a mistyped name must not cost a preflight
        check_backbone(BackboneConfig(name=name))
    dcfg = data_config(source, fcfg)
    samples, _ = check_samples(load_source(source, dcfg), dcfg, progress, min_per_class=0)
    text = isinstance(samples, TextSamples)
    classes = fcfg.classes if fcfg.classes is not None else list(range(len(samples.classes)))
    skipped = [s for s in fcfg.strategies if s in FEWSHOT_TEXT_ONLY and not text]
    if skipped:
        console.print(f"[yellow]note[/] {', '.join(skipped)}: for texts only, left out here")
    strategies = [s for s in fcfg.strategies if s not in skipped]
    labels = np.asarray(samples.labels)
    pool = up_to_per_class(labels, fcfg.pool, fcfg.seed, classes)
    pool_samples = samples.subset(pool)
    y = labels[pool]
    device = resolve_device(fcfg.device)
    rows: list[dict[str, Any]] = []
    for name in fcfg.backbones:
        if name == "auto":
            name = DEFAULT_BACKBONES["text" if text else "image"]
        backbone = load_backbone(name, fcfg.image_size, fcfg.max_length).to(device).eval()
        _check_backbone(backbone, text, strategies, console)
        x = (
            embed_samples(
                backbone,
                pool_samples,
                EmbeddingCache(),
                128,
                device,
                progress,
                "embedding the pool",
            )
            .double()
            .numpy()
        )
        directions = None
        if "zeroshot" in strategies:
            directions = label_directions(
                lambda t, b=backbone: embed_texts(b, t, device),
                list(samples.classes),
                DEFAULT_TEXT_TEMPLATES,
            )
        for shots in fcfg.shots:
            episodes = sample_episodes(
                y, fcfg.ways, shots, fcfg.queries, fcfg.episodes, fcfg.seed, classes
            )
            for strategy in strategies:
                accs = _run_strategy(
                    strategy,
                    backbone,
                    x,
                    directions,
                    pool_samples,
                    episodes,
                    device,
                    progress,
                    fcfg.seed,
                )

                row = {
                    "backbone": name,
                    "strategy": strategy,
                    "ways": fcfg.ways,
                    "shots": shots,
                    **mean_ci(accs),
                }
                rows.append(row)
                console.print(
                    f"{name} {strategy} {fcfg.ways}-way {shots}-shot: "
                    f"{row['mean']:.4f} +- {row['ci95']:.4f} ({row['n']} episodes)"
                )
    doc = {
        "source": samples.name,
        "classes": [samples.classes[c] for c in classes],
        "config": asdict(fcfg),
        "results": rows,
        "seconds": time.perf_counter() - t0,
    }
    print_fewshot(doc, console)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "fewshot.json", doc)
        console.print(f"results written to {Path(out) / 'fewshot.json'}")
    return doc


def _check_backbone(
    backbone: Backbone, text: bool, strategies: list[str], console: Console
) -> None:
    """The backbone reads this data, and can be trained by the strategies that train."""
    modality = "text" if text else "image"
    if backbone.spec.modality != modality:
        raise ConfigError(
            f"a {modality} backbone for {modality} data",
            f"{backbone.spec.name}, a {backbone.spec.modality} backbone",
            "pass --backbone with a backbone of the data's kind (`headstart backbones`)",
        )
    training = [s for s in strategies if s in ("prototypes-ft", "setfit")]
    if training and not backbone.trainable_body:
        raise ConfigError(
            f"a backbone whose weights can be trained, for {', '.join(training)}",
            f"{backbone.spec.name}, an inference-only encoder",
            "drop those strategies for this backbone, or pick a PyTorch backbone",
        )
    if modality == "image" and backbone.spec.extra.get("run_folder"):
        console.print(
            f"[dim]{backbone.spec.name}: images at the run's own size, "
            f"{backbone.spec.input_size} px[/]"
        )


def print_fewshot(doc: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Few-shot accuracy on {doc['source']} (mean and 95% CI over episodes)")
    for col in ("backbone", "strategy", "ways", "shots", "accuracy", "95% CI", "episodes"):
        table.add_column(col)
    for r in doc["results"]:
        table.add_row(
            r["backbone"],
            r["strategy"],
            str(r["ways"]),
            str(r["shots"]),
            f"{r['mean']:.4f}",
            f"+- {r['ci95']:.4f}",
            str(r["n"]),
        )
    console.print(table)


def _run_strategy(
    strategy: str,
    backbone: Backbone,
    x: np.ndarray,
    directions: np.ndarray | None,
    samples: Any,
    episodes: list[Episode],
    device: str,
    progress: bool,
    seed: int,
) -> list[float]:
    accs = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(strategy, total=len(episodes))
        for i, ep in enumerate(episodes):
            if strategy == "prototypes":
                accs.append(episode_accuracy(x, ep))
            elif strategy == "logistic":
                accs.append(_logistic(x, ep))
            elif strategy == "zeroshot":
                assert directions is not None
                pred = (unit(x[ep.query.reshape(-1)]) @ directions[ep.classes].T).argmax(1)
                accs.append(ep.accuracy(pred))
            else:  # the ones that train a copy of the backbone: seeded per episode
                train = _prototypes_ft if strategy == "prototypes-ft" else _setfit
                with seeded(seed + i, "episode fine-tune"):
                    accs.append(train(backbone, samples, ep, device, seed + i))
            bar.advance(task)
    return accs


def _logistic(x: np.ndarray, ep: Episode) -> float:
    w, b = fit_sklearn_head(
        "logistic", x[ep.support.reshape(-1)], ep.support_labels, len(ep.classes)
    )
    logits = torch.as_tensor(x[ep.query.reshape(-1)]).float() @ w.T + b
    return ep.accuracy(logits.argmax(1).numpy())


def _support_and_query(backbone: Backbone, samples: Any, ep: Episode) -> tuple[Any, Any]:
    """The episode's support (labelled 0..ways-1 in episode order) and query samples."""
    support = samples.subset(ep.support.reshape(-1))
    support = dataclasses.replace(support, labels=ep.support_labels)
    return support, samples.subset(ep.query.reshape(-1))


def _embed(backbone: Backbone, samples: Any, device: str) -> np.ndarray:
    return embed_samples(backbone, samples, None, 64, device, False).double().numpy()


def _setfit(backbone: Backbone, samples: Any, ep: Episode, device: str, seed: int) -> float:
    """Contrastive fine-tuning of a copy of the encoder on the support, then the
    prototypes of its support embeddings (the setfit strategy's head), scored on the
    queries."""
    tuned = copy.deepcopy(backbone)
    support, query = _support_and_query(tuned, samples, ep)
    ds = tuned.make_dataset(support)
    contrastive_finetune(tuned, ds, ContrastiveConfig(seed=seed), device, progress=False)
    prototypes = class_means(_embed(tuned, support, device), ep.support_labels, len(ep.classes))
    return ep.accuracy(nearest_prototype(_embed(tuned, query, device), prototypes))


def _prototypes_ft(backbone: Backbone, samples: Any, ep: Episode, device: str, seed: int) -> float:
    """Prototypes of the support as the head of a copy of the backbone, the copy fine-tuned
    on the support (BatchNorm statistics kept, as fit does), prototypes taken again."""
    ways, y = len(ep.classes), ep.support_labels
    tuned = copy.deepcopy(backbone).to(device).eval()
    support, query = _support_and_query(tuned, samples, ep)
    tuned.reset_head(ways)
    w, b = prototype_head(_embed(tuned, support, device), y, ways)
    tuned.load_head(w, b)
    train = tuned.make_dataset(support, train=True, augment="light")
    # full-batch steps in eval mode: dropout off, BatchNorm statistics as pretrained
    step = SupervisedStep(
        train, len(train), tuned.collate_fn(), eval_mode=True, schedule="constant"
    )
    tcfg = TrainConfig(
        epochs=FT_STEPS,
        batch_size=len(train),
        lr=FT_LR,
        weight_decay=0.0,
        warmup_fraction=0.0,
        label_smoothing=0.0,
        patience=FT_STEPS + 1,
        seed=seed,
        device=device.split(":")[0],
        checkpoint=False,
    )
    everything = [ParamGroup("all", list(tuned.parameters()), True)]
    Trainer(tcfg).fit(tuned, everything, None, None, step=step)
    tuned.eval()
    for p in tuned.parameters():
        p.requires_grad_(False)
    prototypes = class_means(_embed(tuned, support, device), y, ways)
    return ep.accuracy(nearest_prototype(_embed(tuned, query, device), prototypes))
