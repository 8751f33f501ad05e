"""Zero-shot: label directions from templates, refinement, ConSE, the text run folder and a
tiny randomly initialised CLIP loaded from a folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from headstart import load
from headstart.cli import app
from headstart.config import ZeroShotConfig
from headstart.errors import BackboneError, ConfigError
from headstart.fewshot.zeroshot import (
    conse_embeddings,
    is_clip_folder,
    label_directions,
    refine_directions,
    unit,
)
from headstart.workflows.zeroshot import run_zeroshot
from tests.conftest import make_image_folder

QUIET = Console(quiet=True)
VOCAB = ["sport", "match", "goal", "business", "market", "shares", "politics", "vote", "about"]


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A toy sentence encoder whose answers are known: word counts over VOCAB."""
    out = np.zeros((len(texts), len(VOCAB)))
    for i, t in enumerate(texts):
        for w in t.lower().replace(".", " ").split():
            if w in VOCAB:
                out[i, VOCAB.index(w)] += 1
    return out


def test_zero_shot_on_a_toy_encoder_gives_the_known_answer():
    labels = ["sport", "business", "politics"]
    templates = ["This is about {}.", "{}"]
    d = label_directions(bag_of_words, labels, templates)
    # each label's direction: its own word plus the template's "about", averaged
    assert d.shape == (3, len(VOCAB))
    assert d[0, VOCAB.index("sport")] > 0.9 and d[0, VOCAB.index("business")] == 0
    texts = ["sport sport about the match", "business about shares", "politics and the vote"]
    pred = (unit(bag_of_words(texts)) @ d.T).argmax(1)
    np.testing.assert_array_equal(pred, [0, 1, 2])
    # a description is one more prompt: "goal" now pulls towards sport
    with_desc = label_directions(bag_of_words, labels, templates, {"sport": "goal match"})
    assert with_desc[0, VOCAB.index("goal")] > 0 and d[0, VOCAB.index("goal")] == 0


def test_refinement_moves_directions_to_the_clusters_of_the_data():
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    x = np.repeat(centres, 50, 0) + 0.15 * rng.normal(size=(150, 3))
    y = np.repeat(np.arange(3), 50)
    # prompt directions that are off: class 0's leans much towards class 1
    prompts = unit(np.array([[0.6, 0.8, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 1.0]]))
    before = ((unit(x) @ prompts.T).argmax(1) == y).mean()
    refined = refine_directions(x, prompts, rounds=5)
    after = ((unit(x) @ refined.T).argmax(1) == y).mean()
    assert after > before and after > 0.95
    np.testing.assert_allclose(np.linalg.norm(refined, axis=1), 1.0)
    np.testing.assert_allclose(refine_directions(x, prompts, 0), prompts)


def test_conse_mixes_the_top_source_classes_by_probability():
    source_text = np.eye(4)
    probs = np.array([[0.7, 0.2, 0.05, 0.05]])
    got = conse_embeddings(probs, source_text, top=2)
    np.testing.assert_allclose(got, [[0.7 / 0.9, 0.2 / 0.9, 0, 0]])
    # a target label whose text is near source class 0 wins
    target = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    assert (unit(got) @ unit(target).T).argmax(1)[0] == 0


def _bbc_like(tmp_path: Path) -> Path:
    rows = [
        {"text": f"{w} {i}", "label": label}
        for label, w in {"sport": "match goal", "business": "market shares"}.items()
        for i in range(6)
    ]
    path = tmp_path / "texts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_text_zero_shot_writes_a_run_folder_predict_agrees_with(tmp_path):
    data = _bbc_like(tmp_path)
    zcfg = ZeroShotConfig(labels=["Sport", "business"], backbone="toy-bert", max_length=16)
    res = run_zeroshot(str(data), zcfg, tmp_path / "zs", console=QUIET, progress=False)
    doc = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert doc["scored"] == 12 and doc["test"]["n"] == 12  # "Sport" matched "sport"
    assert doc["templates"] and doc["accuracy_prompts_only"] is not None
    predictor = load(tmp_path / "zs", device="cpu")
    texts = pd.read_csv(data)["text"].tolist()
    got = [r["labels"][0] for r in predictor.predict(texts)]
    assert got == [res.classes[i] for i in res.predicted]
    lines = (tmp_path / "zs" / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("input,predicted,cosine") and len(lines) == 13


def test_zero_shot_refuses_bad_templates_and_descriptions():
    with pytest.raises(ConfigError, match="one \\{\\}"):
        ZeroShotConfig(labels=["a", "b"], templates=["no slot"])
    with pytest.raises(ConfigError, match="descriptions"):
        ZeroShotConfig(labels=["a", "b"], descriptions={"c": "x"})


def _tiny_clip(folder: Path) -> Path:
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from headstart.backbones.catalog import BACKBONES

    tok_dir = BACKBONES.get("minilm-l6").package_path()
    if tok_dir is None:
        pytest.skip("the MiniLM package (its tokenizer) is not installed")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def test_a_clip_model_from_a_local_folder_classifies_images(tmp_path):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    clip_dir = _tiny_clip(tmp_path / "clip")
    assert is_clip_folder(str(clip_dir)) and not is_clip_folder(str(tmp_path))
    images = make_image_folder(tmp_path / "images", n_per_class=3)
    labels = ["circle", "square", "stripes"]
    zcfg = ZeroShotConfig(
        labels=labels, templates=["a photo of a {}."], backbone=str(clip_dir), refine=0
    )
    res = run_zeroshot(str(images), zcfg, tmp_path / "zs", console=QUIET, progress=False)
    assert res.method.startswith("CLIP") and res.scores.shape == (9, 3)
    # the same answer as the model's own image-text logits
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    proc = CLIPImageProcessor.from_pretrained(clip_dir)
    from headstart.data import resolve_images

    samples = resolve_images(str(images))
    pics = [samples.image(i) for i in range(len(samples))]
    with torch.no_grad():
        out = model(
            **tok([f"a photo of a {c}." for c in labels], padding=True, return_tensors="pt"),
            pixel_values=proc(images=pics, return_tensors="pt")["pixel_values"],
        )
    np.testing.assert_array_equal(res.predicted, out.logits_per_image.argmax(1).numpy())
    assert json.loads((tmp_path / "zs" / "zeroshot.json").read_text())["scored"] == 9


def test_zeroshot_command_on_texts(tmp_path):
    data = _bbc_like(tmp_path)
    r = CliRunner().invoke(
        app,
        [
            "zeroshot", str(data), "--labels", "sport,business", "--template", "about {}",
            "--template", "{} news", "--describe", "sport=football and tennis",
            "--backbone", "toy-bert", "--out", str(tmp_path / "zs"), "--no-progress",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert doc["templates"] == ["about {}", "{} news"]
    assert doc["descriptions"] == {"sport": "football and tennis"}
    r = CliRunner().invoke(app, ["zeroshot", str(data), "--describe", "oops", "--no-progress"])
    assert isinstance(r.exception, ConfigError) and "LABEL=TEXT" in str(r.exception)


def test_images_through_an_imagenet_classifier_by_conse(tmp_path):
    images = make_image_folder(tmp_path / "images", n_per_class=3)
    zcfg = ZeroShotConfig(
        labels=["circle", "square", "stripes"],
        backbone="toy-efficientnet",  # a toy with a 1000-class source head
        text_backbone="toy-bert",
        refine=0,
    )
    res = run_zeroshot(str(images), zcfg, tmp_path / "zs", console=QUIET, progress=False)
    assert res.method.startswith("ConSE") and res.scores.shape == (9, 3)
    assert np.all(np.abs(res.scores) <= 1.0 + 1e-9)  # cosines
    assert res.metrics is not None and res.metrics["n"] == 9
    # not a linear head: results and predictions, no model to load
    assert (tmp_path / "zs" / "predictions.csv").is_file()
    assert not (tmp_path / "zs" / "model.safetensors").exists()
    with pytest.raises(BackboneError, match="ImageNet-1k classifier"):
        run_zeroshot(
            str(images),
            dataclasses.replace(zcfg, backbone="toy-bert"),
            tmp_path / "zs2",
            console=QUIET,
            progress=False,
        )


def test_zero_shot_output_folder_and_descriptions_matched_ignoring_case(tmp_path):
    from headstart.errors import RunFolderError

    data = _bbc_like(tmp_path)
    zcfg = ZeroShotConfig(
        labels=["sport", "business"],
        backbone="toy-bert",
        max_length=16,
        descriptions={"SPORT": "football"},
    )
    run_zeroshot(str(data), zcfg, tmp_path / "zs", console=QUIET, progress=False)
    doc = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert doc["descriptions"] == {"sport": "football"}
    with pytest.raises(RunFolderError, match="earlier results"):
        run_zeroshot(str(data), zcfg, tmp_path / "zs", console=QUIET, progress=False)
    run_zeroshot(str(data), zcfg, tmp_path / "zs", console=QUIET, progress=False, overwrite=True)
