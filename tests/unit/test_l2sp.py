"""``l2-sp``: the penalty is alpha*||w - w0||^2 + beta*||head||^2 on the starting weights,
it holds the body near them, and the strategy runs in fit, compare and the estimator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from headstart import TransferClassifier
from headstart.backbones import create_backbone
from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.errors import ConfigError
from headstart.strategies import StrategyContext, build_strategy
from headstart.training import Trainer
from headstart.workflows.compare import run_compare
from headstart.workflows.fit import fit
from tests.conftest import make_image_folder, toy_arrays


def _backbone():
    torch.manual_seed(0)
    return create_backbone(BackboneConfig(name="toy-efficientnet"), 3)


def _data(n: int = 24):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 3)


def test_the_penalty_is_alpha_times_the_distance_to_the_start_plus_beta_times_the_head():
    bb = _backbone()
    s = build_strategy(StrategyConfig(name="l2-sp:0.3,0.05"))
    assert (s.alpha, s.beta) == (0.3, 0.05)
    ctx = StrategyContext(bb, _data(), num_classes=3)
    s.setup(ctx)
    start = {n: p.detach().clone() for n, p in bb.named_parameters()}
    with torch.no_grad():
        for p in bb.parameters():
            p.add_(0.01 * torch.randn_like(p))
    head = {n for n, p in bb.named_parameters() if any(p is q for q in bb.head().parameters())}
    expected = 0.3 * sum(
        float(((p.detach() - start[n]) ** 2).sum())
        for n, p in bb.named_parameters()
        if n not in head
    ) + 0.05 * sum(float((p.detach() ** 2).sum()) for n, p in bb.named_parameters() if n in head)
    got = s.loss_term(ctx, None, torch.zeros(1))
    assert got is not None and float(got.detach()) == pytest.approx(expected, rel=1e-4)
    # at the starting weights only the head's term is left
    with torch.no_grad():
        for n, p in bb.named_parameters():
            p.copy_(start[n])
    rest = 0.05 * sum(float((p.detach() ** 2).sum()) for p in bb.head().parameters())
    term = s.loss_term(ctx, None, torch.zeros(1))
    assert term is not None and float(term.detach()) == pytest.approx(rest, rel=1e-4)


def test_no_weight_decay_and_bad_arguments():
    bb = _backbone()
    groups = build_strategy(StrategyConfig(name="l2-sp")).param_groups(bb)
    assert all(g.weight_decay == 0.0 for g in groups)
    for bad in ("l2-sp:x", "l2-sp:-1", "l2-sp:1,2,3"):
        with pytest.raises(ConfigError, match="ALPHA"):
            build_strategy(StrategyConfig(name=bad))


def _distance_after_training(name: str) -> float:
    bb = _backbone()
    start = {n: p.detach().clone() for n, p in bb.named_parameters()}
    head = {id(p) for p in bb.head().parameters()}
    s = build_strategy(StrategyConfig(name=name, backbone_lr_scale=1.0))
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=8, checkpoint=False, weight_decay=0.0)
    Trainer(cfg).fit(bb, s.param_groups(bb), _data(), None, s)
    return sum(
        float(((p.detach() - start[n]) ** 2).sum())
        for n, p in bb.named_parameters()
        if id(p) not in head
    )


def test_the_penalty_holds_the_body_near_its_pretrained_weights():
    free = _distance_after_training("finetune")
    held = _distance_after_training("l2-sp:1.0,0")
    assert held < 0.5 * free


def test_l2sp_runs_in_fit_compare_and_the_estimator(tmp_path):
    folder = make_image_folder(tmp_path / "images", n_per_class=16)
    cfg = RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.25),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="l2-sp:0.1"),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    assert result.metrics["strategy"] == "l2-sp:0.1"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["accuracy"] >= 0
    spec = CompareConfig(strategies=["finetune", "l2-sp"], budgets=[6], seeds=1)
    result = run_compare(cfg, spec, tmp_path / "cmp", progress=False)
    assert {c.strategy for c in result.cells} == {"finetune", "l2-sp"}
    assert all(np.isfinite(c.accuracy) for c in result.cells)
    X, y = toy_arrays(n_per_class=10)
    clf = TransferClassifier(
        backbone="toy-resnet", strategy="l2-sp", image_size=32, epochs=2, verbose=False
    )
    assert np.isfinite(clf.fit(X, y).predict_proba(X)).all()
