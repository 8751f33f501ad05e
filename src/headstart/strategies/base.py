"""The Strategy contract: what trains, at which learning rate, and when.

A strategy turns a backbone's layer groups into typed :class:`ParamGroup` objects and may
add a loss term or change the groups at the start of an epoch. It never runs a loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from headstart.backbones import Backbone
from headstart.config import RunConfig, StrategyConfig
from headstart.device import in_order_generator
from headstart.errors import ConfigError
from headstart.registry import Registry


@dataclass
class ParamGroup:
    """One layer group as the optimiser sees it."""

    name: str
    params: list[nn.Parameter]
    trainable: bool
    lr_scale: float = 1.0
    weight_decay: float | None = None  # None: the training config's value

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


#: the phases a strategy may list, run in its order by the fit workflow:
#: ``contrastive`` trains the body on pairs of the labelled texts (SetFit), ``probe`` fits
#: the head on embeddings of the frozen backbone, ``train`` runs the training loop with
#: the strategy's parameter groups and hooks, ``refit`` takes the prototypes again,
#: ``align`` fits the head for a target domain by a closed-form alignment (its own method)
PHASES = ("contrastive", "probe", "train", "refit", "align")
#: phases that change the backbone's body weights
BODY_PHASES = ("contrastive", "train")


@dataclass
class StrategyContext:
    """What a strategy can read in its hooks, handed to it by the loop (never a global).

    ``initial_weights()`` is a frozen copy of the model's weights as they were when it was
    first asked for (ask in :meth:`Strategy.setup`, before training: the pretrained
    weights, as L2-SP needs); ``train_loader()`` iterates the labelled training data in a
    fixed order without augmentation-dependent shuffling (a Fisher estimate, a memory of
    exemplars); ``plain_loader()`` the same without augmentation, one example per batch
    by default, when the raw training ``samples`` are known; ``target`` holds unlabelled
    target-domain samples when there are any."""

    model: Backbone
    train_data: Any
    num_classes: int
    epochs: int = 1
    steps_per_epoch: int = 1
    batch_size: int = 32
    augment: str = "none"
    seed: int = 0
    device: str | torch.device = "cpu"
    target: Any = None
    samples: Any = None
    _initial: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def initial_weights(self) -> dict[str, torch.Tensor]:
        """Detached copies of the model's parameters, by name, taken on the first call."""
        if self._initial is None:
            self._initial = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        return self._initial

    def train_loader(self, batch_size: int | None = None) -> DataLoader[Any]:
        """The training data in order, in batches (the model's own collation)."""
        return DataLoader(
            self.train_data,
            batch_size=batch_size or self.batch_size,
            shuffle=False,
            collate_fn=self.model.collate_fn(),
            generator=in_order_generator(),  # nothing drawn from the process-wide generator
        )

    def plain_loader(self, batch_size: int = 1) -> DataLoader[Any]:
        """The training examples in order, preprocessed as for evaluation (no
        augmentation) when ``samples`` are known, else :meth:`train_loader`'s data."""
        data = self.train_data if self.samples is None else self.model.make_dataset(self.samples)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=False,
            collate_fn=self.model.collate_fn(),
            generator=in_order_generator(),
        )


class Strategy:
    """Base class. A strategy says what trains at which learning rate (``param_groups``,
    ``on_epoch_start``), which phases a run goes through (``phases``) and may hook into
    training through a :class:`StrategyContext`: ``setup`` before the loop,
    ``loss_term`` on every batch, ``teardown`` after it. The orchestration reads no
    strategy type and no flag beyond these."""

    name: ClassVar[str] = ""
    #: the phases of a run, in order (see :data:`PHASES`)
    phases: ClassVar[tuple[str, ...]] = ("train",)
    #: the backbone starts from pretrained weights (False: random init, the baseline)
    uses_pretrained: ClassVar[bool] = True
    #: the fewest labelled examples a class may have (1: a few-shot strategy; with fewer
    #: than ``FEW_SHOT_HOLDOUT`` in a class nothing is held out of the labelled data)
    min_per_class: ClassVar[int] = 2
    #: takes an argument after a colon, as ``freeze:3``
    takes_arg: ClassVar[bool] = False

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        if arg is not None and not self.takes_arg:
            raise ConfigError(
                f"strategy {self.name!r} without an argument",
                f"{self.name}:{arg}",
                f"use --strategy {self.name}",
            )
        self.cfg = cfg
        self.arg = arg
        self.epoch = 0
        #: the parameter-efficient tensors that train in the body's trainable groups
        #: (adapters, or biases and norms; ``headstart.strategies.efficient``), or None
        self.part: Any = None

    @property
    def stores_trained_only(self) -> bool:
        """The run folder keeps only the tensors that trained (adapters, head, norms) and
        the base weights' sha256 (see :meth:`finish_model` and :meth:`restore_model`)."""
        return self.part is not None

    # -- what a run does ----------------------------------------------------------------
    @property
    def trains_body(self) -> bool:
        """Some phase changes the backbone's body weights."""
        return any(p in BODY_PHASES for p in self.phases)

    @property
    def frozen_features(self) -> bool:
        """The run reads features of the backbone as loaded: only a probe is fitted."""
        return not self.trains_body

    @property
    def loop_trains(self) -> bool:
        """The training loop changes weights (a ``train`` phase): after the run the
        embeddings are the trained model's, not the cached ones of the weights the spec
        names. (SetFit's pair training renames its weights, so its cache stays valid.)"""
        return "train" in self.phases

    @property
    def few_shot(self) -> bool:
        return self.min_per_class < 2

    def check_backbone(self, backbone: Backbone, modality: str) -> None:
        """Raise a ConfigError when ``backbone`` cannot run this strategy on the data."""
        if not backbone.trainable_body and self.trains_body:
            raise ConfigError(
                "a backbone whose weights can be trained, for " + self.describe(),
                f"{backbone.spec.name}, an inference-only (ONNX) encoder",
                "use --strategy linear-probe with it, or a PyTorch backbone such as minilm-l6",
            )

    def check_inputs(self, target: Any) -> None:
        """Raise before any data is read when the run lacks an input the strategy needs
        (``target``: unlabelled target-domain samples, or None)."""

    # -- what trains ------------------------------------------------------------------
    def trainable_groups(self, n_groups: int, epoch: int) -> list[bool]:
        """Which of the ``n_groups`` layer groups (head last) train in ``epoch``."""
        return [True] * n_groups

    def param_groups(self, backbone: Backbone) -> list[ParamGroup]:
        """Every layer group, in order; frozen ones have ``trainable=False``.

        The list (and so the optimiser's layout) is the same in every epoch; strategies
        that unfreeze over time flip ``requires_grad`` in :meth:`on_epoch_start`.
        """
        groups = backbone.layer_groups()
        flags = self.trainable_groups(len(groups), self.epoch)
        scales = self.lr_scales(len(groups))
        if self.part is None:
            return [
                ParamGroup(g.name, g.params, t, s)
                for g, t, s in zip(groups, flags, scales, strict=True)
            ]
        # parameter-efficient: a body group lists only its efficient tensors (none: the
        # group is frozen); the head trains whole
        keep = self.part.trained_params(backbone)
        out = []
        for i, (g, t, s) in enumerate(zip(groups, flags, scales, strict=True)):
            if i == len(groups) - 1:
                out.append(ParamGroup(g.name, g.params, t, s))
                continue
            params = [p for p in g.params if id(p) in keep]
            out.append(ParamGroup(g.name, params or g.params, t and bool(params), s))
        return out

    def lr_scales(self, n_groups: int) -> list[float]:
        """Head at 1; body groups at ``backbone_lr_scale`` x ``layer_decay``^depth (the
        parameter-efficient tensors ten times faster, at most the head's rate)."""
        base = 1.0 if not self.uses_pretrained else self.cfg.backbone_lr_scale
        if self.part is not None:
            base = min(1.0, base * self.part.LR_FACTOR)
        decay = self.cfg.layer_decay or 1.0
        return [base * decay ** (n_groups - 1 - i) for i in range(n_groups - 1)] + [1.0]

    # -- hooks the training loop calls ----------------------------------------------------
    def on_epoch_start(self, epoch: int, backbone: Backbone) -> None:
        """Apply this epoch's freezing: ``requires_grad`` and frozen BatchNorm statistics.

        Called by the loop right after ``model.train()``.
        """
        self.epoch = epoch
        pretrained = backbone.spec.weights_sha256 is not None  # random init has no statistics
        frozen_stats = pretrained and self.cfg.bn_stats == "frozen"
        apply_freeze(backbone, self.param_groups(backbone), all_bn_stats=frozen_stats)

    def wrap_backbone(self, backbone: Backbone, num_classes: int) -> Backbone:
        """The model this strategy trains, built around the pretrained ``backbone`` when
        the run starts (a progressive network's new column); the backbone itself by
        default. The wrapper records itself in its spec, so a run folder rebuilds it."""
        return backbone

    def prepare_model(self, backbone: Backbone) -> None:
        """Change the model before its parameter groups are taken for training (inject
        adapters); also run on the base model when a run folder that stores only its
        trained tensors is loaded. Nothing by default."""
        if self.part is not None:
            self.part.prepare(backbone)

    def finish_model(self, backbone: Backbone) -> None:
        """After the training loop: leave a plain model for evaluation and saving. A
        strategy that :attr:`stores_trained_only` sets ``backbone.stored_state`` to the
        tensors that trained (as named before any merge) when the base weights can be
        found again (pretrained weights with a sha256), and merges what it added."""
        if not self.stores_trained_only:
            return
        trained = {id(p) for g in self.param_groups(backbone) if g.trainable for p in g.params}
        buffers = {n for n, _ in backbone.named_buffers()} & set(backbone.state_dict())
        state = {
            n: t.detach().cpu().clone()
            for n, t in [*backbone.named_parameters(), *backbone.named_buffers()]
            if id(t) in trained or n in buffers
        }
        self.merge_model(backbone)
        rebuildable = backbone.spec.weights_sha256 and not backbone.spec.extra.get("added_tokens")
        backbone.stored_state = state if rebuildable else None

    def merge_model(self, backbone: Backbone) -> None:
        """Fold what :meth:`prepare_model` added into the model's own weights."""
        if self.part is not None:
            self.part.merge(backbone)

    def restore_model(self, backbone: Backbone, tensors: dict[str, torch.Tensor]) -> None:
        """Put the tensors a run folder stored (:meth:`finish_model`) into ``backbone``,
        built from the base weights: prepare, load, merge."""
        self.prepare_model(backbone)
        _, unexpected = backbone.load_state_dict(tensors, strict=False)
        if unexpected:
            raise ConfigError(
                f"stored tensors of a {self.describe()} run that the base model has",
                f"unknown tensors {sorted(unexpected)[:5]}",
                "load the run with the headstart version and the base weights it was trained with",
            )
        self.merge_model(backbone)

    def setup(self, ctx: StrategyContext) -> None:
        """Before the training loop (after any probe): read what the strategy needs
        from the context (the starting weights, the training data, a target stream)."""

    def own_modules(self) -> list[nn.Module]:
        """Modules the strategy trains beside the model (a domain discriminator): the
        trainer puts them on the model's device before it builds the optimiser."""
        return []

    def loss_term(
        self, ctx: StrategyContext, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        """A term added to the loss of every batch (none by default); ``ctx.model`` is
        the model being trained."""
        return None

    def teardown(self, ctx: StrategyContext) -> None:
        """After the training loop: undo what ``setup`` attached (hooks)."""

    def summary(self) -> dict[str, Any]:
        """What the strategy did that the run's metrics should record (after training;
        nothing by default), e.g. an adaptation term stopped early."""
        return self.part.summary() if self.part is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arg": self.arg, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ConfigError(
                f"a checkpoint of strategy {self.name!r}",
                f"one of {state.get('name')!r}",
                "resume with the strategy the run was started with",
            )
        self.epoch = int(state["epoch"])

    def head_name(self) -> str:
        """The head fitted on embeddings: the config's, or with ``auto`` the strategy's
        own (``linear``: the probe fitted to convergence). Strategies with a head of their
        own override this."""
        asked = self.cfg.head
        if asked == AUTO_HEAD:
            return "linear"
        if asked == "prototype" and "probe" not in self.phases:
            raise ConfigError(
                "a strategy that fits a head on embeddings for --head prototype "
                "(linear-probe, lp-ft, prototypes, prototypes-ft, setfit)",
                f"--strategy {self.describe()}, which trains its head from scratch",
                "use --strategy prototypes or prototypes-ft",
            )
        return asked

    def describe(self) -> str:
        return self.name + (f":{self.arg}" if self.arg else "")


def apply_freeze(backbone: Backbone, groups: list[ParamGroup], all_bn_stats: bool = False) -> None:
    """Set ``requires_grad`` per group (off for parameters in no group) and put BatchNorm
    layers of frozen groups in eval mode, so that their running statistics stay as
    pretrained.

    With ``all_bn_stats`` every BatchNorm layer normalises with its pretrained statistics
    (its scale and shift still train where the group does). On a small target dataset whose
    images differ from the source's, batch statistics in training and running statistics
    in evaluation disagree and fine-tuning first destroys the pretrained features; keeping
    the statistics avoids that (the advice of the Keras transfer-learning guide).
    """
    frozen: set[int] = set()
    listed = {id(p) for g in groups for p in g.params}
    for p in backbone.parameters():  # a parameter in no group does not train (BitFit)
        if id(p) not in listed:
            p.requires_grad_(False)
    for g in groups:
        for p in g.params:
            p.requires_grad_(g.trainable)
            if not g.trainable:
                frozen.add(id(p))
    for m in backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            all_bn_stats or id(m.weight) in frozen
        ):
            m.eval()


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
#: the head setting that lets each strategy pick its own
AUTO_HEAD = "auto"


def fixed_head(strategy: Strategy, head: str) -> str:
    """``head``, the one head ``strategy`` fits; any other asked for is a ConfigError."""
    asked = strategy.cfg.head
    if asked not in (AUTO_HEAD, head):
        raise ConfigError(
            f"no other head than {head!r} with strategy {strategy.name!r}",
            f"--head {asked}",
            f"drop --head, or use --strategy linear-probe --head {asked}",
        )
    return head


def numeric_arg(
    name: str, arg: str | None, defaults: tuple[float, ...], labels: tuple[str, ...]
) -> tuple[float, ...]:
    """The numbers of a strategy argument such as ``l2-sp:0.1,0.01``: one to
    ``len(defaults)`` non-negative numbers, the rest from ``defaults``; anything else is a
    ConfigError naming the form (``labels``: the numbers' names)."""
    if arg is None:
        return defaults
    try:
        values = [float(p) for p in arg.split(",")]
    except ValueError:
        values = []
    if not 1 <= len(values) <= len(defaults) or any(not v >= 0 for v in values):
        forms = " or ".join(f"{name}:{','.join(labels[: i + 1])}" for i in range(len(labels)))
        raise ConfigError(
            f"{forms} with non-negative numbers",
            f"{name}:{arg}",
            f"use e.g. --strategy {name}:{','.join(f'{d:g}' for d in defaults)}",
        )
    return (*values, *defaults[len(values) :])


def build_strategy(cfg: StrategyConfig) -> Strategy:
    """``cfg.name`` is a registered name, optionally with an argument: ``freeze:3``."""
    name, _, arg = cfg.name.partition(":")
    cls = STRATEGIES.get(name)
    strategy = cls(cfg, arg or None)
    if cfg.peft is not None and strategy.part is None:
        raise ConfigError(
            "--peft only with freeze:N or gradual (lora and bitfit are parameter-efficient "
            "themselves)",
            f"--strategy {cfg.name} --peft {cfg.peft}",
            f"use --strategy {cfg.peft}, or --strategy gradual --peft {cfg.peft}",
        )
    return strategy


def with_resolved_head(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its head named as fitted: ``auto`` (or a strategy's own head) resolved
    by the strategy; a conflicting head is a ConfigError."""
    head = build_strategy(cfg.strategy).head_name()
    if head == cfg.strategy.head:
        return cfg
    return dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, head=head))
