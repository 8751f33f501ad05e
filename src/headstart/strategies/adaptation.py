"""Domain adaptation methods as strategies of the one training loop.

Each method is a fine-tuning strategy plus an unsupervised term on the target domain,
added through ``Strategy.loss_term``: for every labelled source batch the loop trains on,
the method draws a batch of unlabelled target inputs, runs the backbone on it, and
returns its adaptation loss. The features both domains produce are caught by a forward
pre-hook on the backbone's head (the pooled embedding the head sees), so no method needs
a second code path through the model. Progress (for DANN's warm-up) counts these calls.

The target inputs come from :class:`TargetStream`, built from samples whose labels were
removed (:func:`without_labels`): no method can see a target label.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from headstart.adaptation.losses import (
    cdan_features,
    cluster_labels,
    coral_loss,
    dann_coefficient,
    grad_reverse,
    mmd_loss,
)
from headstart.backbones import Backbone
from headstart.backbones.base import to_device
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.registry import Registry
from headstart.strategies.alignment import ALIGNMENTS
from headstart.strategies.base import STRATEGIES, ParamGroup, Strategy, StrategyContext
from headstart.strategies.builtin import Finetune


def without_labels(samples: Any) -> Any:
    """A copy of image or text samples with every label replaced by -1 (unlabelled)."""
    return replace(samples, labels=np.full(len(samples), -1, dtype=np.int64))


class TargetStream:
    """Endless reshuffled batches of target inputs; labels, if any, are dropped."""

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        collate: Callable[[list[Any]], Any] | None = None,
        seed: int = 0,
        keep_labels: bool = False,
    ) -> None:
        self.keep_labels = keep_labels  # only for pseudo-labels a method made itself
        generator = torch.Generator().manual_seed(seed)
        self.loader: DataLoader[Any] = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            drop_last=len(dataset) > batch_size,  # type: ignore[arg-type]
            collate_fn=collate,
            generator=generator,
        )
        self._it: Iterator[Any] | None = None

    def _batch(self) -> Any:
        if self._it is not None:
            try:
                return next(self._it)
            except StopIteration:
                pass
        self._it = iter(self.loader)
        return next(self._it)

    def next(self, device: str | torch.device) -> Any:
        """The inputs of the next batch (never its labels)."""
        return to_device(self._batch()[0], device)

    def next_pair(self, device: str | torch.device) -> tuple[Any, torch.Tensor]:
        """Inputs and labels of the next batch: only for a stream of pseudo-labels."""
        if not self.keep_labels:
            raise ConfigError(
                "a stream of pseudo-labels (keep_labels=True)",
                "a target stream, whose labels are never handed out",
                "read target batches with next()",
            )
        x, y = self._batch()
        return to_device(x, device), torch.as_tensor(y).to(device)


class AdaptationMethod(Finetune):
    """Fine-tuning plus ``weight`` x an unsupervised source-target term. ``setup`` takes
    the unlabelled target samples from the context (or call :meth:`attach` with a
    stream before training)."""

    name = "adaptation"
    #: start from a source-trained head (as lp-ft), then adapt: measured better than from a
    #: fresh head on mnist-5k -> digits (DANN 0.175 -> 0.378, source-only 0.308 -> 0.338)
    phases = ("probe", "train")
    #: the weight of the adaptation term
    weight: float = 1.0
    #: needs image augmentations (left out of ``headstart adapt --method all`` on texts)
    image_only: ClassVar[bool] = False
    #: trains on its own confident target predictions, so a confidence criterion
    #: (entropy, infomax) is no evidence for it (see headstart.adaptation.recommend)
    optimises_confidence: ClassVar[bool] = False
    #: the adaptation term stops for good when the target predictions collapse: the
    #: entropy of the running mean target prediction falls below this fraction of its
    #: value at the start (the source-trained head's). An adversary or a discrepancy term
    #: can reach its optimum by mapping the whole target onto a few classes; once there,
    #: more of the term only makes it worse (measured on the held-out shifts of
    #: benchmarks/adapt_results.md)
    COLLAPSE_FRACTION: ClassVar[float] = 0.5
    #: momentum of the running mean target prediction the guard watches
    WATCH_MOMENTUM: ClassVar[float] = 0.8

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        self.backbone: Backbone | None = None
        self.target: TargetStream | None = None
        self.total_steps = 1
        self.epochs = 1
        self.step = 0
        self._caught: list[torch.Tensor] = []
        self._hook: Any = None
        self.marginal: torch.Tensor | None = None
        self.start_diversity: float | None = None
        self.stopped_at: int | None = None

    def check_inputs(self, target: Any) -> None:
        if target is None:
            raise ConfigError(
                f"unlabelled target-domain data for the adaptation strategy {self.name!r}",
                "none",
                f"pass --target DATA to `headstart fit --strategy {self.name}` (target= in "
                "Python), or compare it with `headstart adapt --source DATA --target DATA "
                f"--method {self.name}`",
            )

    def setup(self, ctx: StrategyContext) -> None:
        """The target stream from ``ctx.target`` (its labels removed), unless a stream
        was attached by hand."""
        if self.target is not None and ctx.target is None:
            return
        if ctx.target is None or not len(ctx.target):
            self.check_inputs(None)
        stream = target_stream(self, ctx.model, ctx.target, ctx.batch_size, ctx.augment, ctx.seed)
        total = ctx.steps_per_epoch * ctx.epochs
        self.attach(ctx.model, stream, total, ctx.num_classes, ctx.epochs)

    def teardown(self, ctx: StrategyContext) -> None:
        self.detach()

    def attach(
        self,
        backbone: Backbone,
        target: TargetStream,
        total_steps: int,
        num_classes: int,
        epochs: int = 1,
    ) -> None:
        self.backbone, self.target = backbone, target
        self.total_steps = max(1, int(total_steps))
        self.epochs = max(1, int(epochs))
        if self._hook is not None:
            self._hook.remove()
        self._hook = backbone.head().register_forward_pre_hook(self._catch)
        self.build(backbone.spec.feature_dim, num_classes)

    def detach(self) -> None:
        """Remove the hook on the head (the trained model is a plain classifier again)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _catch(self, _module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self._caught.append(inputs[0])

    def build(self, feature_dim: int, num_classes: int) -> None:
        """Create the method's own modules (a domain discriminator), if any."""

    def own_modules(self) -> list[nn.Module]:
        return []

    def param_groups(self, backbone: Backbone) -> list[ParamGroup]:
        """The backbone's groups, then the method's own modules once they are built (the
        loop adds them itself when ``setup`` builds them later)."""
        groups = super().param_groups(backbone)
        own = [p for m in self.own_modules() for p in m.parameters()]
        if own:
            groups.append(ParamGroup("domain-discriminator", own, True, 1.0))
        return groups

    def progress(self) -> float:
        return min(1.0, self.step / self.total_steps)

    def watch(self, logits_t: torch.Tensor) -> None:
        """Follow the target predictions; stop the adaptation term when they collapse
        (see :attr:`COLLAPSE_FRACTION`)."""
        p = torch.softmax(logits_t.detach().float(), 1).mean(0).cpu()
        m = self.WATCH_MOMENTUM
        self.marginal = p if self.marginal is None else m * self.marginal + (1 - m) * p
        diversity = float(-(self.marginal * self.marginal.clamp_min(1e-12).log()).sum())
        if self.start_diversity is None:
            self.start_diversity = diversity
        elif self.stopped_at is None and diversity < self.COLLAPSE_FRACTION * self.start_diversity:
            self.stopped_at = self.step

    @property
    def adapting(self) -> bool:
        """The adaptation term is still on (the target predictions have not collapsed)."""
        return self.stopped_at is None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"adaptation_steps": self.step}
        if self.stopped_at is not None:
            out["collapse_stop"] = {
                "step": self.stopped_at,
                "of": self.total_steps,
                "diversity_at_start": self.start_diversity,
                "why": "the target predictions collapsed (entropy of their mean below "
                f"{self.COLLAPSE_FRACTION:g} of its start): the adaptation term stopped",
            }
        return out

    def loss_term(
        self, ctx: StrategyContext | None, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        """The adaptation term of a source batch: a target batch through the model, and
        the method's loss between the two (``ctx`` is not needed: the stream is
        attached)."""
        if self.backbone is None or self.target is None:
            raise ConfigError(
                f"target-domain data attached to the {self.name} method",
                "none",
                "train it through `headstart adapt` (or call attach() with a TargetStream)",
            )
        if not self._caught:
            raise ConfigError(
                "the source features caught at the backbone's head",
                "none (the head did not run)",
                "use a backbone whose forward pass goes through its head()",
            )
        f_s = self._caught[-1]
        self._caught.clear()
        if not self.adapting:
            return None
        logits_t = self.backbone(self.target.next(outputs.device))
        f_t = self._caught[-1]
        self._caught.clear()
        self.step += 1
        self.watch(logits_t)
        return self.weight * self.loss(f_s.float(), f_t.float(), outputs.float(), logits_t.float())

    def loss(
        self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """For the epoch checkpoint: the step (DANN's warm-up) and the weights of the
        method's own modules (the domain discriminator), so a resumed run goes on with them."""
        own = [m.state_dict() for m in self.own_modules()]
        return {
            **super().state_dict(),
            "step": self.step,
            "modules": own,
            "marginal": self.marginal,
            "start_diversity": self.start_diversity,
            "stopped_at": self.stopped_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.step = int(state.get("step", 0))
        self.marginal = state.get("marginal")
        self.start_diversity = state.get("start_diversity")
        self.stopped_at = state.get("stopped_at")
        saved = state.get("modules")
        own = self.own_modules()
        if saved is None:  # a checkpoint written before the modules were kept: fresh ones
            return
        if len(saved) != len(own):
            raise ConfigError(
                f"a checkpoint of the {self.name} method with {len(own)} module(s) of its own",
                f"one with {len(saved)}",
                "resume with the method the run was started with, or start it again",
            )
        for module, weights in zip(own, saved, strict=True):
            module.load_state_dict(weights)


def discriminator(dim: int, hidden: int = 256) -> nn.Module:
    """The domain classifier of DANN: two hidden layers with ReLU and dropout."""
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, 1),
    )


def _domain_bce(disc: nn.Module, z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    disc.to(z_s.device)
    d = disc(torch.cat([z_s, z_t])).squeeze(1)
    labels = torch.cat([torch.ones(len(z_s)), torch.zeros(len(z_t))]).to(d.device)
    return F.binary_cross_entropy_with_logits(d, labels)


class DANN(AdaptationMethod):
    """Domain-adversarial training (Ganin & Lempitsky 2015): a domain classifier on the
    features behind a gradient reversal layer whose coefficient warms up from 0 to 1."""

    name = "dann"

    def build(self, feature_dim: int, num_classes: int) -> None:
        self.disc = discriminator(feature_dim)

    def own_modules(self) -> list[nn.Module]:
        return [self.disc] if hasattr(self, "disc") else []

    def loss(
        self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor
    ) -> torch.Tensor:
        coeff = dann_coefficient(self.progress())
        return _domain_bce(self.disc, grad_reverse(f_s, coeff), grad_reverse(f_t, coeff))


#: above this many dimensions CDAN's outer product is replaced by its randomised version
CDAN_MAX_DIM = 4096
CDAN_RANDOM_DIM = 1024


class CDAN(DANN):
    """Conditional adversarial adaptation (Long et al. 2018): the domain classifier sees
    the outer product of features and (detached) class probabilities, or its randomised
    multilinear version ``(R_f f) * (R_g g) / sqrt(d)`` when the product is too wide."""

    name = "cdan"

    def build(self, feature_dim: int, num_classes: int) -> None:
        self.random: tuple[torch.Tensor, torch.Tensor] | None = None
        dim = feature_dim * num_classes
        if dim > CDAN_MAX_DIM:
            gen = torch.Generator().manual_seed(0)
            self.random = (
                torch.randn(feature_dim, CDAN_RANDOM_DIM, generator=gen),
                torch.randn(num_classes, CDAN_RANDOM_DIM, generator=gen),
            )
            dim = CDAN_RANDOM_DIM
        self.disc = discriminator(dim)

    def _condition(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        g = torch.softmax(logits, 1).detach()
        if self.random is None:
            return cdan_features(f, g)
        r_f, r_g = (r.to(f.device) for r in self.random)
        return (f @ r_f) * (g @ r_g) / math.sqrt(CDAN_RANDOM_DIM)

    def loss(
        self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor
    ) -> torch.Tensor:
        coeff = dann_coefficient(self.progress())
        z_s = grad_reverse(self._condition(f_s, logits_s), coeff)
        z_t = grad_reverse(self._condition(f_t, logits_t), coeff)
        return _domain_bce(self.disc, z_s, z_t)


class CORAL(AdaptationMethod):
    """Deep CORAL (Sun & Saenko 2016): match the second-order statistics of the features."""

    name = "coral"

    def loss(
        self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor
    ) -> torch.Tensor:
        return coral_loss(f_s, f_t)


class MMD(AdaptationMethod):
    """Maximum mean discrepancy with a multi-bandwidth Gaussian kernel (DAN, Long et al.
    2015) between the source and target features."""

    name = "mmd"

    def loss(
        self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor
    ) -> torch.Tensor:
        return mmd_loss(f_s, f_t)


class _PseudoLabelled(Dataset[Any]):
    """The chosen target items with their pseudo-labels (the target's own labels are -1)."""

    def __init__(self, target: Dataset[Any], chosen: np.ndarray, labels: np.ndarray) -> None:
        self.target, self.chosen, self.labels = target, chosen, labels

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.target[int(self.chosen[i])][0], int(self.labels[i])


class SelfTraining(AdaptationMethod):
    """Iterative pseudo-labelling with class balance (after CBST, Zou et al. 2018).

    After a warm-up on the source alone (the first ``1 / (ROUNDS + 1)`` of the epochs),
    training is split into ``ROUNDS`` rounds. At the start of each, the current model
    labels every (unaugmented) target example, and the labels are refined by clustering the
    target features around the classes' centroids (SHOT, Liang et al. 2020; see
    :func:`~headstart.adaptation.losses.cluster_labels`). Per label, the most confident
    fraction of its examples (``portion``: 20 % in round 1, rising to 80 %) whose
    confidence also reaches ``THRESHOLD`` become pseudo-labelled; so a dominant class
    cannot crowd the others out. The loss adds the cross-entropy on a batch of them
    (augmented) to every step.

    Measured on mnist-5k -> digits (Lite0, 64 px, 50 labels per class, 4 epochs, 3 seeds):
    source-only 0.392 target accuracy; with the model's own labels 0.332 (its pseudo-labels
    collapse onto 4 to 6 classes), with the refined ones 0.565."""

    name = "self-training"
    optimises_confidence = True
    ROUNDS = 3
    #: cluster refinement passes of the pseudo-labels (0: the model's own predictions)
    REFINE = 2
    THRESHOLD = 0.8
    PORTIONS = (0.2, 0.5, 0.8)

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        #: the unaugmented target inputs the pseudo-labels are read from (set by
        #: target_stream; the stream's own augmented dataset otherwise)
        self.labelling: Dataset[Any] | None = None
        self.build(0, 0)  # empty state until attach() builds it for the data

    def build(self, feature_dim: int, num_classes: int) -> None:
        self.num_classes = num_classes
        self.pseudo: TargetStream | None = None
        self.round = -1
        self.history: list[dict[str, Any]] = []

    def on_epoch_start(self, epoch: int, backbone: Backbone) -> None:
        # the first 1 / (ROUNDS + 1) of training is on the source alone (a model to trust)
        this_round = min(self.ROUNDS - 1, epoch * (self.ROUNDS + 1) // max(1, self.epochs) - 1)
        if (
            this_round >= 0 and this_round != self.round
        ):  # before the freezing: predicting resets module modes
            self.round = this_round
            self.relabel(backbone)
        super().on_epoch_start(epoch, backbone)

    def relabel(self, backbone: Backbone) -> None:
        from headstart.features.predict import predict_logits

        assert self.target is not None
        dataset = self.target.loader.dataset  # augmented: what the pseudo-labels train on
        # the labels are read from the un-augmented images
        seen = dataset if self.labelling is None else self.labelling
        device = next(backbone.parameters()).device
        self._caught.clear()
        logits, _ = predict_logits(backbone, seen, self.target.loader.batch_size or 64, device)
        features = torch.cat([f.detach().float().cpu() for f in self._caught]).numpy()
        self._caught.clear()
        probs = torch.softmax(logits, 1).numpy()
        if self.REFINE:
            pred, conf = cluster_labels(features, probs, self.REFINE)
        else:
            conf, pred = probs.max(1), probs.argmax(1)
        portion = self.PORTIONS[min(self.round, len(self.PORTIONS) - 1)]
        chosen: list[np.ndarray] = []
        for c in range(probs.shape[1]):
            mine = np.flatnonzero(pred == c)
            if not len(mine):
                continue
            top = mine[np.argsort(-conf[mine], kind="stable")[: max(1, int(portion * len(mine)))]]
            chosen.append(top[conf[top] >= self.THRESHOLD])
        picked = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
        self.history.append(
            {
                "round": self.round,
                "portion": portion,
                "pseudo_labelled": len(picked),
                "classes": len(np.unique(pred[picked])),
            }
        )
        self._use(picked, pred[picked])

    def _use(self, picked: np.ndarray, labels: np.ndarray) -> None:
        """Train on target items ``picked`` with pseudo-labels ``labels`` from now on."""
        assert self.target is not None
        if not len(picked):
            self.pseudo = None
            return
        ds = _PseudoLabelled(self.target.loader.dataset, picked, labels)
        batch = self.target.loader.batch_size or 32
        self.pseudo = TargetStream(
            ds, batch, self.target.loader.collate_fn, seed=self.round, keep_labels=True
        )

    def state_dict(self) -> dict[str, Any]:
        """Also the round, its pseudo-labels and the history: a resumed run goes on with
        the labels of the round it stopped in."""
        pseudo = self.pseudo.loader.dataset if self.pseudo is not None else None
        assert pseudo is None or isinstance(pseudo, _PseudoLabelled)
        return {
            **super().state_dict(),
            "round": self.round,
            "history": self.history,
            "picked": torch.as_tensor(pseudo.chosen) if pseudo is not None else None,
            "pseudo_labels": torch.as_tensor(pseudo.labels) if pseudo is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.round = int(state.get("round", -1))
        self.history = list(state.get("history") or [])
        if state.get("picked") is not None and self.target is not None:
            self._use(np.asarray(state["picked"]), np.asarray(state["pseudo_labels"]))

    def loss_term(
        self, ctx: StrategyContext | None, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        self._caught.clear()
        if self.backbone is None or self.target is None:
            return super().loss_term(ctx, batch, outputs)  # the clear error
        self.step += 1
        if self.pseudo is None:
            return None
        x, y = self.pseudo.next_pair(outputs.device)
        logits = self.backbone(x)
        self._caught.clear()
        return self.weight * F.cross_entropy(logits.float(), y)

    def loss(
        self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError("self-training's loss is the pseudo-labels' cross-entropy")


class TwoViews(Dataset[Any]):
    """Each target image as a (weak, strong) pair of augmentations, label -1: FixMatch's
    input. ``weak`` and ``strong`` are datasets over the same samples."""

    def __init__(self, weak: Dataset[Any], strong: Dataset[Any]) -> None:
        self.weak, self.strong = weak, strong

    def __len__(self) -> int:
        return len(self.weak)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[tuple[Any, Any], int]:
        return (self.weak[i][0], self.strong[i][0]), -1


def two_views(backbone: Backbone, samples: Any) -> TwoViews:
    """FixMatch's target dataset: light and strong (RandAugment) views of each image."""
    if backbone.spec.modality != "image":
        raise ConfigError(
            "images for fixmatch (weak and strong image augmentations)",
            f"{backbone.spec.modality} data",
            "use self-training, dann, cdan, coral or mmd for text",
        )
    return TwoViews(
        backbone.make_dataset(samples, train=True, augment="light"),
        backbone.make_dataset(samples, train=True, augment="strong"),
    )


class FixMatch(AdaptationMethod):
    """Consistency between weak and strong augmentation (Sohn et al. 2020) on the target:
    where the prediction on the weak view is confident (max probability at least
    ``THRESHOLD``), it becomes the label of the strong view. Images only; the target
    stream must come from :func:`two_views`.

    With ``ALIGN`` the weak-view probabilities are first divided by a running mean of the
    target predictions and renormalised (distribution alignment, Berthelot et al. 2020),
    so the pseudo-labels are pushed towards balanced classes instead of towards the
    classes the source model already over-predicts on the target. Measured on mnist-5k ->
    digits (3 seeds): without it the pseudo-labels collapse onto one class."""

    name = "fixmatch"
    image_only = True
    optimises_confidence = True
    THRESHOLD = 0.95
    ALIGN = True
    #: momentum of the running mean of the target's weak-view probabilities
    MOMENTUM = 0.9

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        self.build(0, 0)  # empty state until attach() builds it for the data

    def build(self, feature_dim: int, num_classes: int) -> None:
        self.mask_rate = 0.0
        self.mean_probs: torch.Tensor | None = None

    def align(self, probs: torch.Tensor) -> torch.Tensor:
        """Distribution alignment towards a uniform class prior."""
        batch_mean = probs.mean(0).detach()
        if self.mean_probs is None:
            self.mean_probs = batch_mean
        else:
            self.mean_probs = (
                self.MOMENTUM * self.mean_probs.to(probs.device) + (1 - self.MOMENTUM) * batch_mean
            )
        aligned = probs / self.mean_probs.clamp_min(1e-6)
        return aligned / aligned.sum(1, keepdim=True)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mean_probs": self.mean_probs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.mean_probs = state.get("mean_probs")

    def loss_term(
        self, ctx: StrategyContext | None, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        self._caught.clear()
        if self.backbone is None or self.target is None:
            return super().loss_term(ctx, batch, outputs)  # the clear error
        if not self.adapting:
            return None
        views = self.target.next(outputs.device)
        if not isinstance(views, (tuple, list)) or len(views) != 2:
            raise ConfigError(
                "a target stream of (weak, strong) image pairs",
                f"batches of {type(views).__name__}",
                "build the target dataset with two_views(backbone, samples)",
            )
        weak, strong = views
        with torch.no_grad():
            weak_logits = self.backbone(weak).float()
            self.watch(weak_logits)
            probs = torch.softmax(weak_logits, 1)
            if self.ALIGN:
                probs = self.align(probs)
        conf, pseudo = probs.max(1)
        mask = (conf >= self.THRESHOLD).float()
        logits = self.backbone(strong).float()
        self._caught.clear()
        self.step += 1
        self.mask_rate = float(mask.mean())
        per_item = F.cross_entropy(logits, pseudo, reduction="none")
        return self.weight * (per_item * mask).mean()

    def loss(
        self, f_s: torch.Tensor, f_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError("fixmatch's loss is the consistency term of loss_term")


#: every adaptation method of ``headstart adapt``: the closed-form alignments first (seconds
#: on cached features), then the methods that train
METHODS: Registry[type[Strategy]] = Registry("adaptation method")
for _align in ALIGNMENTS:
    METHODS.add(_align.name, _align, STRATEGIES.help(_align.name))
for _cls, _help in (
    (DANN, "domain classifier behind gradient reversal (Ganin & Lempitsky 2015)"),
    (CDAN, "domain classifier conditioned on class probabilities (Long et al. 2018)"),
    (CORAL, "align feature covariances (Sun & Saenko 2016)"),
    (MMD, "minimise the multi-kernel MMD between domains (Long et al. 2015)"),
    (SelfTraining, "class-balanced pseudo-labels of confident target predictions, in rounds"),
    (FixMatch, "weak/strong augmentation consistency on target images (Sohn et al. 2020)"),
):
    METHODS.add(_cls.name, _cls, _help)
    STRATEGIES.add(_cls.name, _cls, f"domain adaptation: {_help} (needs unlabelled target data)")


def target_stream(
    method: AdaptationMethod,
    backbone: Backbone,
    target: Any,
    batch_size: int,
    augment: str,
    seed: int,
) -> TargetStream:
    """The unlabelled target batches ``method`` trains on: labels removed, the training
    augmentation (FixMatch: weak and strong views)."""
    unlabelled = without_labels(target)
    if isinstance(method, FixMatch):
        dataset: Dataset[Any] = two_views(backbone, unlabelled)
    else:
        dataset = backbone.make_dataset(unlabelled, train=True, augment=augment)
    if isinstance(method, SelfTraining):
        method.labelling = backbone.make_dataset(unlabelled)
    return TargetStream(dataset, batch_size, backbone.collate_fn(), seed=seed)
