"""Run folder round trip and the CLI end to end on a toy backbone."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from headstart import load
from headstart.cli import app
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.data.loading import prepare_data
from headstart.features import EmbeddingCache
from headstart.features.predict import predict_logits
from headstart.workflows.fit import fit

runner = CliRunner()


def _cfg(folder, strategy="finetune", head="linear", epochs=2, features="auto"):
    return RunConfig(
        data=DataConfig(source=str(folder)),
        backbone=BackboneConfig(name="toy-efficientnet", features=features),
        strategy=StrategyConfig(name=strategy, head=head),
        train=TrainConfig(epochs=epochs, batch_size=8),
    )


def test_run_folder_round_trip_gives_identical_predictions(image_folder, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(image_folder)
    result = fit(cfg, out, progress=False)
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.yaml",
        "labels.json",
        "metrics.json",
        "history.jsonl",
        "calibration.json",
        "predictions.safetensors",
        "report.html",
    } <= names
    assert "checkpoint" not in names  # a finished run keeps no training checkpoint
    every = [p for p in out.rglob("*") if p.is_file() and p.name != ".headstart.lock"]
    assert {p.suffix for p in every} <= {".safetensors", ".json", ".yaml", ".jsonl", ".html"}
    assert (out / ".headstart.lock").read_text() == ""  # released: no holder named
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(metrics["test"])
    assert metrics["params"]["train"]["trainable"] == metrics["params"]["train"]["total"]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    # the config written names what was resolved: the input size taken from the images
    size = RunConfig.from_yaml(out / "config.yaml").data.image_size
    assert size == 64 and RunConfig.from_yaml(out / "config.yaml") == dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, image_size=size)
    )

    model = load(out, device="cpu")
    assert model.classes == ["circle", "square", "stripes"]
    files = sorted((image_folder / "square").glob("*.png"))
    proba = model.predict_proba(files)
    samples = model.samples(files)
    logits = predict_logits(result.backbone.cpu().eval(), _ds(model, samples), 8)[0]
    ref = torch.softmax(logits / model.temperature, 1)  # calibrated probabilities
    np.testing.assert_array_equal(proba, ref.numpy())
    rows = model.predict(files, top_k=2)
    assert len(rows) == len(files) and len(rows[0]["labels"]) == 2
    assert rows[0]["probabilities"][0] >= rows[0]["probabilities"][1]


def _ds(model, samples):
    return model.backbone.make_dataset(samples)


def test_existing_run_folder_is_not_overwritten(image_folder, tmp_path):
    from headstart.errors import RunFolderError

    fit(_cfg(image_folder, epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(RunFolderError, match="--resume"):
        fit(_cfg(image_folder, epochs=1), tmp_path / "r", progress=False)


def test_linear_probe_reuses_cached_embeddings_with_another_head(image_folder, tmp_path):
    from rich.console import Console

    cache = EmbeddingCache(tmp_path / "cache")
    quiet = Console(quiet=True)
    r1 = fit(
        _cfg(image_folder, "linear-probe", "logistic", features="final"),
        tmp_path / "a",
        progress=False,
        cache=cache,
        console=quiet,
    )
    # train and test computed once (the folder is too small to hold a validation split
    # out); test reused after the forgetting check
    assert r1.metrics["policy"]["validation"].startswith("none held out")
    assert r1.metrics["cache"] == {"hits": 1, "misses": 2}
    r2 = fit(
        _cfg(image_folder, "linear-probe", "svm", features="final"),
        tmp_path / "b",
        progress=False,
        cache=cache,
        console=quiet,
    )
    assert r2.metrics["cache"] == {"hits": 3, "misses": 0}
    # the backbone body is untouched by a linear probe
    body = [k for k in r1.backbone.state_dict() if "classifier" not in k]
    assert all(torch.equal(r1.backbone.state_dict()[k], r2.backbone.state_dict()[k]) for k in body)
    # a different image size changes the content address
    cfg = _cfg(image_folder, "linear-probe", "logistic", features="final")
    cfg.data.image_size = 40
    r3 = fit(cfg, tmp_path / "c", progress=False, cache=cache, console=quiet)
    assert r3.metrics["cache"] == {"hits": 1, "misses": 2}


def test_sklearn_head_is_folded_into_the_linear_layer(image_folder, tmp_path):
    result = fit(_cfg(image_folder, "linear-probe", "logistic"), tmp_path / "r", progress=False)
    acc = result.metrics["test"]["accuracy"]
    model = load(tmp_path / "r", device="cpu")
    data = prepare_data(
        _cfg(image_folder).data,
        __import__("rich.console").console.Console(quiet=True),
        progress=False,
    )
    assert data.test is not None
    pred = model.logits(data.test).argmax(1).numpy()
    assert (pred == data.test.labels).mean() == pytest.approx(acc)


def test_cli_end_to_end(image_folder, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "fit",
            str(image_folder),
            "--backbone",
            "toy-efficientnet",
            "--strategy",
            "lp-ft",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "trainable params" in r.output and "macro-F1" in r.output
    assert (out / "model.safetensors").is_file()

    r = runner.invoke(
        app, ["evaluate", str(out), str(image_folder), "--output", str(tmp_path / "eval.json")]
    )
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["n"] == 36 and 0.0 <= ev["accuracy"] <= 1.0

    img = sorted((image_folder / "circle").glob("*.png"))
    r = runner.invoke(
        app,
        [
            "predict",
            str(out),
            str(img[0]),
            str(img[1]),
            "--top-k",
            "3",
            "--output",
            str(tmp_path / "p.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0].split(",") == [
        "input",
        "label_1",
        "prob_1",
        "label_2",
        "prob_2",
        "label_3",
        "prob_3",
    ]
    assert len(lines) == 3
    r = runner.invoke(
        app,
        ["predict", str(out), str(image_folder / "square"), "--output", str(tmp_path / "p.json")],
    )
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "p.json").read_text())) == 12

    r = runner.invoke(app, ["backbones", "toy-resnet"])
    assert r.exit_code == 0 and "layer1" in r.output and "head" in r.output
    r = runner.invoke(app, ["backbones"])
    assert r.exit_code == 0 and "efficientnet_lite0" in r.output and "toy-vit" in r.output

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["strategy"]["name"] == "lp-ft" and cfg["spec"]["arch"] == "test_efficientnet"


def test_cli_resume_continues_the_run(image_folder, tmp_path):
    out = tmp_path / "run"
    args = [
        "fit",
        str(image_folder),
        "--backbone",
        "toy-efficientnet",
        "--strategy",
        "finetune",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    history = (out / "history.jsonl").read_text().splitlines()
    assert len(history) == 2  # the finished run was not trained again


def test_cli_errors_are_one_clear_message_without_traceback(tmp_path, image_folder):
    cmd = [
        sys.executable,
        "-m",
        "headstart",
        "fit",
        str(image_folder),
        "--backbone",
        "toy-resnt",
        "--out",
        str(tmp_path / "x"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "did you mean 'toy-resnet'" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    r = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_cli_user_given_validation_and_test_folders(tmp_path):
    from tests.conftest import make_image_folder

    train = make_image_folder(tmp_path / "train", n_per_class=8, seed=1)
    val = make_image_folder(tmp_path / "val", n_per_class=3, seed=2)
    test = make_image_folder(tmp_path / "test", n_per_class=4, seed=3)
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "fit",
            str(train),
            "--val",
            str(val),
            "--test",
            str(test),
            "--backbone",
            "toy-resnet",
            "--strategy",
            "linear-probe",
            "--head",
            "logistic",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "train 24, validation 9, test 12" in r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["n"] == 9 and metrics["test"]["n"] == 12


def test_cli_preflight_stops_on_bad_files_or_skips_them(image_folder, tmp_path):
    (image_folder / "circle" / "empty.png").write_bytes(b"")
    (image_folder / "square" / "notes.jpg").write_text("not an image")
    args = [
        "fit",
        str(image_folder),
        "--backbone",
        "toy-resnet",
        "--strategy",
        "linear-probe",
        "--head",
        "logistic",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    r = subprocess.run(
        [sys.executable, "-m", "headstart", *args], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2
    assert "empty.png" in r.stderr and "zero bytes" in r.stderr and "notes.jpg" in r.stderr
    assert "--skip-bad" in r.stderr
    r2 = runner.invoke(app, [*args, "--skip-bad"])
    assert r2.exit_code == 0, r2.output
    out = r2.output.replace("\n", "")
    assert "2 bad skipped" in out and "empty.png" in out and "notes.jpg" in out


def test_a_crashed_lp_ft_run_resumes_where_it_stopped(image_folder, tmp_path, monkeypatch):
    from headstart.training import HistoryWriter

    out = tmp_path / "run"
    cfg = _cfg(image_folder, "lp-ft", epochs=3)
    original = HistoryWriter.on_epoch_end

    def crash_after_logging(self, state, logs):  # dies between the log line and checkpoint
        original(self, state, logs)
        if self.phase == "train" and state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(HistoryWriter, "on_epoch_end", crash_after_logging)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, out, progress=False)
    monkeypatch.undo()
    assert not (out / "model.safetensors").exists() and (out / "checkpoint").is_dir()
    result = fit(cfg, out, resume=True, progress=False)
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["phase"] == "train"] == [0, 1, 2]
    assert any(r["phase"] == "probe" for r in rows)  # the probe's lines were kept
    assert "probe" not in result.metrics["params"]  # and the probe was not run again
    assert (out / "model.safetensors").is_file()


def test_scratch_starts_from_random_weights(image_folder, tmp_path):
    from headstart.backbones import create_backbone

    result = fit(_cfg(image_folder, "scratch", epochs=1), tmp_path / "r", progress=False)
    assert result.metrics["weights"].startswith("random")
    pretrained = create_backbone(BackboneConfig(name="toy-efficientnet"), 3).state_dict()
    ours = result.backbone.state_dict()
    stem = [k for k in ours if k.startswith("model.conv_stem")]
    assert stem and not any(torch.equal(ours[k], pretrained[k]) for k in stem)


def test_linear_probe_leaves_the_pretrained_backbone_untouched(image_folder, tmp_path):
    from headstart.backbones import create_backbone

    cfg = _cfg(image_folder, "linear-probe", features="final")  # the head is the model's own
    result = fit(cfg, tmp_path / "r", progress=False)
    pretrained = create_backbone(BackboneConfig(name="toy-efficientnet"), 3).state_dict()
    ours = result.backbone.state_dict()
    body = [k for k in ours if "classifier" not in k]
    assert all(torch.equal(ours[k], pretrained[k]) for k in body)
    assert not torch.equal(ours["model.classifier.weight"], pretrained["model.classifier.weight"])


def test_predict_accepts_single_images_and_mixed_sizes(image_folder, tmp_path):
    from PIL import Image

    fit(_cfg(image_folder, "linear-probe", "logistic"), tmp_path / "r", progress=False)
    model = load(tmp_path / "r", device="cpu")
    files = sorted((image_folder / "circle").glob("*.png"))[:2]
    imgs = [
        Image.open(files[0]).convert("RGB"),
        Image.open(files[1]).convert("RGB").resize((40, 30)),
    ]
    imgs[1].save(tmp_path / "b.png")
    from_files = model.predict_proba([files[0], tmp_path / "b.png"])
    from_pil = model.predict_proba(imgs)
    np.testing.assert_allclose(from_pil, from_files, atol=1e-6)
    assert model.predict_proba(imgs[0]).shape == (1, 3)
    assert model.predict_proba(np.asarray(imgs[1])).shape == (1, 3)  # one H x W x 3 image
    assert model.predict_proba([np.asarray(imgs[0]), np.asarray(imgs[1])]).shape == (2, 3)


def test_damaged_run_folder_is_a_clear_error(image_folder, tmp_path):
    from headstart.errors import RunFolderError

    fit(_cfg(image_folder, "linear-probe", "logistic"), tmp_path / "r", progress=False)
    model_file = tmp_path / "r" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(RunFolderError, match=r"model\.safetensors"):
        load(tmp_path / "r")
    with pytest.raises(RunFolderError, match=r"no config\.yaml"):
        load(tmp_path / "nothing-here")


def test_history_is_strict_json_without_validation_data(image_folder, tmp_path):
    cfg = _cfg(image_folder, "finetune", epochs=1)
    cfg.data.val_fraction = 0.0
    fit(cfg, tmp_path / "r", progress=False)

    def no_nan(name):
        raise ValueError(name)

    for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines():
        row = json.loads(line, parse_constant=no_nan)
        assert row["val_macro_f1"] is None


def test_vit_at_another_image_size(image_folder, tmp_path):
    cfg = _cfg(image_folder, "finetune", epochs=1)
    cfg.backbone.name = "toy-vit"
    cfg.data.image_size = 48
    fit(cfg, tmp_path / "r", progress=False)
    model = load(tmp_path / "r", device="cpu")
    assert model.backbone.spec.input_size == 48
    assert model.predict_proba(sorted(image_folder.rglob("*.png"))[:2]).shape == (2, 3)


def test_without_held_out_data_the_report_shows_the_training_data(image_folder, tmp_path):
    cfg = _cfg(image_folder, "lp-ft", epochs=1)
    cfg.data.val_fraction = 0.0
    cfg.data.test_fraction = 0.0
    result = fit(cfg, tmp_path / "r", progress=False)
    assert "test" not in result.metrics and "validation" not in result.metrics
    assert result.metrics["calibration"]["temperature"] == 1.0  # nothing to fit it on
    assert result.metrics["forgetting"]["split"] == "train"
    assert "(train)" in (tmp_path / "r" / "report.html").read_text()
