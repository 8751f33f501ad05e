"""Forgetting-aware fine-tuning: ewc, lwf and bss against direct computations, on every
toy backbone (images and text), and through fit, compare and the estimator."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from headstart import TransferClassifier
from headstart.backbones import BACKBONES, create_backbone
from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.data import from_texts
from headstart.errors import ConfigError
from headstart.strategies import StrategyContext, build_strategy
from headstart.strategies.bss import spectral_shrinkage
from headstart.strategies.ewc import diagonal_importance
from headstart.training import Trainer
from headstart.workflows.compare import run_compare
from headstart.workflows.fit import fit
from tests.conftest import make_image_folder, toy_arrays

REGULARISED = ["l2-sp", "ewc", "lwf", "bss"]
TOYS = BACKBONES.names("toy-*")


def _image_backbone(source_head: bool = True, name: str = "toy-efficientnet"):
    torch.manual_seed(0)
    bb = create_backbone(BackboneConfig(name=name), 3)
    bb.source_head_state = None  # the toy's seeded 1000-class head, replaced or removed
    if source_head:  # as a pretrained ImageNet backbone has: a 7-class source task here
        g = torch.Generator().manual_seed(1)
        d = bb.spec.feature_dim
        bb.source_head_state = {
            "weight": torch.randn(7, d, generator=g),
            "bias": torch.randn(7, generator=g),
        }
    return bb


def _images(n: int = 12):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 3)


def _perturb(bb: nn.Module, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in bb.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# -- ewc ---------------------------------------------------------------------------------


def test_fisher_of_a_two_parameter_model_equals_the_closed_form():
    """logits (a x, b x); the log-likelihood of the model's own top class y_hat has the
    gradient x (1[y_hat=0] - p0) in a and its negative in b: F = mean x^2 (1[y_hat=0]-p0)^2."""
    a = nn.Parameter(torch.tensor(0.7))
    b = nn.Parameter(torch.tensor(-0.3))
    xs = torch.tensor([0.5, -1.2, 2.0, 0.1, -0.4])

    def score(x):
        logp = F.log_softmax(torch.stack([a * x, b * x]), 0)
        return logp[int(logp.argmax())]

    got, n = diagonal_importance({"a": a, "b": b}, xs, score)
    x = xs.numpy().astype(np.float64)
    p0 = 1 / (1 + np.exp((-0.3 - 0.7) * x))  # softmax of (0.7x, -0.3x), class 0
    top0 = (0.7 * x >= -0.3 * x).astype(float)
    expected = np.mean(x**2 * (top0 - p0) ** 2)
    assert n == 5
    assert float(got["a"]) == pytest.approx(expected, rel=1e-5)
    assert float(got["b"]) == pytest.approx(expected, rel=1e-5)
    mas, _ = diagonal_importance({"a": a, "b": b}, xs, lambda x: (a * x) ** 2, squared=False)
    assert float(mas["a"]) == pytest.approx(np.mean(np.abs(2 * 0.7 * x**2)), rel=1e-5)
    assert float(mas["b"]) == 0.0  # not reached


def test_ewc_penalty_is_the_importance_weighted_distance_to_the_start(tmp_path):
    bb = _image_backbone()
    s = build_strategy(StrategyConfig(name="ewc:0.3,0.05"))
    assert (s.alpha, s.beta) == (0.3, 0.05)
    ctx = StrategyContext(bb, _images(), num_classes=3)
    s.setup(ctx)
    assert s.summary()["ewc"]["importance"] == "fisher" and s.summary()["ewc"]["examples"] == 12
    weights = torch.cat([f.flatten() for f in s._weights])
    assert float(weights.mean()) == pytest.approx(1.0, rel=1e-4)  # scaled to mean 1
    assert float(weights.std()) > 0.1  # not uniform: an importance, not L2-SP
    start = {n: p.detach().clone() for n, p in bb.named_parameters()}
    _perturb(bb)
    head = {id(p) for p in bb.head().parameters()}
    body = [(n, p) for n, p in bb.named_parameters() if id(p) not in head]
    expected = 0.3 * sum(
        float((f * (p.detach() - start[n]) ** 2).sum())
        for (n, p), f in zip(body, s._weights, strict=True)
    ) + 0.05 * sum(float((p.detach() ** 2).sum()) for p in bb.head().parameters())
    term = s.loss_term(ctx, None, torch.zeros(1))
    assert float(term.detach()) == pytest.approx(expected, rel=1e-4)


def test_ewc_fisher_matches_a_per_example_reference():
    """The strategy's importance is the mean squared gradient of log p(y_hat|x) of the
    source head, one example at a time, in eval mode."""
    bb = _image_backbone()
    data = _images(4)
    s = build_strategy(StrategyConfig(name="ewc"))
    s.setup(StrategyContext(bb, data, num_classes=3))
    ref = copy.deepcopy(bb).eval()
    w, b = ref.source_head()
    head = {id(p) for p in ref.head().parameters()}
    body = [p for p in ref.parameters() if id(p) not in head]
    sums = [torch.zeros_like(p) for p in body]
    for i in range(4):
        logp = F.log_softmax(F.linear(ref.embed(data[i][0][None]), w, b), 1)
        grads = torch.autograd.grad(logp[0, logp.argmax()], body, allow_unused=True)
        for acc, g in zip(sums, grads, strict=True):
            if g is not None:
                acc += g**2
    flat = torch.cat([x.flatten() for x in sums]) / 4
    got = torch.cat([f.flatten() for f in s._weights])
    assert torch.allclose(got, flat / flat.mean(), rtol=1e-3, atol=1e-6)


def test_ewc_without_a_source_head_uses_feature_sensitivity_and_caches(tmp_path):
    bb = _image_backbone(source_head=False)
    images, labels = toy_arrays(n_per_class=4, k=3, size=32)
    from headstart.data import from_arrays

    samples = from_arrays(images, labels)
    ctx = StrategyContext(bb, bb.make_dataset(samples, train=True), num_classes=3, samples=samples)
    first = build_strategy(StrategyConfig(name="ewc"))
    first.setup(ctx)
    assert first.summary()["ewc"]["importance"] == "mas" and not first.summary()["ewc"]["cached"]
    second = build_strategy(StrategyConfig(name="ewc"))
    second.setup(StrategyContext(bb, None, num_classes=3, samples=samples))
    assert second.summary()["ewc"]["cached"] and second.summary()["ewc"]["examples"] == 12
    for a, b in zip(first._weights, second._weights, strict=True):
        assert torch.equal(a, b)


# -- lwf ---------------------------------------------------------------------------------


def test_lwf_loss_is_the_kl_to_the_stored_source_outputs():
    bb = _image_backbone()
    x = _images(6).tensors[0]
    w, b = bb.source_head()
    stored = F.linear(copy.deepcopy(bb).eval().embed(x), w, b).detach()  # before training
    s = build_strategy(StrategyConfig(name="lwf:0.5,3"))
    ctx = StrategyContext(bb, _images(), num_classes=3)
    s.setup(ctx)
    _perturb(bb)
    bb.eval()  # no dropout: the caught features are embed()'s
    out = bb(x)
    term = s.loss_term(ctx, (x, None), out)
    now = F.linear(bb.embed(x), w, b)
    p0 = torch.softmax(stored / 3, 1)
    kl = (p0 * (p0.log() - torch.log_softmax(now / 3, 1))).sum(1).mean()
    assert float(term.detach()) == pytest.approx(0.5 * float(kl.detach()), rel=1e-4)
    assert float(term.detach()) > 0
    term.backward()
    assert bb.head().weight.grad is None  # the new head plays no part in the source outputs
    s.teardown(ctx)
    assert s.teacher is None and not bb.head()._forward_pre_hooks


def test_lwf_at_the_start_is_zero_and_without_a_source_head_distils_features():
    bb = create_backbone(BackboneConfig(name="toy-bert"), 3)
    samples = from_texts(["good film", "bad plot here", "fine"], ["a", "b", "c"])
    ds = bb.make_dataset(samples)
    x = bb.collate_fn()([ds[i] for i in range(3)])[0]
    s = build_strategy(StrategyConfig(name="lwf"))
    ctx = StrategyContext(bb, ds, num_classes=3)
    s.setup(ctx)
    assert s.summary()["lwf"]["target"] == "features"
    bb.eval()
    assert float(s.loss_term(ctx, (x, None), bb(x)).detach()) == pytest.approx(0.0, abs=1e-6)
    before = bb.embed(x).detach()
    _perturb(bb, 0.2)
    after = bb.embed(x)
    expected = (2 - 2 * F.cosine_similarity(after, before)).mean()
    term = s.loss_term(ctx, (x, None), bb(x))
    assert float(term.detach()) == pytest.approx(float(expected.detach()), rel=1e-4)
    s.teardown(ctx)


# -- bss ---------------------------------------------------------------------------------


def test_bss_is_eta_times_the_smallest_squared_singular_values():
    f = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    s = np.linalg.svd(f.numpy().astype(np.float64), compute_uv=False)
    assert float(spectral_shrinkage(f, 1)) == pytest.approx(s[-1] ** 2, rel=1e-4)
    assert float(spectral_shrinkage(f, 2)) == pytest.approx((s[-2:] ** 2).sum(), rel=1e-4)
    bb = _image_backbone()
    strat = build_strategy(StrategyConfig(name="bss:0.1,2"))
    ctx = StrategyContext(bb, _images(), num_classes=3)
    strat.setup(ctx)
    bb.eval()
    x = _images(8).tensors[0]
    term = strat.loss_term(ctx, (x, None), bb(x))
    sv = np.linalg.svd(bb.embed(x).detach().numpy().astype(np.float64), compute_uv=False)
    assert float(term.detach()) == pytest.approx(0.1 * (sv[-2:] ** 2).sum(), rel=1e-3)


@pytest.mark.parametrize(
    "bad", ["ewc:x", "ewc:-1", "lwf:1,2,3", "lwf:1,0", "bss:0.1,1.5", "bss:0.1,0", "bss:a"]
)
def test_bad_strengths_are_clear_errors(bad):
    with pytest.raises(ConfigError, match=bad.split(":")[0]):
        build_strategy(StrategyConfig(name=bad))


# -- every toy backbone, images and text -------------------------------------------------


def _toy_data(bb, name: str):
    if bb.spec.modality == "text":
        texts = ["good film", "bad plot", "fine day", "great cast", "awful", "ok"] * 2
        samples = from_texts(texts, ["a", "b", "c"] * 4)
        return samples, bb.make_dataset(samples, train=True)
    images, labels = toy_arrays(n_per_class=4, k=3, size=32)
    from headstart.data import from_arrays

    samples = from_arrays(images, labels)
    return samples, bb.make_dataset(samples, train=True, augment="light")


@pytest.mark.parametrize("strategy", REGULARISED)
@pytest.mark.parametrize("backbone", TOYS)
def test_every_toy_backbone_trains_with_every_regulariser(backbone, strategy):
    """Through the loop: finite losses, the body moves, hooks and copies go after."""
    torch.manual_seed(0)
    bb = create_backbone(BackboneConfig(name=backbone), 3)
    samples, ds = _toy_data(bb, backbone)
    s = build_strategy(StrategyConfig(name=strategy))
    ctx = StrategyContext(bb, ds, num_classes=3, batch_size=4, samples=samples)
    start = {n: p.detach().clone() for n, p in bb.named_parameters()}
    cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=4, checkpoint=False)
    state = Trainer(cfg).fit(bb, s.param_groups(bb), ds, None, s, ctx=ctx)
    assert all(np.isfinite(h["train_loss"]) for h in state.history)
    moved = {n for n, p in bb.named_parameters() if not torch.equal(p.detach(), start[n])}
    assert moved  # something trained
    assert not bb.head()._forward_pre_hooks  # the strategy's hooks are gone


def test_regularisers_hold_the_source_outputs_better_than_finetune():
    """After the same training, the source head's predictions on the training images
    agree more with the starting model's under ewc and lwf than under finetune."""

    def agreement(name: str) -> float:
        bb = _image_backbone()
        x = _images(24).tensors[0]
        w, b = bb.source_head()
        before = F.linear(copy.deepcopy(bb).eval().embed(x), w, b).argmax(1)
        s = build_strategy(StrategyConfig(name=name, backbone_lr_scale=0.5))
        cfg = TrainConfig(epochs=4, lr=0.01, batch_size=8, checkpoint=False, weight_decay=0.0)
        Trainer(cfg).fit(bb, s.param_groups(bb), _images(24), None, s)
        with torch.no_grad():
            after = F.linear(bb.eval().embed(x), w, b).argmax(1)
        return float((before == after).float().mean())

    free = agreement("finetune")
    assert free < 0.9  # finetune moves the source predictions
    assert agreement("ewc:10,0") > free
    assert agreement("lwf") > free


def test_regularisers_run_in_fit_compare_and_the_estimator(tmp_path):
    folder = make_image_folder(tmp_path / "images", n_per_class=16)
    cfg = RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.25),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="ewc"),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["strategy"] == "ewc" and result.metrics["test"]["accuracy"] >= 0
    assert metrics["params"]["strategy"]["ewc"]["importance"] == "fisher"  # its source head
    spec = CompareConfig(strategies=["lwf", "bss"], budgets=[6], seeds=1)
    cmp = run_compare(cfg, spec, tmp_path / "cmp", progress=False)
    assert {c.strategy for c in cmp.cells} == {"lwf", "bss"}
    assert all(np.isfinite(c.accuracy) for c in cmp.cells)
    X, y = toy_arrays(n_per_class=10)
    clf = TransferClassifier(
        backbone="toy-resnet", strategy="lwf", image_size=32, epochs=2, verbose=False
    )
    assert np.isfinite(clf.fit(X, y).predict_proba(X)).all()


# -- forgetting for text: similarity retention -------------------------------------------


def test_similarity_retention_is_the_spearman_of_the_pair_cosines():
    from scipy.stats import spearmanr

    from headstart.evaluation.run import retention_pairs, similarity_retention

    g = torch.Generator().manual_seed(0)
    before = torch.randn(40, 8, generator=g)
    after = before + 0.5 * torch.randn(40, 8, generator=g)
    i, j = retention_pairs(40)
    assert len(i) == 40 * 39 // 2 and (i < j).all()  # every pair when there are few
    cos = lambda e: F.cosine_similarity(e[i], e[j]).numpy()  # noqa: E731
    rho, pairs = similarity_retention(before, after)
    assert pairs == len(i) and rho == pytest.approx(spearmanr(cos(before), cos(after))[0])
    assert similarity_retention(before, before)[0] == pytest.approx(1.0)
    assert similarity_retention(before, 3 * before)[0] == pytest.approx(1.0)  # scale-free
    i2, j2 = retention_pairs(3000, 500)
    assert len(set(zip(i2.tolist(), j2.tolist(), strict=True))) == 500 and (i2 < j2).all()
    assert (retention_pairs(3000, 500)[1] == j2).all()  # a fixed sample
    assert similarity_retention(before[:2], after[:2]) is None


def test_text_runs_report_similarity_retention_and_compare_shows_it(tmp_path):
    from tests.unit.test_text_pipeline import _csv

    data = _csv(tmp_path / "reviews.csv", n_per_class=16)

    def cfg(strategy: str) -> RunConfig:
        return RunConfig(
            data=DataConfig(source=str(data), text_cols=["review"], label_col="sentiment"),
            backbone=BackboneConfig(name="toy-bert"),
            strategy=StrategyConfig(name=strategy, backbone_lr_scale=1.0),
            train=TrainConfig(epochs=3, batch_size=8, lr=5e-3),
        )

    probe = fit(cfg("linear-probe"), tmp_path / "probe", progress=False).metrics["forgetting"]
    assert probe["measure"] == "similarity_retention" and probe["similarity_retention"] == 1.0
    tuned = fit(cfg("finetune"), tmp_path / "ft", progress=False).metrics["forgetting"]
    assert tuned["applicable"] and tuned["kept"] == tuned["similarity_retention"] < 0.999
    assert tuned["pairs"] == tuned["n"] * (tuned["n"] - 1) // 2
    page = (tmp_path / "ft" / "report.html").read_text()
    assert "similarity retention" in page and f"{tuned['similarity_retention']:.3f}" in page
    spec = CompareConfig(strategies=["linear-probe", "lwf"], budgets=[8], seeds=1)
    run_compare(cfg("finetune"), spec, tmp_path / "cmp", progress=False)
    doc = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert {r["measure"] for r in doc["forgetting"]} == {"similarity_retention"}
    assert "similarity retention" in (tmp_path / "cmp" / "report.html").read_text()


# -- compare: accuracy against forgetting and size ----------------------------------------


def test_pareto_front_and_the_verdict_on_constructed_points():
    from headstart.evaluation.stats import pareto_front, tradeoff

    points = {"a": (0.9, 0.5), "b": (0.8, 0.95), "c": (0.7, 0.9), "d": (0.85, 0.92)}
    assert pareto_front(points) == ["a", "d", "b"]  # c is beaten by b and d in both
    rows = [
        {"strategy": s, "budget": 10, "seed": seed, "accuracy": acc + 0.01 * seed,
         "kept": kept, "measure": "top1_agreement", "trainable": 100 * (i + 1)}
        for i, (s, (acc, kept)) in enumerate(points.items())
        for seed in (0, 1)
    ]  # fmt: skip
    rows.append({"strategy": "scratch", "budget": 10, "seed": 0, "accuracy": 0.99,
                 "kept": None, "measure": None, "trainable": 5})  # fmt: skip
    entry = tradeoff(rows)["10"]
    assert entry["front"] == ["a", "d", "b"] and entry["best_keeping"] == "d"
    assert "d" in entry["text"] and "90%" in entry["text"]
    by = {r["strategy"]: r for r in entry["rows"]}
    assert by["a"]["accuracy"] == pytest.approx(0.905) and by["b"]["trainable"] == 200
    assert not by["scratch"]["pareto"] and by["scratch"]["kept"] is None
    low = tradeoff([{**r, "kept": 0.5 * r["kept"]} for r in rows if r["kept"] is not None])
    assert low["10"]["best_keeping"] is None and "no strategy keeps" in low["10"]["text"]


def test_compare_shows_the_tradeoff_table_chart_and_verdict(tmp_path):
    folder = make_image_folder(tmp_path / "images", n_per_class=16)
    cfg = RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.25),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="finetune"),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    spec = CompareConfig(strategies=["linear-probe", "finetune", "bitfit"], budgets=[6], seeds=1)
    run_compare(cfg, spec, tmp_path / "cmp", progress=False)
    doc = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    entry = doc["tradeoff"]["6"]
    by = {r["strategy"]: r for r in entry["rows"]}
    assert by["linear-probe"]["kept"] == 1.0 and by["linear-probe"]["pareto"]
    assert by["linear-probe"]["trainable"] < by["bitfit"]["trainable"] < by["finetune"]["trainable"]
    assert entry["best_keeping"] is not None and entry["best_keeping"] in entry["text"]
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert 'data-figure="tradeoff"' in page and 'data-section="tradeoff"' in page
    assert entry["text"] in page


# -- progressive networks -----------------------------------------------------------------


def test_progressive_keeps_the_pretrained_column_bitwise_and_forgets_nothing(tmp_path):
    from headstart.backbones.progressive import ProgressiveBackbone
    from headstart.runfolder import load

    folder = make_image_folder(tmp_path / "images", n_per_class=16)
    cfg = RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.25),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="progressive"),
        train=TrainConfig(epochs=3, batch_size=8),
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    bb = result.backbone
    assert isinstance(bb, ProgressiveBackbone)
    pretrained = create_backbone(BackboneConfig(name="toy-efficientnet"), 3, 32).state_dict()
    inner_head = {id(q) for q in bb.inner.head().parameters()}
    head = {n for n, p in bb.inner.named_parameters() if id(p) in inner_head}
    body = {k: v for k, v in bb.inner.state_dict().items() if k not in head}
    assert body and all(torch.equal(v, pretrained[k]) for k, v in body.items())  # bitwise
    assert len(bb.lateral) == len(bb.inner.layer_modules())  # a link from every group
    m = result.metrics
    assert m["forgetting"]["top1_agreement"] == 1.0
    column = sum(p.numel() for g in bb.layer_groups()[-2:] for p in g.params)
    assert m["params"]["train"]["trainable"] == column < m["params"]["train"]["total"]
    assert m["test"]["accuracy"] > 0.5  # it learns (3 shapes; chance 0.33)
    again = load(tmp_path / "run", device="cpu", engine="torch").backbone
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(bb.eval()(x), again.eval()(x))
    with pytest.raises(ConfigError, match="WIDTH"):
        build_strategy(StrategyConfig(name="progressive:wide"))
    with pytest.raises(ConfigError, match="wrap_backbone"):
        build_strategy(StrategyConfig(name="progressive")).param_groups(_image_backbone())


def test_progressive_on_a_text_encoder_retains_every_similarity(tmp_path):
    from tests.unit.test_text_pipeline import _csv

    data = _csv(tmp_path / "reviews.csv", n_per_class=12)
    cfg = RunConfig(
        data=DataConfig(source=str(data), text_cols=["review"], label_col="sentiment"),
        backbone=BackboneConfig(name="toy-bert"),
        strategy=StrategyConfig(name="progressive:16"),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    m = fit(cfg, tmp_path / "run", progress=False).metrics
    assert m["forgetting"]["similarity_retention"] == 1.0
