"""Feature-level domain adaptation: standardisation and CORAL against direct numpy
computations, AdaBN changes only BatchNorm statistics, the alignment strategies run in
`fit` on images and texts without seeing a target label, and the recommendation keeps
source-only when no method is clearly better."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console
from scipy import linalg

from headstart.adaptation.alignment import AffineMap, coral_map, standardize_domains
from headstart.adaptation.recommend import BASELINE, recommend
from headstart.backbones import create_backbone
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.data import from_arrays
from headstart.data.text_samples import TextSamples
from headstart.features import calibrate_batchnorm
from headstart.runfolder import Predictor
from headstart.strategies import alignment
from headstart.strategies.alignment import SOURCE_SIDE_FILE, read_source_side
from headstart.workflows.fit import fit
from tests.conftest import toy_arrays

QUIET = Console(quiet=True)


def _domains(seed: int = 0, n: int = 400, d: int = 5):
    rng = np.random.default_rng(seed)
    mix_s, mix_t = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    source = rng.normal(size=(n, d)) @ mix_s + rng.normal(size=d) * 3
    target = rng.normal(size=(n + 37, d)) @ mix_t - rng.normal(size=d) * 2
    return source, target


def test_standardisation_is_each_domains_own_z_score():
    source, target = _domains()
    to_s, to_t = standardize_domains(source, target)
    np.testing.assert_allclose(to_s(source), (source - source.mean(0)) / source.std(0), atol=1e-10)
    np.testing.assert_allclose(to_t(target), (target - target.mean(0)) / target.std(0), atol=1e-10)


def test_coral_map_equals_the_closed_form_and_matches_the_target_moments():
    source, target = _domains(1)
    ridge = 0.3
    got = coral_map(source, target, ridge=ridge)
    c_s, c_t = np.cov(source, rowvar=False), np.cov(target, rowvar=False)
    lam = ridge * np.mean(np.r_[np.diag(c_s), np.diag(c_t)])
    eye = np.eye(source.shape[1])
    a = linalg.inv(linalg.sqrtm(c_s + lam * eye)) @ linalg.sqrtm(c_t + lam * eye)
    np.testing.assert_allclose(got.weight, a.real, atol=1e-8)
    np.testing.assert_allclose(got(source), (source - source.mean(0)) @ a.real + target.mean(0))
    # without the ridge the mapped source has the target's mean and covariance
    exact = coral_map(source, target, ridge=1e-12)(source)
    np.testing.assert_allclose(exact.mean(0), target.mean(0), atol=1e-8)
    np.testing.assert_allclose(np.cov(exact, rowvar=False), c_t, rtol=1e-6, atol=1e-6)


def test_a_head_folds_through_a_map():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 4))
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    for m in (AffineMap(rng.normal(size=4), rng.normal(size=4)),
              AffineMap(rng.normal(size=(4, 4)), rng.normal(size=4))):  # fmt: skip
        fw, fb = m.fold(w, b)
        np.testing.assert_allclose(x @ fw.T + fb, m(x) @ w.T + b, atol=1e-10)


def _image_data(seed: int = 0):
    X, y = toy_arrays(n_per_class=12, k=3, size=16, seed=seed)
    return X, y


def _fit_images(strategy: str, tmp_path, shift: int = 60):
    from headstart.data.loading import Splits

    X, y = _image_data()
    source = from_arrays(X, y)
    train = source.subset(np.flatnonzero(np.arange(len(y)) % 4 != 0))
    val = source.subset(np.flatnonzero(np.arange(len(y)) % 4 == 0))
    Xt, yt = _image_data(seed=1)
    shifted = np.clip(Xt.astype(int) + shift, 0, 255).astype(np.uint8)
    target = from_arrays(shifted, yt)  # labelled: fit must strip the labels itself
    cfg = RunConfig(
        data=DataConfig(source="arrays", image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=1, batch_size=8, seed=0),
    )
    result = fit(
        cfg,
        tmp_path / strategy,
        progress=False,
        console=QUIET,
        data=Splits(train, val, target),
        target=target,
    )
    return result, train, val, target


@pytest.mark.parametrize("strategy", ["feature-std", "feature-coral", "adabn"])
def test_alignment_strategies_fit_a_target_model_and_write_its_source_side(strategy, tmp_path):
    seen: list[np.ndarray] = []
    original = alignment.FeatureAlignment.align if strategy != "adabn" else alignment.AdaBN.align

    def spy(self, ctx):
        seen.append(np.asarray(ctx.target.labels))
        return original(self, ctx)

    cls = alignment.AdaBN if strategy == "adabn" else alignment.FeatureAlignment
    mp = pytest.MonkeyPatch()
    mp.setattr(cls, "align", spy)
    try:
        result, _, _, target = _fit_images(strategy, tmp_path)
    finally:
        mp.undo()
    assert seen and (seen[0] == -1).all()  # the alignment never saw a target label
    assert (np.asarray(target.labels) >= 0).all()  # the caller's samples are untouched
    folder = tmp_path / strategy
    side = read_source_side(folder)
    assert side is not None and (folder / SOURCE_SIDE_FILE).is_file()
    assert side.weight.shape[0] == 3 and bool(side.batchnorm) == (strategy == "adabn")
    assert "source_val_accuracy" in result.metrics["params"]["alignment"]
    # the saved model is the target model: it reloads and predicts as the trained one
    loaded = Predictor.load(folder, "cpu").backbone
    x = torch.stack([loaded.make_dataset(target)[i][0] for i in range(4)])
    with torch.no_grad():
        np.testing.assert_allclose(
            loaded.eval()(x).numpy(), result.backbone.cpu().eval()(x).numpy(), atol=1e-4
        )


def test_feature_std_head_reads_target_features_standardised_by_the_target(tmp_path):
    result, train, _, target = _fit_images("feature-std", tmp_path)
    bb = result.backbone.cpu().eval()
    from headstart.features import compute_embeddings

    x_t = compute_embeddings(bb, bb.make_dataset(target), 16, "cpu", False).double().numpy()
    side = read_source_side(tmp_path / "feature-std")
    w = bb.head().weight.detach().double().numpy()
    b = bb.head().bias.detach().double().numpy()
    # target head = shared head after the target's z-score; source side = after the source's
    x_s = compute_embeddings(bb, bb.make_dataset(train), 16, "cpu", False).double().numpy()
    shared_w = side.weight * x_s.std(0)  # undo the source's scaling
    np.testing.assert_allclose(w, shared_w / x_t.std(0), rtol=1e-3, atol=1e-5)
    z_t = (x_t - x_t.mean(0)) / x_t.std(0)
    shared_b = side.bias + side.weight @ x_s.mean(0)
    np.testing.assert_allclose(x_t @ w.T + b, z_t @ shared_w.T + shared_b, rtol=1e-3, atol=1e-3)


def test_adabn_changes_only_batchnorm_statistics_to_the_targets(tmp_path):
    torch.manual_seed(0)
    before = create_backbone(BackboneConfig(name="toy-efficientnet"), 3, 32)
    result, _, _, target = _fit_images("adabn", tmp_path)
    after = result.backbone.cpu()
    head = {id(p) for p in after.head().parameters()}
    weights = dict(before.named_parameters())
    body = [(n, p) for n, p in after.named_parameters() if id(p) not in head]
    assert len(body) > 10 and all(torch.equal(p, weights[n]) for n, p in body)  # no weight
    # the statistics are the target's: calibrating the pretrained model on it gives them
    calibrate_batchnorm(before, before.make_dataset(target), 64, "cpu", False)
    ref = dict(before.named_buffers())
    changed = 0
    for name, buf in after.named_buffers():
        if name.endswith("running_mean"):
            torch.testing.assert_close(buf, ref[name], atol=1e-5, rtol=1e-4)
            changed += 1
    assert changed > 3


def test_alignment_on_a_text_backbone(tmp_path):
    from headstart.data.loading import Splits

    words = {0: ["great", "love", "perfect"], 1: ["awful", "broken", "hate"]}
    rng = np.random.default_rng(0)

    def texts(n, extra=""):
        labels = np.repeat([0, 1], n)
        return TextSamples(
            classes=["pos", "neg"],
            labels=labels,
            texts=[" ".join(rng.choice(words[c], 4)) + extra for c in labels],
        )

    train, val, target = texts(8), texts(3), texts(6, " the shipping box arrived today")
    cfg = RunConfig(
        data=DataConfig(source="texts"),
        backbone=BackboneConfig(name="toy-bert"),
        strategy=StrategyConfig(name="feature-std"),
        train=TrainConfig(epochs=1, batch_size=4),
    )
    result = fit(
        cfg,
        tmp_path / "run",
        progress=False,
        console=QUIET,
        data=Splits(train, val, target),
        target=target,
    )
    assert read_source_side(tmp_path / "run") is not None
    assert 0.0 <= result.metrics["test"]["accuracy"] <= 1.0
    with pytest.raises(Exception, match="BatchNorm"):
        cfg.strategy = StrategyConfig(name="adabn")
        fit(cfg, tmp_path / "bn", progress=False, console=QUIET, data=Splits(train, val, target),
            target=target)  # fmt: skip


def _row(seed, method, *, dev, snd, infomax, val=0.9, acc=0.5):
    return {
        "seed": seed,
        "method": method,
        "dev_risk": dev,
        "target_snd": snd,
        "target_infomax": infomax,
        "source_val_accuracy": val,
        "target_accuracy": acc,
    }


def test_the_recommendation_keeps_source_only_when_every_method_is_worse():
    runs = []
    for seed in range(3):
        runs.append(_row(seed, BASELINE, dev=0.5, snd=5.0, infomax=1.0))
        runs.append(_row(seed, "dann", dev=0.9, snd=5.5, infomax=0.8))  # worse risk
        runs.append(_row(seed, "self-training", dev=0.6, snd=6.0, infomax=1.4))  # overconfident
        runs.append(_row(seed, "adabn", dev=0.3, snd=5.1, infomax=1.2, val=0.6))  # lost source
    rec = recommend(runs, confident=["self-training"])
    assert rec["method"] == BASELINE and rec["passed"] == {"dann": 0, "self-training": 0,
                                                             "adabn": 0}  # fmt: skip
    assert rec["sentence"].startswith("Recommended: source-only")
    # its own confidence is no evidence for self-training: without that rule it would win
    assert recommend(runs)["method"] == "self-training"


def test_the_recommendation_needs_every_seed_and_names_the_closest():
    runs = []
    for seed in range(3):
        runs.append(_row(seed, BASELINE, dev=0.5, snd=5.0, infomax=1.0))
        good = seed != 2  # better in two seeds of three only
        runs.append(_row(seed, "mmd", dev=0.3, snd=5.2, infomax=1.3 if good else 0.9))
    rec = recommend(runs)
    assert rec["method"] == BASELINE and rec["passed"]["mmd"] == 2
    assert "closest was mmd" in rec["sentence"] and "2 of 3 seeds" in rec["sentence"]
    one = recommend([r for r in runs if r["seed"] == 0])  # one seed: a pick, said to be weak
    assert one["method"] == "mmd" and one["confidence"] == "low"


def test_the_recommendation_picks_a_method_better_under_every_criterion_in_every_seed():
    runs = []
    for seed in range(3):
        runs.append(_row(seed, BASELINE, dev=0.5, snd=5.0, infomax=1.0))
        runs.append(_row(seed, "feature-std", dev=0.3, snd=5.2, infomax=1.5))
        runs.append(_row(seed, "mmd", dev=0.4, snd=5.3, infomax=1.4))
    rec = recommend(runs)
    assert rec["method"] == "feature-std"  # the larger infomax gain of the two that pass
    assert rec["confidence"] == "high" and rec["sentence"].startswith("Recommended: feature-std")


def test_cli_fit_takes_a_target_for_an_alignment_strategy(image_folder, tmp_path):
    from typer.testing import CliRunner

    from headstart.cli import app

    common = ["--backbone", "toy-efficientnet", "--image-size", "32", "--no-progress"]
    runner = CliRunner()
    missing = runner.invoke(
        app,
        [
            "fit",
            str(image_folder),
            "--strategy",
            "feature-std",
            "--out",
            str(tmp_path / "none"),
            *common,
        ],
    )
    assert missing.exit_code != 0 and "--target DATA" in str(missing.exception)
    r = runner.invoke(
        app,
        [
            "fit",
            str(image_folder),
            "--strategy",
            "feature-coral",
            "--target",
            str(image_folder),
            "--out",
            str(tmp_path / "run"),
            *common,
        ],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    assert "align" in r.output and (tmp_path / "run" / SOURCE_SIDE_FILE).is_file()
