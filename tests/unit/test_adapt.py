"""`headstart adapt` end to end on a toy backbone: source image folder, a colour-shifted
target, every method beside source-only, the criteria and the A-distance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from headstart.cli import app
from headstart.config import (
    AdaptConfig,
    BackboneConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.errors import ConfigError, DataError, RunFolderError
from headstart.strategies.adaptation import METHODS
from headstart.workflows.adapt import (
    ALIGNMENT_NAMES,
    SOURCE_ONLY,
    cheapest_first,
    run_adapt,
    summarise,
)
from headstart.workflows.fit import fit

runner = CliRunner()


def _shifted(folder, out):
    """The same images with inverted colours: a shift whose labels are known."""
    for path in folder.rglob("*.png"):
        dest = out / path.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - np.asarray(Image.open(path).convert("RGB"))).save(dest)
    return out


def _base(source) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(),
        train=TrainConfig(epochs=2, batch_size=8, patience=2),
    )


@pytest.mark.slow
def test_every_method_runs_beside_source_only(image_folder, tmp_path):
    target = _shifted(image_folder, tmp_path / "target")
    spec = AdaptConfig(target=str(target), methods=["all"], seeds=1)
    res = run_adapt(
        _base(image_folder), spec, tmp_path / "da", progress=False, console=Console(quiet=True)
    )
    # the closed-form alignments run first: seconds on cached features
    assert list(res.summary["methods"]) == [SOURCE_ONLY, *cheapest_first(METHODS.names())]
    assert list(res.summary["methods"])[1:7] == sorted(ALIGNMENT_NAMES)
    assert res.summary["recommendation"]["sentence"].startswith("Recommended: ")
    for row in res.runs:
        assert 0.0 <= row["target_accuracy"] <= 1.0 and -2.0 <= row["a_distance"] <= 2.0
        assert (tmp_path / "da" / "0" / row["method"] / "metrics.json").is_file()
    doc = json.loads((tmp_path / "da" / "adapt.json").read_text())
    assert set(doc["summary"]["picks"]) == {
        "source-val", "target-entropy", "target-infomax", "dev", "snd", "oracle"
    }  # fmt: skip
    for row in doc["runs"]:
        assert np.isfinite(row["dev_risk"]) and np.isfinite(row["target_snd"])
    assert doc["summary"]["a_distance_before"] > 1.0  # inverted colours are easy to tell apart


def test_summary_picks_by_each_criterion():
    runs = [
        {"seed": 0, "method": "source-only", "source_val_accuracy": 0.9, "target_entropy": 0.5,
         "target_diversity": 2.0, "a_distance": 1.5, "target_accuracy": 0.4,
         "target_macro_f1": 0.4, "target_snd": 5.0, "dev_risk": 0.6},
        {"seed": 0, "method": "dann", "source_val_accuracy": 0.8, "target_entropy": 0.2,
         "target_diversity": 2.2, "a_distance": 0.5, "target_accuracy": 0.7,
         "target_macro_f1": 0.7, "target_snd": 5.1, "dev_risk": 0.4},
        # confident but collapsed onto one class: the lowest entropy, no diversity
        {"seed": 0, "method": "fixmatch", "source_val_accuracy": 0.7, "target_entropy": 0.05,
         "target_diversity": 0.1, "a_distance": 1.0, "target_accuracy": 0.1,
         "target_macro_f1": 0.02, "target_snd": 6.0, "dev_risk": 0.9},
    ]  # fmt: skip
    s = summarise(runs, 1.9, labelled=True)
    assert s["picks"]["source-val"]["methods"] == ["source-only"]
    assert s["picks"]["target-entropy"]["methods"] == ["fixmatch"]
    assert s["picks"]["target-infomax"]["methods"] == ["dann"]
    assert s["picks"]["oracle"]["target_accuracy"] == 0.7
    assert s["picks"]["dev"]["methods"] == ["dann"]
    assert s["picks"]["snd"]["methods"] == ["fixmatch"]  # SND rewards a collapse too
    assert s["recommendation"]["method"] in ("source-only", "dann")


def test_an_adaptation_strategy_without_target_data_is_refused_before_any_work(tmp_path):
    cfg = _base("no-such-folder")
    cfg.strategy = StrategyConfig(name="dann")
    with pytest.raises(ConfigError, match="unlabelled target-domain data"):
        fit(cfg, tmp_path / "run", progress=False)


def test_cli_adapt_prints_the_table(image_folder, tmp_path):
    target = _shifted(image_folder, tmp_path / "target")
    r = runner.invoke(
        app,
        [
            "adapt",
            "--source",
            str(image_folder),
            "--target",
            str(target),
            "--method",
            "coral",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--backbone",
            "toy-efficientnet",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "da"),
            "--no-progress",
        ],
        env={"COLUMNS": "160"},
    )
    assert r.exit_code == 0, r.output
    assert "coral" in r.output and "source-only" in r.output and "A-distance" in r.output
    assert "target-entropy" in r.output and "Recommended: " in r.output


def _flat_copy(folder, out):
    """The images of a class-folder tree in one flat folder: an unlabelled target."""
    out.mkdir()
    for i, path in enumerate(sorted(folder.rglob("*.png"))):
        (out / f"{i:03d}.png").write_bytes(path.read_bytes())
    return out


def test_a_target_may_be_a_flat_image_folder_or_a_table_without_labels(image_folder, tmp_path):
    from headstart.data.loading import load_target

    flat = _flat_copy(image_folder, tmp_path / "phone_unlabelled")
    target = load_target(str(flat), DataConfig())
    assert len(target) == len(list(image_folder.rglob("*.png"))) and (target.labels == -1).all()
    labelled = load_target(str(image_folder), DataConfig())  # class folders: labelled
    assert (labelled.labels >= 0).all() and len(labelled.classes) > 1
    table = tmp_path / "reviews_b.csv"
    table.write_text("review,stars\ngreat stuff,5\nawful,1\n")
    unlabelled = load_target(str(table), DataConfig(text_cols=["review"], label_col="sentiment"))
    assert unlabelled.texts == ["great stuff", "awful"] and (unlabelled.labels == -1).all()
    rated = load_target(str(table), DataConfig(text_cols=["review"], label_col="stars"))
    assert rated.classes == ["1", "5"] and rated.labels.tolist() == [1, 0]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_target(str(empty), DataConfig())


@pytest.mark.slow
def test_an_unlabelled_target_scored_on_a_separate_labelled_folder(image_folder, tmp_path):
    shifted = _shifted(image_folder, tmp_path / "shifted")
    flat = _flat_copy(shifted, tmp_path / "phone_unlabelled")
    spec = AdaptConfig(target=str(flat), target_eval=str(shifted), methods=["self-training"])
    spec.seeds = 1
    res = run_adapt(
        _base(image_folder), spec, tmp_path / "da", progress=False, console=Console(quiet=True)
    )
    assert {r["method"] for r in res.runs} == {SOURCE_ONLY, "self-training"}
    assert all(0.0 <= r["target_accuracy"] <= 1.0 for r in res.runs)  # scored on shifted/
    assert res.summary["target_eval"] == str(shifted)
    # without --target-eval an unlabelled target has no accuracy: only the criteria pick
    spec = AdaptConfig(target=str(flat), methods=["coral"], seeds=1)
    res = run_adapt(
        _base(image_folder), spec, tmp_path / "da2", progress=False, console=Console(quiet=True)
    )
    assert "target_accuracy" not in res.runs[0]
    assert set(res.summary["picks"]) == {
        "source-val", "target-entropy", "target-infomax", "dev", "snd"
    }  # fmt: skip


def test_a_repeated_adapt_reads_finished_runs_back_and_refuses_other_settings(
    image_folder, tmp_path
):
    target = _shifted(image_folder, tmp_path / "target")
    spec = AdaptConfig(target=str(target), methods=["coral"], seeds=1)
    first = run_adapt(
        _base(image_folder), spec, tmp_path / "da", progress=False, console=Console(quiet=True)
    )
    model = tmp_path / "da" / "0" / "coral" / "model.safetensors"
    mtime = model.stat().st_mtime_ns
    console = Console(record=True, width=200)
    again = run_adapt(_base(image_folder), spec, tmp_path / "da", progress=False, console=console)
    assert console.export_text().count("already finished") == 2
    assert model.stat().st_mtime_ns == mtime  # not trained again
    for a, b in zip(first.runs, again.runs, strict=True):
        assert a["target_accuracy"] == b["target_accuracy"]
        assert abs(a["target_entropy"] - b["target_entropy"]) < 1e-5
    other = _base(image_folder)
    other.train.epochs = 3
    with pytest.raises(RunFolderError, match=r"train\.epochs: 2 -> 3"):
        run_adapt(other, spec, tmp_path / "da", progress=False, console=Console(quiet=True))
    # another target (or a labelled evaluation added later) is other data: refused too
    elsewhere = _shifted(image_folder, tmp_path / "elsewhere")
    next(elsewhere.rglob("*.png")).write_bytes(next(image_folder.rglob("*.png")).read_bytes())
    moved = AdaptConfig(target=str(elsewhere), methods=["coral"], seeds=1)
    with pytest.raises(RunFolderError, match="other target, target-eval data"):
        run_adapt(
            _base(image_folder), moved, tmp_path / "da", progress=False,
            console=Console(quiet=True),
        )  # fmt: skip
    copy = AdaptConfig(target=str(_shifted(image_folder, tmp_path / "copy")), methods=["coral"])
    copy.seeds = 1  # the same content in another folder: read back as before
    run_adapt(_base(image_folder), copy, tmp_path / "da", progress=False, console=console)
    assert console.export_text().count("already finished") == 2  # export_text() clears


def test_text_leaves_out_the_image_only_methods_from_all_and_refuses_them_by_name():
    from headstart.workflows.adapt import methods_for

    console = Console(record=True, width=200)
    every = METHODS.names()
    assert methods_for("image", every, console) == every
    text = methods_for("text", every, console)
    assert "fixmatch" not in text and "adabn" not in text and "ft-adabn" not in text
    assert "ft-feature-std" not in text  # would fine-tune a second time on text
    assert len(text) == len(every) - 5 and "feature-std" in text
    assert "adabn, fixmatch, ft-adabn left out: images only" in console.export_text()
    with pytest.raises(ConfigError, match="images only"):
        methods_for("text", ["dann", "fixmatch"], console)
    assert methods_for("text", ["dann", "mmd"], console) == ["dann", "mmd"]


def test_a_target_with_other_folders_is_unlabelled_and_one_with_some_classes_is_scored(
    image_folder, tmp_path
):
    from headstart.workflows.adapt import _target_data

    classes = sorted(d.name for d in image_folder.iterdir() if d.is_dir())
    (tmp_path / "phone").mkdir()
    nested = tmp_path / "phone" / "images"  # one folder of images, not classes
    _flat_copy(image_folder, nested)
    console = Console(record=True, width=200)
    spec = AdaptConfig(target=str(tmp_path / "phone"))
    target, evaluation = _target_data(spec, _base(image_folder), classes, False, console)
    assert (target.labels == -1).all() and evaluation is None
    assert "not the source's: read as unlabelled" in console.export_text()
    subset = tmp_path / "subset"  # labelled with 2 of the 3 source classes
    for name in classes[1:]:
        (subset / name).mkdir(parents=True)
        for path in (image_folder / name).glob("*.png"):
            (subset / name / path.name).write_bytes(path.read_bytes())
    spec = AdaptConfig(target=str(subset))
    target, evaluation = _target_data(spec, _base(image_folder), classes, False, console)
    assert evaluation is target and target.classes == classes
    assert set(target.labels.tolist()) == {1, 2}  # indices of the source's classes


def test_source_only_fine_tunes_with_the_strategy_named_and_ft_alignments_build_on_it(
    image_folder, tmp_path
):
    import yaml

    target = _shifted(image_folder, tmp_path / "target")
    args = ["adapt", "--source", str(image_folder), "--target", str(target), "--method",
            "ft-feature-std", "--seeds", "1", "--epochs", "1", "--image-size", "32",
            "--backbone", "toy-efficientnet", "--batch-size", "8", "--out",
            str(tmp_path / "da"), "--no-progress", "--strategy", "ewc"]  # fmt: skip
    r = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "source-only fine-tunes with ewc" in r.output
    run = tmp_path / "da" / "0" / SOURCE_ONLY
    assert yaml.safe_load((run / "config.yaml").read_text())["strategy"]["name"] == "ewc"
    assert "ewc" in json.loads((run / "metrics.json").read_text())["params"]["strategy"]
    aligned = yaml.safe_load((tmp_path / "da" / "0" / "ft-feature-std" / "config.yaml").read_text())
    assert aligned["backbone"]["name"] == str(run)  # aligned on the ewc model
    doc = json.loads((tmp_path / "da" / "adapt.json").read_text())
    assert doc["summary"]["source_strategy"] == "ewc"
    # another source strategy is other settings: the folder refuses it
    r = runner.invoke(app, [*args[:-1], "lwf"], env={"COLUMNS": "160"})
    assert isinstance(r.exception, RunFolderError)
    assert "strategy.name: 'ewc' -> 'lwf'" in str(r.exception)


def test_a_parameter_efficient_source_only_leaves_out_the_ft_alignments(image_folder, tmp_path):
    from headstart.workflows.adapt import without_realignment

    base = _base(image_folder)
    base.strategy = StrategyConfig(name="lora")
    quiet = Console(quiet=True)
    methods = ["feature-std", "ft-feature-std", "ft-adabn", "dann"]
    assert without_realignment(methods, ["all"], base, quiet) == ["feature-std", "dann"]
    with pytest.raises(ConfigError, match="keeps only its trained tensors"):
        without_realignment(methods, methods, base, quiet)
    base.strategy = StrategyConfig(name="ewc")
    assert without_realignment(methods, methods, base, quiet) == methods


@pytest.mark.parametrize(("name", "message"), [("dann", "--method dann"), ("no-such", "no-such")])
def test_a_source_strategy_that_is_a_method_or_unknown_is_refused(
    image_folder, tmp_path, name, message
):
    target = _shifted(image_folder, tmp_path / "target")
    base = _base(image_folder)
    base.strategy = StrategyConfig(name=name)
    spec = AdaptConfig(target=str(target), methods=["coral"], seeds=1)
    with pytest.raises(ConfigError, match=message):
        run_adapt(base, spec, tmp_path / "da", progress=False, console=Console(quiet=True))
    assert not (tmp_path / "da" / "0").exists()
