"""Adaptation methods inside the one training loop, on a toy backbone over 2-D points:
two moons, the target rotated by 35 degrees (the answer is known: the same moons)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from torch import nn
from torch.utils.data import TensorDataset

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.config import BackboneConfig, StrategyConfig, TrainConfig
from headstart.data import from_arrays
from headstart.errors import ConfigError
from headstart.strategies.adaptation import METHODS, TargetStream, without_labels
from headstart.strategies.builtin import Finetune
from headstart.training import Trainer


class PointNet(Backbone):
    """A two-layer MLP on 2-D points with a linear head: the smallest Backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = BackboneSpec(
            name="points", arch="mlp", feature_dim=16, weights="toy", weights_sha256="toy"
        )
        self.body = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(self.embed(x))

    def forward_features(self, x):
        return self.body(x)

    def embed(self, x):
        return self.body(x)

    def head(self):
        return self.fc

    def reset_head(self, num_classes):
        self.fc = nn.Linear(16, num_classes)

    def layer_groups(self):
        return [
            LayerGroup("body", list(self.body.parameters())),
            LayerGroup("head", list(self.fc.parameters())),
        ]

    def make_dataset(self, samples, train=False, augment="none"):
        raise NotImplementedError


def _moons(n: int, seed: int, angle: float = 0.0):
    x, y = make_moons(n, noise=0.1, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return torch.tensor(x @ rot.T, dtype=torch.float32), y


EPOCHS, BATCH = 100, 32


def _train(method: str, seed: int, epochs: int = EPOCHS) -> tuple[float, Finetune]:
    xs, ys = _moons(300, 2 * seed)
    xt, yt = _moons(300, 2 * seed + 1, angle=35.0)
    torch.manual_seed(seed)
    model = PointNet()
    cfg = StrategyConfig(backbone_lr_scale=1.0)
    strategy = Finetune(cfg) if method == "source-only" else METHODS.get(method)(cfg)
    if method != "source-only":
        unlabelled = TensorDataset(xt, torch.full((len(xt),), -1))
        steps = epochs * (len(xs) // BATCH)
        strategy.attach(model, TargetStream(unlabelled, BATCH, seed=seed), steps, 2, epochs=epochs)
    train = TrainConfig(
        epochs=epochs, batch_size=BATCH, lr=1e-2, patience=epochs, seed=seed,
        label_smoothing=0.0, warmup_fraction=0.0, weight_decay=0.0, checkpoint=False,
    )  # fmt: skip
    Trainer(train).fit(
        model, strategy.param_groups(model), TensorDataset(xs, torch.tensor(ys)), None, strategy
    )
    model.eval()
    with torch.no_grad():
        return float((model(xt).argmax(1).numpy() == yt).mean()), strategy


def test_adversarial_adaptation_beats_source_only_on_rotated_moons():
    seeds = range(4)
    source_only = np.mean([_train("source-only", s)[0] for s in seeds])
    assert source_only < 0.9  # the rotation costs the source model accuracy
    for method in ("dann", "cdan"):
        adapted = np.mean([_train(method, s)[0] for s in seeds])
        assert adapted > source_only + 0.02, (method, adapted, source_only)


@pytest.mark.parametrize("method", ["coral", "mmd"])
def test_discrepancy_methods_add_their_term_every_step(method):
    acc, strategy = _train(method, 0, epochs=3)
    assert 0.0 <= acc <= 1.0
    assert strategy.step == strategy.total_steps == 3 * (300 // BATCH)


def test_dann_warm_up_follows_the_steps_and_itsdiscriminator_trains():
    model = PointNet()
    dann = METHODS.get("dann")(StrategyConfig())
    xt, _ = _moons(64, 1, 35.0)
    dann.attach(
        model, TargetStream(TensorDataset(xt, torch.zeros(64)), 16), total_steps=10, num_classes=2
    )
    groups = dann.param_groups(model)
    assert groups[-1].name == "domain-discriminator" and groups[-1].trainable
    xs, _ = _moons(16, 0)
    before = [p.detach().clone() for p in groups[-1].params]
    loss = dann.loss_term(None, (xs, None), model(xs))
    assert dann.progress() == pytest.approx(0.1)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[-1].params[:1])
    assert all(torch.equal(a, b) for a, b in zip(before, groups[-1].params, strict=True))
    dann.detach()
    assert not model.fc._forward_pre_hooks


def test_cdan_uses_a_random_multilinear_map_when_the_product_is_wide():
    model = PointNet()
    cdan = METHODS.get("cdan")(StrategyConfig())
    xt, _ = _moons(32, 1)
    cdan.attach(model, TargetStream(TensorDataset(xt, torch.zeros(32)), 8), 5, num_classes=300)
    assert cdan.random is not None  # 16 x 300 > 4096
    assert cdan._condition(torch.randn(4, 16), torch.randn(4, 300)).shape == (4, 1024)


def test_target_labels_never_reach_a_method():
    images = np.random.default_rng(0).integers(0, 255, (12, 8, 8)).astype(np.uint8)
    samples = from_arrays(images, np.arange(12) % 3)
    unlabelled = without_labels(samples)
    assert (unlabelled.labels == -1).all() and (samples.labels >= 0).all()  # a copy
    stream = TargetStream(TensorDataset(torch.randn(12, 2), torch.tensor(unlabelled.labels)), 4)
    batch = stream.next("cpu")
    assert isinstance(batch, torch.Tensor) and batch.shape == (4, 2)  # inputs only
    for _ in range(5):  # endless: it reshuffles after each pass
        assert stream.next("cpu").shape == (4, 2)


def test_a_method_without_target_data_is_a_clear_error():
    model = PointNet()
    coral = METHODS.get("coral")(StrategyConfig())
    with pytest.raises(ConfigError, match="target-domain data"):
        coral.loss_term(None, (torch.randn(4, 2), None), model(torch.randn(4, 2)))


def test_self_training_pseudo_labels_in_balanced_rounds_without_target_labels(tmp_path):
    xs, ys = _moons(300, 0)
    xt, _ = _moons(300, 1, angle=35.0)
    torch.manual_seed(0)
    model = PointNet()
    st = METHODS.get("self-training")(StrategyConfig(backbone_lr_scale=1.0))
    target = TensorDataset(xt, torch.full((300,), -1))  # what the method receives
    epochs = 30
    st.attach(model, TargetStream(target, BATCH, seed=0), epochs * 9, 2, epochs=epochs)
    train = TrainConfig(
        epochs=epochs, batch_size=BATCH, lr=1e-2, patience=epochs, seed=0,
        label_smoothing=0.0, warmup_fraction=0.0, weight_decay=0.0, checkpoint=False,
    )  # fmt: skip
    Trainer(train).fit(model, st.param_groups(model), TensorDataset(xs, torch.tensor(ys)), None, st)
    rounds = st.history
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["portion"] for r in rounds] == [0.2, 0.5, 0.8]
    counts = [r["pseudo_labelled"] for r in rounds]
    assert 0 < counts[0] < counts[1] <= counts[2] <= 0.8 * 300 + 2
    # class balance: neither predicted class supplies more than its own share
    assert st.pseudo is not None
    chosen_labels = st.pseudo.loader.dataset.labels
    assert set(np.unique(chosen_labels).tolist()) == {0, 1}
    with pytest.raises(ConfigError, match="never handed out"):
        st.target.next_pair("cpu")
    # a resumed run goes on with the round's pseudo-labels, not fresh ones
    from headstart.training.checkpoint import load_nested, save_nested

    save_nested({"strategy": st.state_dict()}, tmp_path / "st.safetensors")
    again = METHODS.get("self-training")(StrategyConfig(backbone_lr_scale=1.0))
    again.attach(PointNet(), TargetStream(target, BATCH, seed=0), epochs * 9, 2, epochs=epochs)
    again.load_state_dict(load_nested(tmp_path / "st.safetensors")["strategy"])
    assert again.round == 2 and again.history == st.history and again.pseudo is not None
    resumed = again.pseudo.loader.dataset
    np.testing.assert_array_equal(resumed.chosen, st.pseudo.loader.dataset.chosen)
    np.testing.assert_array_equal(resumed.labels, chosen_labels)


def test_fixmatch_learns_strong_views_from_confident_weak_ones(image_folder):
    from headstart.backbones import create_backbone
    from headstart.data import scan_image_folder
    from headstart.strategies.adaptation import two_views

    samples = scan_image_folder(image_folder)
    bb = create_backbone(BackboneConfig(name="toy-efficientnet"), 3, image_size=32)
    views = two_views(bb, without_labels(samples))
    (weak, strong), label = views[0]
    assert label == -1 and weak.shape == strong.shape == (3, 32, 32)
    fm = METHODS.get("fixmatch")(StrategyConfig())
    fm.THRESHOLD = 0.0  # every weak prediction counts, so the loss cannot be zero
    fm.attach(bb, TargetStream(views, 4, seed=0), total_steps=5, num_classes=3)
    x = torch.stack([bb.make_dataset(samples)[i][0] for i in range(4)])
    loss = fm.loss_term(None, (x, None), bb(x))
    assert loss is not None and float(loss.detach()) > 0 and fm.mask_rate == 1.0
    loss.backward()
    assert bb.head().weight.grad is not None
    text = create_backbone(BackboneConfig(name="toy-bert"), 2)
    with pytest.raises(ConfigError, match="images for fixmatch"):
        two_views(text, samples)


def test_fixmatch_distribution_alignment_evens_out_the_predicted_classes():
    fm = METHODS.get("fixmatch")(StrategyConfig())
    fm.build(4, 3)
    # a model that over-predicts class 0 on the target
    probs = torch.softmax(torch.tensor([[3.0, 1.0, 0.5]] * 6 + [[0.5, 2.5, 0.0]] * 2), 1)
    assert (probs.argmax(1) == 0).sum() == 6
    aligned = fm.align(probs)
    torch.testing.assert_close(aligned.sum(1), torch.ones(8))
    spread = lambda p: float(p.mean(0).max() - p.mean(0).min())  # noqa: E731
    assert spread(aligned) < spread(probs) / 2
    # the running mean carries over: a second, balanced batch is pulled the same way
    again = fm.align(torch.full((4, 3), 1 / 3))
    assert again[:, 0].mean() < 1 / 3 < again[:, 2].mean()


def test_a_resumed_adaptation_run_gets_itsdiscriminator_back(tmp_path):
    from headstart.training.checkpoint import load_nested, save_nested

    xt, _ = _moons(40, 1)
    stream = TargetStream(TensorDataset(xt, torch.full((40,), -1)), BATCH, seed=0)
    first = METHODS.get("dann")(StrategyConfig())
    first.attach(PointNet(), stream, total_steps=10, num_classes=2)
    first.step = 7
    save_nested({"strategy": first.state_dict()}, tmp_path / "last.safetensors")
    again = METHODS.get("dann")(StrategyConfig())
    again.attach(PointNet(), stream, total_steps=10, num_classes=2)  # a fresh discriminator
    assert not torch.equal(again.disc[0].weight, first.disc[0].weight)
    again.load_state_dict(load_nested(tmp_path / "last.safetensors")["strategy"])
    assert again.step == 7 and again.progress() == 0.7
    saved = first.disc.state_dict()
    for key, value in again.disc.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    fm = METHODS.get("fixmatch")(StrategyConfig())
    fm.build(4, 3)
    fm.align(torch.softmax(torch.randn(5, 3), 1))
    save_nested({"strategy": fm.state_dict()}, tmp_path / "fm.safetensors")
    fm2 = METHODS.get("fixmatch")(StrategyConfig())
    fm2.build(4, 3)
    fm2.load_state_dict(load_nested(tmp_path / "fm.safetensors")["strategy"])
    assert fm.mean_probs is not None and fm2.mean_probs is not None
    torch.testing.assert_close(fm2.mean_probs, fm.mean_probs)


def test_self_training_reads_its_labels_from_unaugmented_target_images(image_folder):
    from headstart.backbones import create_backbone
    from headstart.data import scan_image_folder
    from headstart.strategies.adaptation import target_stream

    samples = scan_image_folder(image_folder)
    bb = create_backbone(BackboneConfig(name="toy-efficientnet"), 3, image_size=32)
    st = METHODS.get("self-training")(StrategyConfig())
    stream = target_stream(st, bb, samples, batch_size=4, augment="strong", seed=0)
    assert st.labelling is not None and len(st.labelling) == len(samples)
    plain = bb.make_dataset(without_labels(samples))
    for i in range(3):  # the same pixels every time: no augmentation
        torch.testing.assert_close(st.labelling[i][0], plain[i][0])
        assert st.labelling[i][1] == -1
    augmented = stream.loader.dataset
    assert any(not torch.equal(augmented[i][0], plain[i][0]) for i in range(3))


def test_the_adaptation_term_stops_when_the_target_predictions_collapse():
    model = PointNet()
    mmd = METHODS.get("mmd")(StrategyConfig())
    xt, _ = _moons(64, 1)
    mmd.attach(model, TargetStream(TensorDataset(xt, torch.zeros(64)), 16), 20, num_classes=2)
    spread = torch.tensor([[2.0, -2.0], [-2.0, 2.0]]).repeat(8, 1)  # both classes
    mmd.watch(spread)
    assert mmd.adapting and mmd.start_diversity == pytest.approx(np.log(2), abs=1e-3)
    for _ in range(3):
        mmd.watch(spread)
    assert mmd.adapting  # spread predictions: the term goes on
    collapsed = torch.tensor([[9.0, -9.0]]).repeat(16, 1)  # everything one class
    for _ in range(10):
        mmd.step += 1
        mmd.watch(collapsed)
    assert not mmd.adapting and mmd.stopped_at is not None
    out = model(torch.randn(4, 2))
    assert mmd.loss_term(None, (torch.randn(4, 2), None), out) is None  # no term any more
    assert "collapse_stop" in mmd.summary()
    again = METHODS.get("mmd")(StrategyConfig())
    again.load_state_dict(mmd.state_dict())  # a resumed run stays stopped
    assert again.stopped_at == mmd.stopped_at and not again.adapting
