"""Steps: what one batch of a training procedure is and what it costs.

The training loop (:class:`headstart.training.Trainer`) owns everything every procedure
shares: the optimiser and its schedule, Accelerate (devices, mixed precision, gradient
accumulation, several processes), progress, validation, early stopping, checkpoints and
resume. A :class:`Step` is the one thing that differs: the batches of an epoch and the
loss of a batch. Supervised fine-tuning (with every strategy and adaptation method),
SetFit's pair training, prototypical-network episodes and the per-episode fine-tune of
``headstart fewshot`` are each a step run by that one loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Subset,
    default_collate,
)

from headstart.errors import RunFolderError
from headstart.fewshot.protonet import protonet_logits
from headstart.strategies.base import ParamGroup, Strategy, StrategyContext, apply_freeze


class Step:
    """Base class: the batches of each epoch and the loss of one batch."""

    #: the learning-rate schedule: ``cosine`` (warmup then cosine decay), ``linear``
    #: (warmup then linear decay) or ``constant``
    schedule: ClassVar[str] = "cosine"

    def loader(self, epoch: int, generator: torch.Generator) -> DataLoader[Any]:
        """The batches of ``epoch`` (``generator`` is seeded per epoch by the loop)."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        """Batches in an epoch (before gradient accumulation)."""
        raise NotImplementedError

    def drops_last(self) -> bool:
        """Whether the epoch's loader drops its last incomplete batch: several processes
        then share only whole rounds of batches (Accelerate's sharding), so each takes
        ``steps_per_epoch() // processes`` of them, not the rounded-up share."""
        return False

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The loss of ``batch`` (already on the model's device)."""
        raise NotImplementedError

    def modules(self) -> list[nn.Module]:
        """Modules trained beside the model (a learned temperature, a discriminator)."""
        return []

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """After the loop put the model in training mode and applied the freezing."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to go on as if never stopped."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class SupervisedStep(Step):
    """Cross-entropy on shuffled batches of ``(input, label)`` pairs, plus the strategy's
    loss term (an adaptation loss, a regulariser towards the pretrained weights)."""

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        collate: Any = None,
        num_workers: int = 0,
        label_smoothing: float = 0.0,
        strategy: Strategy | None = None,
        ctx: StrategyContext | None = None,
        eval_mode: bool = False,
        schedule: str = "cosine",
    ) -> None:
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate
        self.eval_mode = eval_mode  # dropout off and BatchNorm statistics kept
        self.schedule = schedule  # type: ignore[misc]
        self.num_workers = num_workers
        self.strategy, self.ctx = strategy, ctx
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self._loader: DataLoader[Any] | None = None
        self._generator: torch.Generator | None = None

    def loader(self, epoch: int, generator: torch.Generator) -> DataLoader[Any]:
        if self._loader is None or self._generator is not generator:
            n = len(self.dataset)  # type: ignore[arg-type]
            self._generator = generator
            self._loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=RandomSampler(self.dataset, generator=generator),  # type: ignore[arg-type]
                num_workers=self.num_workers,
                drop_last=n > self.batch_size,
                collate_fn=self.collate,
            )
        return self._loader

    def steps_per_epoch(self) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        return n // self.batch_size if n > self.batch_size else 1

    def drops_last(self) -> bool:
        return len(self.dataset) > self.batch_size  # type: ignore[arg-type]

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        if self.eval_mode:
            model.eval()

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        out = model(x)
        loss = self.loss_fn(out.float(), y)
        if self.strategy is not None and self.ctx is not None:
            extra = self.strategy.loss_term(self.ctx, (x, y), out)
            if extra is not None:
                loss = loss + extra
        return loss


class _Scale(nn.Module):
    """The learned temperature of the prototypes' cosine logits."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))


class _Episodes(Dataset[Any]):
    """Item ``i``: the images of episode ``i`` of ``episodes`` (support then query,
    class-major), stacked."""

    def __init__(self, images: Dataset[Any], episodes: list[Any]) -> None:
        self.images, self.episodes = images, episodes

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> torch.Tensor:
        ep = self.episodes[i]
        idx = np.concatenate([ep.support.reshape(-1), ep.query.reshape(-1)])
        x, _ = default_collate([self.images[int(j)] for j in idx])
        return x


class ProtonetStep(Step):
    """Prototypical-network episodes (Snell et al. 2017): the support images of each way
    make a prototype, the queries are classified by a learned multiple of their cosine to
    the prototypes; the loss is the queries' cross-entropy. ``per_epoch`` episodes make
    an epoch (a checkpoint after each). ``bound``: the settings a resumed run must share."""

    schedule = "constant"

    def __init__(
        self,
        images: Dataset[Any],
        episodes: list[Any],
        ways: int,
        shots: int,
        per_epoch: int,
        frozen_stats: bool,
        layout: list[ParamGroup],
        bound: dict[str, Any],
    ) -> None:
        self.data = _Episodes(images, episodes)
        self.ways, self.shots, self.per_epoch = ways, shots, per_epoch
        self.frozen_stats, self.layout, self.bound = frozen_stats, layout, bound
        self.scale = _Scale(10.0)
        self.losses: list[float] = []
        self.accs: list[float] = []
        self.before: dict[str, float] | None = None
        self.resumed_at: int | None = None

    def epochs(self) -> int:
        return math.ceil(len(self.data) / self.per_epoch)

    def loader(self, epoch: int, generator: torch.Generator) -> DataLoader[Any]:
        lo = epoch * self.per_epoch
        part = Subset(self.data, range(lo, min(lo + self.per_epoch, len(self.data))))
        return DataLoader(part, batch_size=1, collate_fn=_first, generator=generator)

    def steps_per_epoch(self) -> int:
        return self.per_epoch

    def modules(self) -> list[nn.Module]:
        return [self.scale]

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        # BatchNorm statistics kept as pretrained (as fit does): the source classes'
        # statistics are not those of the classes the backbone will meet
        apply_freeze(model, self.layout, all_bn_stats=self.frozen_stats)  # type: ignore[arg-type]

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        body: Any = getattr(model, "module", model)  # a distributed wrapper's model
        logits, target = protonet_logits(body.embed(batch), self.ways, self.shots, self.scale.value)
        loss = nn.functional.cross_entropy(logits, target)
        self.losses.append(float(loss.detach()))
        self.accs.append(float((logits.argmax(1) == target).float().mean()))
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {
            "bound": self.bound,
            "losses": self.losses,
            "accs": self.accs,
            "before": self.before or {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("bound") != self.bound:
            raise RunFolderError(
                "a checkpoint of the same meta-training settings",
                f"one made with {state.get('bound')}",
                "pass the same settings to resume, or --overwrite to start again",
            )
        self.losses, self.accs = list(state["losses"]), list(state["accs"])
        self.before = state.get("before") or None
        self.resumed_at = len(self.losses)


def _first(items: list[Any]) -> Any:
    return items[0]


class StreamedProbeStep(Step):
    """A linear probe on embeddings too many to hold in memory (disk-backed matrices, one
    per view): each epoch visits every shard of every view in a seeded order, the rows
    of a shard shuffled, standardised and cut into minibatches; the loss is the probe's
    penalised objective (:class:`~headstart.heads.probe.StreamPlan`). Only one shard is
    in memory at a time."""

    def __init__(self, views: list[Any], y: np.ndarray, plan: Any) -> None:
        self.views, self.plan = views, plan
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        self.keep = ~np.asarray(plan.held, dtype=bool)
        self.chunks = [(v, lo, hi) for v in range(len(views)) for lo, hi in views[v].chunks()]

    def steps_per_epoch(self) -> int:
        batch = self.plan.batch
        return sum(-(-int(self.keep[lo:hi].sum()) // batch) for _, lo, hi in self.chunks)

    def loader(self, epoch: int, generator: torch.Generator) -> DataLoader[Any]:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return DataLoader(_ShardBatches(self, seed), batch_size=None)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return self.plan.loss(model, x, y)


class _ShardBatches(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """The minibatches of one epoch of a :class:`StreamedProbeStep`."""

    def __init__(self, step: StreamedProbeStep, seed: int) -> None:
        self.step, self.seed = step, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step, plan = self.step, self.step.plan
        g = torch.Generator().manual_seed(self.seed)
        for ci in torch.randperm(len(step.chunks), generator=g).tolist():
            v, lo, hi = step.chunks[ci]
            keep = torch.as_tensor(np.flatnonzero(step.keep[lo:hi]))
            if not len(keep):
                continue
            block = (step.views[v].rows(lo, hi)[keep] - plan.mean) / plan.std
            target = step.y[lo:hi][keep]
            perm = torch.randperm(len(keep), generator=g)
            for a in range(0, len(perm), plan.batch):
                idx = perm[a : a + plan.batch]
                yield block[idx], target[idx]
