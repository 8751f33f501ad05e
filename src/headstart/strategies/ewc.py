"""``ewc``: fine-tuning held near the pretrained weights in proportion to how much each
weight mattered to the source task (elastic weight consolidation, Kirkpatrick et al. 2017,
in its transfer form "L2-SP-Fisher" of Li, Grandvalet & Davoine 2018).

Every step adds ``alpha * sum_i F_i (w_i - w0_i)^2`` over the backbone's body and
``beta * ||w||^2`` over the new head, ``F`` being a diagonal importance of each body
weight for the source task, computed once before training from the starting weights and
cached on disk (``$HEADSTART_CACHE/importance``; the key holds the architecture, the
weights' sha256, the preprocessing and the training data's content):

- a backbone loaded with its source head (an ImageNet classifier): the diagonal Fisher
  information of the source task, the mean over training examples of the squared
  gradient of the log-likelihood of the source head's own top prediction,
  ``(d log p(y_hat | x) / dw)^2`` (one example per backward pass, without augmentation);
- a backbone without one (text encoders, random, headless or cut weights): there is no
  source likelihood, so the importance is that of Memory Aware Synapses (Aljundi et al.
  2018), the mean absolute gradient of the squared norm of the pooled features,
  ``|d ||f(x)||^2 / dw|``: how much each weight moves the representation the head reads.

``F`` is scaled to mean 1 over the body, so ``alpha`` is on L2-SP's scale (the same
total pull, spread by importance); the defaults are L2-SP's (0.01, 0.01). Weight decay is
off in every group, as in L2-SP. ``--strategy ewc``, ``ewc:ALPHA`` or ``ewc:ALPHA,BETA``.
At most :attr:`EWC.MAX_EXAMPLES` training examples (spread over the set) enter ``F``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F

from headstart.backbones import Backbone
from headstart.backbones.base import to_device
from headstart.config import StrategyConfig
from headstart.data.dataset import data_fingerprint
from headstart.errors import ConfigError
from headstart.features.cache import cache_key, default_cache_dir
from headstart.storage import write_safetensors
from headstart.strategies.base import STRATEGIES, StrategyContext
from headstart.strategies.l2sp import L2SP

#: what an importance is, by kind (recorded in the run's metrics)
KINDS = {
    "fisher": "diagonal Fisher of the source head's own top prediction (log-likelihood)",
    "mas": "no source head: Memory Aware Synapses, mean |d ||pooled features||^2 / dw|",
}
#: a change in how importances are computed must change this (new cache keys)
VERSION = "v1"

Score = Callable[[Any], torch.Tensor]


def diagonal_importance(
    params: dict[str, nn.Parameter],
    batches: Iterable[Any],
    score: Score,
    squared: bool = True,
    limit: int | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """The mean over ``batches`` (one example each) of the squared (``squared``) or
    absolute gradient of ``score(x)`` with respect to each parameter, and how many
    examples entered. Parameters ``score`` does not reach get zeros."""
    names = list(params)
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n = 0
    for x in batches:
        if limit is not None and n >= limit:
            break
        grads = torch.autograd.grad(score(x), [params[k] for k in names], allow_unused=True)
        for k, g in zip(names, grads, strict=True):
            if g is not None:
                g = g.detach().float()
                sums[k] += g * g if squared else g.abs()
        n += 1
    if n == 0:
        raise ConfigError(
            "at least one training example to estimate the importance of each weight",
            "none",
            "give the run labelled training data",
        )
    return {k: v / n for k, v in sums.items()}, n


def source_log_likelihood(backbone: Backbone) -> Score | None:
    """``x -> log p(y_hat | x)`` under the backbone's source head, ``y_hat`` its own top
    prediction; None when the backbone has no source head."""
    head = backbone.source_head()
    if head is None:
        return None
    source = backbone.source_backbone()
    w, b = head

    def score(x: Any) -> torch.Tensor:
        f = source.embed(x).float()
        logp = F.log_softmax(F.linear(f, w.to(f.device), b.to(f.device)), 1)
        return logp.gather(1, logp.argmax(1, keepdim=True).detach()).sum()

    return score


def feature_sensitivity(backbone: Backbone) -> Score:
    """``x -> ||f(x)||^2`` of the pooled features (summed over the batch)."""

    def score(x: Any) -> torch.Tensor:
        return (backbone.embed(x).float() ** 2).sum()

    return score


def _cache_file(backbone: Backbone, samples: Any, kind: str, limit: int) -> Path | None:
    """Where the importance of ``backbone``'s weights on ``samples`` is cached (None for
    random weights or unknown samples): the embedding cache's key, which holds the
    architecture, the weights' sha256, the preprocessing and the data's content."""
    if samples is None:
        return None
    what = f"{data_fingerprint(samples)}:importance:{kind}:{limit}:{VERSION}"
    key = cache_key(backbone, what)
    return None if key is None else default_cache_dir() / "importance" / f"{key}.safetensors"


def _spread(n_total: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``range(n_total)`` (all when fewer)."""
    if n_total <= limit:
        return list(range(n_total))
    return sorted({round(i * (n_total - 1) / (limit - 1)) for i in range(limit)})


@STRATEGIES.register(
    "ewc",
    help="Fine-tuning held near the pretrained weights by their importance to the source "
    "task (EWC / L2-SP-Fisher): alpha*sum F(w - w0)^2 + beta*||head||^2, F the Fisher of "
    "the source head's predictions (Memory Aware Synapses where there is no source head), "
    "scaled to mean 1; ewc:ALPHA,BETA (default 0.01,0.01).",
)
class EWC(L2SP):
    name = "ewc"
    #: the most training examples (spread over the set) the importance is estimated on
    MAX_EXAMPLES = 256

    def __init__(self, cfg: StrategyConfig, arg: str | None = None) -> None:
        super().__init__(cfg, arg)
        self._weights: list[torch.Tensor] = []
        self.kind = ""
        self.examples = 0
        self.cached = False

    def setup(self, ctx: StrategyContext) -> None:
        super().setup(ctx)
        model = ctx.model
        score = source_log_likelihood(model)
        self.kind = "fisher" if score is not None else "mas"
        names = {id(p): n for n, p in model.named_parameters()}
        body = {names[id(p)]: p for p, _ in self._body if p.requires_grad}
        importance = self._importance(ctx, body, score)
        mean = torch.cat([v.flatten() for v in importance.values()]).mean() if importance else 0
        if not importance or float(mean) <= 0:
            raise ConfigError(
                "a source task that depends on some weight of the body",
                f"an importance of zero everywhere ({KINDS[self.kind]})",
                "use --strategy l2-sp, which holds every weight alike",
            )
        self._weights = [
            (importance[names[id(p)]] / mean) if names[id(p)] in importance else torch.zeros(())
            for p, _ in self._body
        ]

    def _importance(
        self, ctx: StrategyContext, body: dict[str, nn.Parameter], score: Score | None
    ) -> dict[str, torch.Tensor]:
        model = ctx.model
        path = _cache_file(model, ctx.samples, self.kind, self.MAX_EXAMPLES)
        if path is not None and path.is_file():
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            same = set(stored) == set(body)
            if same and all(stored[n].shape == p.shape for n, p in body.items()):
                self.cached, self.examples = True, int(meta.get("examples", 0))
                return stored
        loader = ctx.plain_loader(1)
        keep = set(_spread(len(loader.dataset), self.MAX_EXAMPLES))  # type: ignore[arg-type]
        device = next(model.parameters()).device
        batches = (to_device(x, device) for i, (x, _) in enumerate(loader) if i in keep)
        was_training = model.training
        model.eval()  # BatchNorm and dropout as at inference: the source task's own network
        try:
            importance, self.examples = diagonal_importance(
                body,
                batches,
                score if score is not None else feature_sensitivity(model),
                squared=score is not None,
            )
        finally:
            model.train(was_training)
        importance = {k: v.cpu() for k, v in importance.items()}
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_safetensors(
                    importance, path, metadata={"examples": str(self.examples), "kind": self.kind}
                )
            except OSError:
                pass  # a cache that cannot be written costs only time
        return importance

    def loss_term(
        self, ctx: StrategyContext, batch: Any, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        if not self._weights:
            raise ConfigError(
                "the importance of each weight, computed when training starts",
                "none (setup was not called)",
                "train through Trainer.fit with a StrategyContext",
            )
        dev = outputs.device
        if self._weights[0].device != dev:  # once: the model moved after setup (a GPU)
            self._weights = [f.to(dev) for f in self._weights]
            self._body = [(p, w0.to(dev)) for p, w0 in self._body]
        body = sum(
            (
                (f * (p - w0) ** 2).sum()
                for (p, w0), f in zip(self._body, self._weights, strict=True)
            ),
            torch.zeros((), device=dev),
        )
        head = sum(((p**2).sum() for p in self._head), torch.zeros((), device=dev))
        return self.alpha * body + self.beta * head

    def summary(self) -> dict[str, Any]:
        return {
            "ewc": {
                "importance": self.kind,
                "what": KINDS.get(self.kind, ""),
                "examples": self.examples,
                "cached": self.cached,
                "alpha": self.alpha,
                "beta": self.beta,
            }
        }
