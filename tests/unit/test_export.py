"""ONNX export of a run folder, and the prediction engines, on toy backbones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from headstart import load
from headstart.backbones import create_backbone
from headstart.backbones.weights import sha256_file
from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    DataConfig,
    ExportConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.engines import batches, export_state
from headstart.errors import BackboneError, ConfigError, DataError, RunFolderError
from headstart.runfolder import read_temperature
from headstart.workflows.export import check_exportable, run_export
from headstart.workflows.fit import fit
from tests.conftest import make_image_folder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two toy image runs (probe features, the default for a frozen backbone, and a
    fine-tuned plain timm model), exported; the probe one with int8."""
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        images = make_image_folder(root / "images")
        out = {}
        for name, strategy in (("probe", "linear-probe"), ("plain", "finetune")):
            cfg = RunConfig(
                data=DataConfig(source=str(images)),
                backbone=BackboneConfig(name="toy-efficientnet"),
                strategy=StrategyConfig(name=strategy),
                train=TrainConfig(epochs=1, batch_size=8),
            )
            fit(cfg, root / name, progress=False)
            quantize = "int8" if name == "probe" else "none"
            run_export(root / name, ExportConfig(quantize=quantize))
            out[name] = root / name
        out["images"] = images
        yield out


def test_probe_features_run_exports_with_hflip_views_and_parity(runs):
    run = runs["probe"]
    doc = json.loads((run / "export" / "export.json").read_text())
    assert doc["exporter"] == "torchscript" and "hook" in doc["exporter_note"]
    parity = doc["parity"]
    assert parity["n"] > 0 and parity["max_abs_diff"] <= parity["allowed"]
    assert parity["top1_agreement"] == 1.0
    assert doc["source_sha256"] == sha256_file(run / "model.safetensors")
    assert doc["sha256"] == sha256_file(run / "export" / "model.onnx")
    assert export_state(run).fresh
    pre = json.loads((run / "export" / "preprocess.json").read_text())
    model = load(run, device="cpu", engine="torch")
    assert pre["modality"] == "image" and pre["classes"] == model.classes
    assert pre["temperature"] == pytest.approx(read_temperature(run))
    img = pre["image"]
    assert img["input_size"] == [64, 64]
    assert img["resize"]["size"] == [64, 64] and img["resize"]["interpolation"] == "bilinear"
    assert img["mean"] == pytest.approx(list(model.backbone.spec.mean))
    assert img["std"] == pytest.approx(list(model.backbone.spec.std))
    assert img["channel_order"] == "RGB" and img["views_in_model"] == ["identity", "hflip"]
    assert pre["inputs"] == [
        {"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 64, 64]}
    ]


def test_plain_timm_run_exports_with_the_dynamo_exporter(runs):
    doc = json.loads((runs["plain"] / "export" / "export.json").read_text())
    assert doc["exporter"] == "dynamo"
    assert doc["parity"]["max_abs_diff"] <= doc["parity"]["allowed"]
    assert (
        doc["quantization"] is None and not (runs["plain"] / "export" / "model.int8.onnx").exists()
    )
    assert set(doc["versions"]) >= {"torch", "onnx", "onnxruntime"}


@pytest.mark.parametrize("name", ["probe", "plain"])
def test_onnx_engine_predicts_as_the_torch_engine(runs, name):
    files = sorted(runs["images"].rglob("*.png"))
    onnx = load(runs[name], device="cpu")  # auto: a fresh export on the CPU
    ref = load(runs[name], device="cpu", engine="torch")
    assert onnx.engine == "onnx" and ref.engine == "torch"
    p_onnx, p_torch = onnx.predict_proba(files, batch_size=7), ref.predict_proba(files)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    assert (p_onnx.argmax(1) == p_torch.argmax(1)).all()
    rows = onnx.predict(files[:3], top_k=2)
    assert [r["labels"][0] for r in rows] == [ref.classes[i] for i in p_torch[:3].argmax(1)]


def test_int8_model_and_its_accuracy_figures(runs):
    folder = runs["probe"] / "export"
    q = json.loads((folder / "export.json").read_text())["quantization"]
    assert (folder / "model.int8.onnx").is_file() and q["file"] == "model.int8.onnx"
    assert q["method"].startswith("static QDQ") and q["split"] == "test" and q["n"] > 0
    assert q["accuracy_change"] == pytest.approx(q["accuracy_int8"] - q["accuracy_fp32"])
    assert 0.0 <= q["top1_agreement"] <= 1.0
    assert q["bytes_int8"] < q["bytes_fp32"]


def test_a_stale_export_is_not_used(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run)
    state = load_file(str(run / "model.safetensors"))
    key = next(k for k in state if k.endswith("weight"))
    state[key] = state[key] + 0.5  # the run refitted since the export
    save_file(state, str(run / "model.safetensors"))
    assert not export_state(run).fresh and "stale" in export_state(run).reason
    assert load(run, device="cpu").engine == "torch"
    with pytest.raises(RunFolderError, match="headstart export"):
        load(run, device="cpu", engine="onnx")


def test_engine_onnx_without_an_export_names_the_command(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run, ignore=shutil.ignore_patterns("export"))
    assert load(run, device="cpu").engine == "torch"
    with pytest.raises(RunFolderError, match=r"headstart export"):
        load(run, device="cpu", engine="onnx")
    r = runner.invoke(app, ["predict", str(run), str(runs["images"]), "--engine", "onnx"])
    assert r.exit_code != 0 and "headstart export" in " ".join(str(r.exception).split())


def test_unreachable_data_needs_no_parity(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run, ignore=shutil.ignore_patterns("export"))
    images = tmp_path / "images"
    shutil.copytree(runs["images"], images)
    text = (run / "config.yaml").read_text().replace(str(runs["images"]), str(images))
    (run / "config.yaml").write_text(text)
    shutil.rmtree(images)  # the data moved away
    with pytest.raises(DataError, match="--no-parity"):
        run_export(run, ExportConfig())
    assert not (run / "export" / "export.json").exists()
    with pytest.raises(ConfigError, match="--quantize"):
        run_export(run, ExportConfig(parity=False, quantize="int8"))
    doc = run_export(run, ExportConfig(parity=False))
    assert doc["parity"] is None and load(run, device="cpu").engine == "onnx"


def test_unsupported_backbones_are_a_clear_error():
    vectors = create_backbone(BackboneConfig(name="toy-vectors"), 3)
    with pytest.raises(BackboneError, match="minilm-l6") as e:
        check_exportable(vectors)
    assert "word vectors" in str(e.value)


# -- text --------------------------------------------------------------------------------------
WORDS = {
    "positive": ["great", "excellent", "love", "works", "perfect", "happy"],
    "negative": ["broken", "awful", "hate", "died", "refund", "angry"],
    "neutral": ["okay", "average", "fine", "arrived", "normal", "box"],
}


def _reviews(path, n_per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in WORDS.items():
        for _ in range(n_per_class):
            texts.append(" ".join(rng.choice(words, size=rng.integers(2, 12))))
            labels.append(label)
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(path, index=False)
    return texts


@pytest.mark.parametrize(("strategy", "exporter"), [("finetune", "dynamo")])
def test_cli_export_of_a_text_run_end_to_end(tmp_path, strategy, exporter):
    texts = _reviews(tmp_path / "reviews.csv")
    run = tmp_path / "run"
    cfg = RunConfig(
        data=DataConfig(source=str(tmp_path / "reviews.csv"), text_cols=["review"]),
        backbone=BackboneConfig(name="toy-bert"),
        strategy=StrategyConfig(name=strategy),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    cfg.data.label_col = "sentiment"
    fit(cfg, run, progress=False)
    r = runner.invoke(app, ["export", str(run), "--format", "onnx", "--quantize", "int8"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "parity" in out and "int8" in out
    folder = run / "export"
    doc = json.loads((folder / "export.json").read_text())
    assert doc["exporter"] == exporter and doc["parity"]["max_abs_diff"] <= doc["parity"]["allowed"]
    assert doc["quantization"]["method"].startswith("dynamic")
    pre = json.loads((folder / "preprocess.json").read_text())
    assert pre["modality"] == "text" and pre["text"]["tokenizer"] == "tokenizer"
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    assert [i["name"] for i in pre["inputs"]][:2] == ["input_ids", "attention_mask"]
    assert pre["text"]["max_length"] > 0 and pre["text"]["text_columns"] == ["review"]
    assert load(run, device="cpu").engine == "torch"  # auto: onnx only for images
    onnx, ref = load(run, device="cpu", engine="onnx"), load(run, device="cpu", engine="torch")
    assert onnx.engine == "onnx"
    p_onnx, p_torch = onnx.predict_proba(texts, batch_size=5), ref.predict_proba(texts)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    # the order of the inputs survives the batching by length
    single = np.stack([ref.predict_proba([t])[0] for t in texts[:4]])
    np.testing.assert_allclose(p_onnx[:4], single, atol=1e-5)
    r = runner.invoke(app, ["predict", str(run), texts[0], "--engine", "torch"])
    assert r.exit_code == 0 and "engine torch" in " ".join(r.output.split())


def test_batches_from_the_decode_pool_match_those_read_in_turn():
    ds = [(torch.full((2,), float(i)), i) for i in range(10)]
    order = [9, 3, 1, 0, 2, 8, 4, 5, 7, 6]
    serial = list(batches(ds, None, 3, order, threads=0))
    pooled = list(batches(ds, None, 3, order, threads=2))
    assert [i for i, _ in pooled] == [order[:3], order[3:6], order[6:9], order[9:]]
    for (i1, x1), (i2, x2) in zip(serial, pooled, strict=True):
        assert i1 == i2 and torch.equal(x1, x2)
