"""Every strategy freezes exactly what it says: requires_grad, weights after a step, BN stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from headstart.backbones import BACKBONES, create_backbone
from headstart.config import BackboneConfig, StrategyConfig, TrainConfig
from headstart.errors import ConfigError, UnknownNameError
from headstart.strategies import STRATEGIES, build_strategy
from headstart.training.optim import build_optimizer

TOYS = [n for n in BACKBONES.names("toy-*") if BACKBONES.get(n).modality == "image"]


def _backbone(name: str = "toy-efficientnet", k: int = 3):
    torch.manual_seed(0)
    return create_backbone(BackboneConfig(name=name), k)


def _one_step(bb, strategy, epoch: int = 0) -> dict[str, torch.Tensor]:
    """One optimiser step as the loop does it; return the state before the step."""
    groups = strategy.param_groups(bb)
    opt = build_optimizer(groups, TrainConfig(lr=1e-2, weight_decay=0.1))
    bb.train()
    strategy.on_epoch_start(epoch, bb)
    before = {k: v.detach().clone() for k, v in bb.state_dict().items()}
    x = torch.randn(4, 3, 32, 32)
    loss = nn.functional.cross_entropy(bb(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    return before


def _changed(bb, before) -> set[str]:
    after = bb.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def _names_of(bb, group_indices) -> set[str]:
    groups = bb.layer_groups()
    ids = {id(p) for i in group_indices for p in groups[i].params}
    return {n for n, p in bb.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("backbone", TOYS)
def test_linear_probe_trains_only_the_head(backbone):
    bb = _backbone(backbone)
    s = build_strategy(StrategyConfig(name="linear-probe"))
    before = _one_step(bb, s)
    n = len(bb.layer_groups())
    head = _names_of(bb, [n - 1])
    assert {n for n, p in bb.named_parameters() if p.requires_grad} == head
    changed = _changed(bb, before)
    # only head parameters moved; BatchNorm running statistics stayed as pretrained
    assert changed == head


@pytest.mark.parametrize("strategy", ["finetune", "lp-ft", "scratch"])
@pytest.mark.parametrize("backbone", TOYS)
def test_finetune_trains_everything(backbone, strategy):
    bb = _backbone(backbone)
    s = build_strategy(StrategyConfig(name=strategy))
    before = _one_step(bb, s)
    assert all(p.requires_grad for p in bb.parameters())
    changed = _changed(bb, before)
    with_grad = {
        n for n, p in bb.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert with_grad and with_grad <= changed
    assert len(with_grad) > 0.5 * len(list(bb.parameters()))


@pytest.mark.parametrize("n_frozen", [1, 3])
@pytest.mark.parametrize("bn_stats", ["frozen", "update"])
def test_freeze_n_freezes_first_groups_and_their_batchnorm(n_frozen, bn_stats):
    bb = _backbone()
    s = build_strategy(StrategyConfig(name=f"freeze:{n_frozen}", bn_stats=bn_stats))
    before = _one_step(bb, s)
    frozen = _names_of(bb, range(n_frozen))
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert not (frozen & trainable)
    assert trainable == {n for n, _ in bb.named_parameters()} - frozen
    changed = _changed(bb, before)
    assert not (changed & frozen)
    # BatchNorm statistics of frozen groups never move; of trainable groups only with "update"
    frozen_modules = {n.rsplit(".", 1)[0] for n in frozen}
    stats = {k for k in before if "running_mean" in k or "running_var" in k}
    frozen_stats = {k for k in stats if k.rsplit(".", 1)[0] in frozen_modules}
    assert frozen_stats and not (changed & frozen_stats)
    if bn_stats == "update":
        assert changed & (stats - frozen_stats)
    else:
        assert not (changed & stats)


def test_freeze_n_out_of_range_is_an_error():
    bb = _backbone()
    n = len(bb.layer_groups())
    with pytest.raises(ConfigError, match="freeze:N with N below"):
        build_strategy(StrategyConfig(name=f"freeze:{n}")).param_groups(bb)
    with pytest.raises(ConfigError, match="freeze:N"):
        build_strategy(StrategyConfig(name="freeze:zero"))
    with pytest.raises(ConfigError):
        build_strategy(StrategyConfig(name="freeze"))


def test_gradual_unfreezes_one_group_per_epoch_from_the_top():
    bb = _backbone()
    s = build_strategy(StrategyConfig(name="gradual"))
    n = len(bb.layer_groups())
    for epoch in range(n + 1):
        bb.train()
        s.on_epoch_start(epoch, bb)
        expected = _names_of(bb, range(max(0, n - 1 - epoch), n))
        assert {k for k, p in bb.named_parameters() if p.requires_grad} == expected
    # a restored strategy state reproduces the epoch's freezing
    s2 = build_strategy(StrategyConfig(name="gradual"))
    s2.load_state_dict({"name": "gradual", "arg": None, "epoch": 1})
    assert [g.trainable for g in s2.param_groups(bb)] == [False] * (n - 2) + [True, True]


def test_gradual_frozen_weights_unchanged_after_step():
    bb = _backbone()
    s = build_strategy(StrategyConfig(name="gradual"))
    before = _one_step(bb, s, epoch=1)
    n = len(bb.layer_groups())
    assert not (_changed(bb, before) & _names_of(bb, range(n - 2)))


def test_layer_decay_gives_discriminative_learning_rates():
    bb = _backbone()
    s = build_strategy(StrategyConfig(name="finetune", layer_decay=0.5, backbone_lr_scale=0.1))
    groups = s.param_groups(bb)
    n = len(groups)
    assert groups[-1].lr_scale == 1.0
    for i, g in enumerate(groups[:-1]):
        assert g.lr_scale == pytest.approx(0.1 * 0.5 ** (n - 1 - i))
    opt = build_optimizer(groups, TrainConfig(lr=1e-3))
    lrs = [g["lr"] for g in opt.param_groups]
    assert max(lrs) == pytest.approx(1e-3) and min(lrs) == pytest.approx(1e-4 * 0.5 ** (n - 1))
    # layer decay combines with freeze:N and gradual too
    for name in ("freeze:2", "gradual", "lp-ft"):
        g2 = build_strategy(StrategyConfig(name=name, layer_decay=0.5)).param_groups(bb)
        assert [g.lr_scale for g in g2] == [g.lr_scale for g in groups]


def test_scratch_uses_random_init_and_full_learning_rate():
    s = build_strategy(StrategyConfig(name="scratch"))
    assert not s.uses_pretrained
    assert set(s.lr_scales(4)) == {1.0}


def test_registry_did_you_mean():
    assert set(STRATEGIES.names()) >= {
        "linear-probe",
        "finetune",
        "freeze",
        "gradual",
        "lp-ft",
        "scratch",
    }
    with pytest.raises(UnknownNameError, match="did you mean 'linear-probe'"):
        build_strategy(StrategyConfig(name="linear-prob"))


def test_no_decay_on_norms_and_biases():
    bb = _backbone()
    groups = build_strategy(StrategyConfig(name="finetune")).param_groups(bb)
    opt = build_optimizer(groups, TrainConfig(weight_decay=0.3))
    for g in opt.param_groups:
        assert g["weight_decay"] == (0.0 if g["name"].endswith("/no_decay") else 0.3)
        assert all((p.ndim <= 1) == g["name"].endswith("/no_decay") for p in g["params"])


ALL_STRATEGIES = [
    "linear-probe",
    "finetune",
    "freeze:1",
    "gradual",
    "lp-ft",
    "scratch",
    "l2-sp",
    "ewc",
    "lwf",
    "bss",
    "bitfit",
    "lora",
    "progressive",
]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("backbone", TOYS)
def test_contract_every_backbone_and_strategy(backbone, strategy):
    """One step on every registered toy with every strategy: frozen parameters keep their
    values, parameters that train and get a gradient move, the head always trains."""
    s = build_strategy(StrategyConfig(name=strategy))
    bb = s.wrap_backbone(_backbone(backbone), 3)
    groups = s.param_groups(bb)
    assert [g.name for g in groups] == [g.name for g in bb.layer_groups()]
    before = _one_step(bb, s)
    changed = _changed(bb, before)
    named = dict(bb.named_parameters())
    frozen = {n for n, p in named.items() if not p.requires_grad}
    moved = {n for n, p in named.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert not (changed & frozen)
    assert moved <= changed
    assert _names_of(bb, [len(groups) - 1]) <= changed


def test_random_init_backbone_updates_batchnorm_statistics():
    """Without pretrained weights there are no statistics to keep: BatchNorm trains."""
    torch.manual_seed(0)
    bb = create_backbone(BackboneConfig(name="toy-efficientnet", pretrained=False), 3)
    assert bb.spec.weights_sha256 is None
    before = _one_step(bb, build_strategy(StrategyConfig(name="finetune")))
    assert any("running_mean" in k for k in _changed(bb, before))


def test_sklearn_head_with_a_dead_feature_keeps_sane_weights():
    """A feature that is ~1e-33 everywhere (as one of MiniLM's dimensions is) must not get a
    weight of 1e31 when the scaler is folded in: lp-ft would start from a broken head."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from headstart.heads import fit_sklearn_head

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(0, 1, (60, 8)) + y[:, None]
    x[:, 3] = rng.normal(0, 1e-33, 60)  # dead
    w, b = fit_sklearn_head("logistic", x, y, 3)
    assert float(w.abs().max()) < 10
    # the folded layer still predicts what scikit-learn predicts
    ref = LogisticRegression(max_iter=3000).fit(StandardScaler().fit_transform(x), y)
    ours = (torch.as_tensor(x, dtype=torch.float32) @ w.T + b).argmax(1).numpy()
    assert (ours == ref.predict(StandardScaler().fit_transform(x))).mean() > 0.95
