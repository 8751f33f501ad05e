"""Reproducibility: a run's results depend on its settings and seed alone, never on the
state of the embedding cache or on what drew from the process-wide random generators
before it or during it."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from headstart.backbones import create_backbone
from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.data import ImageDataset, build_transform, from_arrays
from headstart.device import derive_seed, generator, numpy_rng, seeded, sklearn_seed
from headstart.features import EmbeddingCache
from headstart.features.cache import compute_embeddings
from headstart.features.predict import predict_logits
from headstart.heads import fit_sklearn_head
from headstart.strategies import build_strategy
from headstart.strategies.builtin import Finetune
from headstart.training import Callback, Trainer
from headstart.workflows.compare import run_compare
from headstart.workflows.fit import fit
from tests.conftest import make_image_folder, toy_arrays


def _global_state() -> tuple[bytes, bytes, object]:
    return (
        torch.get_rng_state().numpy().tobytes(),
        np.random.get_state()[1].tobytes(),
        random.getstate(),
    )


def _draw_from_every_global_generator() -> None:
    torch.rand(1000)
    np.random.rand(5)
    random.random()


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"weights differ: {differ[:5]}"


def _cfg(folder: Path, strategy: str, augment: str = "none", epochs: int = 2) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(folder), augment=augment),
        backbone=BackboneConfig(name="toy-efficientnet", drop_rate=0.2),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=epochs, batch_size=8, seed=3),
    )


# -- the seeds ------------------------------------------------------------------------------


def test_derived_seeds_are_stable_and_tell_tags_apart():
    assert derive_seed(0, "a") == derive_seed(0, "a")
    assert len({derive_seed(0, "a"), derive_seed(0, "b"), derive_seed(1, "a")}) == 3
    assert 0 <= derive_seed(2**40, "x") < 2**63 and 0 <= sklearn_seed(5, "x") < 2**32
    assert torch.equal(
        torch.rand(4, generator=generator(1, "t")), torch.rand(4, generator=generator(1, "t"))
    )
    assert np.array_equal(numpy_rng(1, "t").random(4), numpy_rng(1, "t").random(4))


def test_seeded_blocks_ignore_earlier_draws_and_give_the_global_state_back():
    with seeded(0, "init"):
        first = torch.nn.Linear(8, 3).weight.detach().clone()
    _draw_from_every_global_generator()
    before = _global_state()
    with seeded(0, "init"):
        again = torch.nn.Linear(8, 3).weight.detach().clone()
        np.random.rand(3), random.random()
    assert torch.equal(first, again)
    assert _global_state() == before


# -- passes that read data in order draw nothing ----------------------------------------------


def test_an_embedding_pass_draws_nothing_from_the_global_generators():
    """The cause of an irreproducible probe: a cold cache runs more embedding passes
    than a warm one, and each pass used to draw from torch's generator."""
    X, y = toy_arrays(n_per_class=4)
    bb = create_backbone(BackboneConfig(name="toy-efficientnet"), 3)
    ds = ImageDataset(from_arrays(X, y), build_transform(32, bb.spec.mean, bb.spec.std, False))
    before = _global_state()
    compute_embeddings(bb, ds, batch_size=5, progress=False)
    predict_logits(bb, ds, batch_size=5)
    assert _global_state() == before


# -- the training loop ----------------------------------------------------------------------


def _loop_setup(strategy: str = "finetune"):
    X, y = toy_arrays(n_per_class=8)
    s = from_arrays(X, y)
    torch.manual_seed(0)
    bb = create_backbone(BackboneConfig(name="toy-efficientnet", drop_rate=0.2), 3)
    spec = bb.spec
    train_ds = ImageDataset(s, build_transform(32, spec.mean, spec.std, True, "strong"))
    val_ds = ImageDataset(s, build_transform(32, spec.mean, spec.std, train=False))
    strat = build_strategy(StrategyConfig(name=strategy))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, patience=10, seed=1)
    return bb, strat, train_ds, val_ds, cfg


class _ReadsTheDataFirst(Finetune):
    """A strategy whose setup reads the training data in order (as a Fisher estimate
    does) and draws from the global generators, and otherwise trains as fine-tuning."""

    name = "test-reads-the-data-first"

    def setup(self, ctx) -> None:
        for _ in ctx.train_loader():
            pass
        _draw_from_every_global_generator()


class _DrawsBetweenEpochs(Callback):
    def on_epoch_end(self, state, logs) -> None:
        _draw_from_every_global_generator()


def _train(strategy, callbacks=(), validate: bool = True) -> dict[str, torch.Tensor]:
    bb, strat, tr, va, cfg = _loop_setup()
    strat = strategy(strat.cfg) if strategy is not None else strat
    val = va if validate else None  # none: the last epoch is kept, not the best
    Trainer(cfg, list(callbacks)).fit(bb, strat.param_groups(bb), tr, val, strat)
    return {k: v.detach().clone() for k, v in bb.state_dict().items()}


def test_the_loop_ignores_draws_of_a_strategy_setup():
    _assert_same_weights(_train(None), _train(_ReadsTheDataFirst))


def test_an_epoch_ignores_draws_made_after_the_epoch_before():
    """Augmentation (RandAugment draws from Python's generator, crops and flips from
    torch's) and dropout depend on the seed and the epoch alone."""
    plain = _train(None, validate=False)
    _assert_same_weights(plain, _train(None, [_DrawsBetweenEpochs()], validate=False))


class _CrashAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, state, loss) -> None:
        if state.epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def test_a_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path):
    """Augmentation and dropout on, a crash in the last epoch, a fresh model resumed."""
    bb, strat, tr, va, cfg = _loop_setup()
    cfg = dataclasses.replace(cfg, epochs=3)
    Trainer(cfg, [], tmp_path / "whole").fit(bb, strat.param_groups(bb), tr, va, strat)
    whole = {k: v.detach().clone() for k, v in bb.state_dict().items()}
    bb2, strat2, tr2, va2, _ = _loop_setup()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, [_CrashAt(2)], tmp_path / "cut").fit(
            bb2, strat2.param_groups(bb2), tr2, va2, strat2
        )
    _draw_from_every_global_generator()  # a new process starts from other states
    bb3, strat3, tr3, va3, _ = _loop_setup()
    state = Trainer(cfg, [], tmp_path / "cut").fit(
        bb3, strat3.param_groups(bb3), tr3, va3, strat3, resume=True
    )
    assert [h["epoch"] for h in state.history] == [0, 1, 2]
    _assert_same_weights(whole, {k: v.detach() for k, v in bb3.state_dict().items()})


# -- heads ------------------------------------------------------------------------------------


def test_a_linear_svm_head_ignores_the_global_numpy_generator():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 40))
    y = np.repeat(np.arange(3), 10)
    x[np.arange(30), y] += 1.0
    fits = []
    for state in (0, 1):
        np.random.seed(state)
        fits.append(fit_sklearn_head("svm", x, y, 3, c=10.0, seed=0))
    assert torch.equal(fits[0][0], fits[1][0]) and torch.equal(fits[0][1], fits[1][1])


# -- whole runs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "augment"), [("linear-probe", "none"), ("lp-ft", "strong"), ("finetune", "light")]
)
def test_a_cold_and_a_warm_cache_give_the_same_run(tmp_path, strategy, augment):
    folder = make_image_folder(tmp_path / "images", n_per_class=8)
    cache = tmp_path / "cache"
    cfg = _cfg(folder, strategy, augment)
    cold = fit(cfg, tmp_path / "cold", progress=False, cache=EmbeddingCache(cache))
    warm = fit(cfg, tmp_path / "warm", progress=False, cache=EmbeddingCache(cache))
    assert cold.metrics["cache"]["misses"] > 0 and warm.metrics["cache"]["misses"] == 0
    assert warm.metrics["cache"]["hits"] > 0
    _assert_same_weights(_weights(tmp_path / "cold"), _weights(tmp_path / "warm"))
    assert cold.metrics["test"] == warm.metrics["test"]


@pytest.mark.parametrize("strategy", ["linear-probe", "lp-ft", "scratch"])
def test_a_run_ignores_what_drew_from_the_global_generators_before_it(tmp_path, strategy):
    folder = make_image_folder(tmp_path / "images", n_per_class=8)
    cfg = _cfg(folder, strategy, "light")
    first = fit(cfg, tmp_path / "a", progress=False, cache=EmbeddingCache(tmp_path / "c1"))
    _draw_from_every_global_generator()
    second = fit(cfg, tmp_path / "b", progress=False, cache=EmbeddingCache(tmp_path / "c2"))
    _assert_same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert first.metrics["test"] == second.metrics["test"]


def test_a_comparison_run_twice_gives_the_same_numbers(tmp_path):
    folder = make_image_folder(tmp_path / "images", n_per_class=12)
    base = RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.3, augment="light"),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(head="linear"),
        train=TrainConfig(epochs=2, patience=2, batch_size=8),
    )
    spec = CompareConfig(strategies=["scratch", "linear-probe", "lp-ft"], budgets=[4], seeds=2)
    cache = tmp_path / "cache"  # the second comparison finds every embedding cached
    runs = []
    for name in ("first", "second"):
        result = run_compare(
            base, spec, tmp_path / name, progress=False, cache=EmbeddingCache(cache)
        )
        runs.append(
            {(c.strategy, c.budget, c.seed): (c.accuracy, c.macro_f1) for c in result.cells}
        )
        _draw_from_every_global_generator()
    assert len(runs[0]) == 3 * 2
    assert runs[0] == runs[1]
