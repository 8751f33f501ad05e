"""The training loop: exact resume, early stopping, accumulation, checkpoints without pickle."""

from __future__ import annotations

import pytest
import torch

from headstart.backbones import create_backbone
from headstart.config import BackboneConfig, StrategyConfig, TrainConfig
from headstart.data import ImageDataset, build_transform, from_arrays
from headstart.strategies import build_strategy
from headstart.training import Callback, Trainer
from tests.conftest import toy_arrays


class _Kill(Callback):
    """Simulates a crash at the first batch of ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, state, loss) -> None:
        if state.epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def _setup(strategy: str = "gradual", **train):
    X, y = toy_arrays(n_per_class=8)
    s = from_arrays(X, y)
    torch.manual_seed(0)
    bb = create_backbone(BackboneConfig(name="toy-efficientnet", drop_rate=0.2), 3)
    spec = bb.spec
    train_ds = ImageDataset(s, build_transform(32, spec.mean, spec.std, train=True))
    val_ds = ImageDataset(s, build_transform(32, spec.mean, spec.std, train=False))
    strat = build_strategy(StrategyConfig(name=strategy))
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 8, "lr": 1e-2, "patience": 10, **train})
    return bb, strat, train_ds, val_ds, cfg


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    bb, strat, tr, va, cfg = _setup()
    ref = Trainer(cfg, [], tmp_path / "a").fit(bb, strat.param_groups(bb), tr, va, strat)
    ref_weights = {k: v.clone() for k, v in bb.state_dict().items()}

    bb2, strat2, tr2, va2, cfg2 = _setup()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg2, [_Kill(2)], tmp_path / "b").fit(
            bb2, strat2.param_groups(bb2), tr2, va2, strat2
        )
    files = {p.suffix for p in (tmp_path / "b").iterdir()}
    assert files <= {".safetensors", ".json"}  # nothing pickled

    bb3, strat3, tr3, va3, cfg3 = _setup()  # a new process would rebuild everything
    state = Trainer(cfg3, [], tmp_path / "b").fit(
        bb3, strat3.param_groups(bb3), tr3, va3, strat3, resume=True
    )
    assert [h["epoch"] for h in state.history] == [0, 1, 2]
    assert strat3.epoch == 2  # the gradual-unfreezing stage came back with the checkpoint
    assert [h["train_loss"] for h in state.history] == pytest.approx(
        [h["train_loss"] for h in ref.history], rel=1e-5
    )
    for k, v in bb3.state_dict().items():
        torch.testing.assert_close(v, ref_weights[k], rtol=1e-5, atol=1e-6)


def test_early_stopping_and_best_epoch_restored(tmp_path):
    bb, strat, tr, va, cfg = _setup("finetune", epochs=6, patience=2, lr=1e-9, warmup_fraction=0.0)
    state = Trainer(cfg).fit(bb, strat.param_groups(bb), tr, va, strat)
    # nothing can improve at lr ~ 0: epoch 0 stays best and training stops after patience
    assert len(state.history) == 3 and state.best_epoch == 0 and state.stop


def test_gradient_accumulation_steps(tmp_path):
    bb, strat, tr, va, cfg = _setup("finetune", epochs=1, grad_accum=3, batch_size=4)
    state = Trainer(cfg).fit(bb, strat.param_groups(bb), tr, va, strat)
    assert state.step == 2  # 24 images / 4 = 6 batches -> 2 optimiser steps


def test_finished_run_resumes_as_a_no_op_with_the_trained_weights(tmp_path):
    bb, strat, tr, va, cfg = _setup("finetune", epochs=2)
    Trainer(cfg, [], tmp_path).fit(bb, strat.param_groups(bb), tr, va, strat)
    w = {k: v.clone() for k, v in bb.state_dict().items()}
    bb2, strat2, tr2, va2, cfg2 = _setup("finetune", epochs=2)  # a fresh process
    assert not all(torch.equal(w[k], v) for k, v in bb2.state_dict().items())
    state = Trainer(cfg2, [], tmp_path).fit(
        bb2, strat2.param_groups(bb2), tr2, va2, strat2, resume=True
    )
    assert state.finished and len(state.history) == 2
    assert all(torch.equal(w[k], v) for k, v in bb2.state_dict().items())


def test_deterministic_mode_gives_identical_runs():
    try:
        runs = []
        for _ in range(2):
            bb, strat, tr, va, cfg = _setup("finetune", epochs=1, deterministic=True)
            Trainer(cfg).fit(bb, strat.param_groups(bb), tr, va, strat)
            assert torch.are_deterministic_algorithms_enabled()
            runs.append(bb.state_dict())
        assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    finally:
        torch.use_deterministic_algorithms(False)
