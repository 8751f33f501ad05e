"""``setfit``: the text encoder trained on sampled pairs of the labelled texts, then a head
on its embeddings (Tunstall et al. 2022; the pair sampling is in
:mod:`headstart.fewshot.contrastive`). The pair training is a :class:`ContrastiveStep` of
the one training loop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from headstart.backbones import Backbone
from headstart.config import ContrastiveConfig
from headstart.device import in_order_generator
from headstart.errors import ConfigError
from headstart.fewshot.contrastive import n_pairs_for, sample_pairs, step_texts
from headstart.strategies.base import AUTO_HEAD, STRATEGIES, Strategy
from headstart.strategies.steps import Step


@STRATEGIES.register(
    "setfit",
    help="Few-shot texts: the encoder fine-tuned contrastively on sampled pairs of the "
    "labelled texts (SetFit), then a head on its embeddings (prototypes; --head logistic "
    "for SetFit's own).",
)
class SetFit(Strategy):
    name = "setfit"
    phases = ("contrastive", "probe")
    min_per_class = 1

    def trainable_groups(self, n_groups: int, epoch: int) -> list[bool]:
        return [False] * (n_groups - 1) + [True]

    def head_name(self) -> str:
        return "prototype" if self.cfg.head == AUTO_HEAD else super().head_name()

    def check_backbone(self, backbone: Backbone, modality: str) -> None:
        if modality != "text" or not backbone.trainable_body:
            raise ConfigError(
                f"a trainable text encoder and text data for {self.describe()}",
                f"{backbone.spec.name} ({backbone.spec.modality}"
                f"{'' if backbone.trainable_body else ', inference only'}) on {modality} data",
                "use --backbone minilm-l6 on texts, or --strategy prototypes",
            )


class _PairSteps(Dataset[Any]):
    """Item ``s``: the texts of step ``s`` (collated) and the pairs drawn among them."""

    def __init__(
        self, dataset: Any, labels: np.ndarray, cfg: ContrastiveConfig, collate: Any
    ) -> None:
        self.dataset, self.labels, self.cfg, self.collate = dataset, labels, cfg, collate
        self.n_pairs = n_pairs_for(len(labels), cfg)
        self.steps = math.ceil(self.n_pairs / cfg.pairs_per_step)
        self.texts = step_texts(labels, self.steps, cfg.texts_per_step, cfg.seed)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, s: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        texts = self.texts[s]
        n = min(self.cfg.pairs_per_step, self.n_pairs - s * self.cfg.pairs_per_step)
        where, target = sample_pairs(self.labels[texts], n, self.cfg.seed + 1 + s)
        batch, _ = self.collate([self.dataset[int(i)] for i in texts])
        return batch, torch.as_tensor(where), torch.as_tensor(target)


def _first(items: list[Any]) -> Any:
    return items[0]


class ContrastiveStep(Step):
    """One step encodes the texts of a step once and draws its pairs among them; the loss
    is the squared error between the pairs' cosine and their target (1: one class)."""

    schedule = "linear"

    def __init__(self, backbone: Backbone, dataset: Any, cfg: ContrastiveConfig) -> None:
        if not backbone.trainable_body or backbone.spec.modality != "text":
            raise ConfigError(
                "a trainable text encoder for contrastive (setfit) fine-tuning",
                f"{backbone.spec.name} ({backbone.spec.modality}"
                f"{'' if backbone.trainable_body else ', inference only'})",
                "use a PyTorch text backbone such as minilm-l6, or --strategy prototypes",
            )
        labels = np.asarray([dataset[i][1] for i in range(len(dataset))])
        sample_pairs(labels, 1)  # the clear error when there are fewer than 2 classes
        collate = backbone.collate_fn()
        if collate is None:
            raise ConfigError("a text backbone that pads its batches", "none", "use minilm-l6")
        self.steps_data = _PairSteps(dataset, labels, cfg, collate)
        self.encoded, self.positive = 0, 0
        self.losses: list[float] = []
        self._loader = DataLoader(
            self.steps_data, batch_size=1, collate_fn=_first, generator=in_order_generator()
        )

    def loader(self, epoch: int, generator: torch.Generator) -> DataLoader[Any]:
        return self._loader

    def steps_per_epoch(self) -> int:
        return self.steps_data.steps

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, where, target = batch
        body: Any = getattr(model, "module", model)  # a distributed wrapper's model
        emb = nn.functional.normalize(body.embed(inputs).float(), dim=1)
        cos = (emb[where[:, 0]] * emb[where[:, 1]]).sum(1)
        loss = nn.functional.mse_loss(cos, target.to(cos.device).float())
        self.encoded += len(emb)
        self.positive += int(target.sum())
        self.losses.append(float(loss.detach()))
        return loss

    def summary(self) -> dict[str, Any]:
        """What the pair training did, for metrics.json."""
        return {
            "pairs": self.steps_data.n_pairs,
            "positive_pairs": self.positive,
            "steps": self.steps_data.steps,
            "texts_encoded": self.encoded,
            "first_loss": self.losses[0],
            "last_loss": float(np.mean(self.losses[-5:])),
        }
