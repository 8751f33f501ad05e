"""Malformed inputs: each is a clear error (expected, found, fix) or the right behaviour,
never a traceback, a silent relabelling or a MemoryError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from headstart import PretrainedEmbedder, TransferClassifier, load
from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    FewShotConfig,
    RankConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.data import TextSamples, read_text_table, resolve_texts, scan_image_folder
from headstart.data.loading import check_samples, load_source
from headstart.errors import (
    BackboneError,
    ConfigError,
    DataError,
    RunFolderError,
    UnknownNameError,
)
from headstart.estimator import as_samples
from headstart.workflows.evaluate import run_evaluate
from headstart.workflows.fit import fit
from headstart.workflows.rank import run_rank
from headstart.workflows.sweep import Sweep, SweepCell
from tests.conftest import make_image_folder
from tests.unit.test_text_pipeline import _texts

runner = CliRunner()

LONG_300 = "This blender is great. " * 13  # 299 characters: longer than a file name may be
LONG_5000 = "word " * 1000
NON_ASCII = "Très bon produit, livré à temps. Отличный товар! 很好 " * 6  # > 255 bytes


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A text run (toy BERT) and an image run (toy EfficientNet), fitted once."""
    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        texts, labels = _texts(8)
        pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "t.csv", index=False)
        fit(
            RunConfig(
                data=DataConfig(source=str(root / "t.csv")),
                backbone=BackboneConfig(name="toy-bert"),
                strategy=StrategyConfig(name="linear-probe", head="logistic"),
            ),
            root / "text-run",
            progress=False,
        )
        images = make_image_folder(root / "images", n_per_class=6)
        fit(
            RunConfig(
                data=DataConfig(source=str(images), image_size=32),
                backbone=BackboneConfig(name="toy-efficientnet"),
                strategy=StrategyConfig(name="linear-probe", head="logistic"),
            ),
            root / "image-run",
            progress=False,
        )
    return {"text": root / "text-run", "image": root / "image-run", "images": images}


def _cfg(source: Path | str, backbone: str = "toy-efficientnet", **backbone_kw) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), image_size=32),
        backbone=BackboneConfig(name=backbone, **backbone_kw),
        strategy=StrategyConfig(name="linear-probe", head="logistic"),
        train=TrainConfig(epochs=1, batch_size=8),
    )


def _no_data(*args, **kwargs):
    raise AssertionError("the data was read before the check that needs none")


# ------------------------------------------- 1. a long text is a text, not a bad path


@pytest.mark.parametrize("text", [LONG_300, LONG_5000, NON_ASCII, "a\x00b"])
def test_path_probes_answer_false_for_strings_that_cannot_be_paths(text):
    from headstart import paths

    assert len(text.encode()) > 255 or "\x00" in text
    assert not paths.is_file(text) and not paths.is_dir(text) and not paths.exists(text)


def test_path_probes_still_find_files_and_folders(tmp_path):
    from headstart import paths

    (tmp_path / "f.txt").write_text("x")
    assert paths.is_file(tmp_path / "f.txt") and paths.is_dir(tmp_path)
    assert paths.exists(str(tmp_path / "f.txt")) and not paths.is_file(tmp_path)


def test_long_texts_are_read_as_texts_in_every_container():
    texts = [LONG_300, LONG_5000, NON_ASCII, "short"]
    for X in (texts, tuple(texts), np.asarray(texts, dtype=object), pd.Series(texts)):
        samples = as_samples(X)
        assert isinstance(samples, TextSamples) and samples.texts == texts


def test_estimator_and_embedder_take_long_and_non_ascii_texts():
    texts, labels = _texts(6)
    texts = [t + " " + (LONG_300, LONG_5000, NON_ASCII)[i % 3] for i, t in enumerate(texts)]
    clf = TransferClassifier(backbone="toy-bert", strategy="linear-probe", head="logistic")
    clf.fit(pd.Series(texts), labels)
    assert clf.predict_proba([LONG_5000, NON_ASCII]).shape == (2, 3)
    Z = PretrainedEmbedder(backbone="toy-bert").fit_transform(pd.Series(texts))
    assert Z.shape == (len(texts), 32)


def test_predict_reads_a_long_text_ending_like_a_table_as_a_text(runs):
    rows = load(runs["text"], device="cpu").predict([LONG_300 + " see prices.csv"])
    assert len(rows) == 1 and rows[0]["input"].startswith("This blender")


def test_a_long_string_as_a_data_source_is_a_data_error():
    with pytest.raises(DataError, match="neither"):
        resolve_texts(LONG_300)
    with pytest.raises(DataError, match="bundled dataset name"):
        load_source(LONG_300, DataConfig())


def test_estimator_refuses_missing_labels_with_their_positions():
    texts, labels = _texts(4)
    labels = [None if i in (1, 5) else v for i, v in enumerate(labels)]
    clf = TransferClassifier(backbone="toy-bert", strategy="linear-probe", head="logistic")
    with pytest.raises(DataError, match=r"missing label\(s\).* 1, 5"):
        clf.fit(texts, labels)


# --------------------------------------------- 2. empty or NaN labels in a table file


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_rows_without_a_label_are_a_data_error_naming_file_and_rows(tmp_path, suffix):
    texts, labels = _texts(6)
    missing: list[object] = [None, float("nan")]
    labels = [missing[i % 2] if i in (3, 7) else v for i, v in enumerate(labels)]
    path = _write(pd.DataFrame({"text": texts, "label": labels}), tmp_path / f"d{suffix}")
    cfg = DataConfig(source=str(path))
    with pytest.raises(DataError) as e:
        check_samples(load_source(str(path), cfg), cfg, progress=False)
    msg = str(e.value)
    assert str(path) in msg and "rows 4, 8" in msg and "'label'" in msg
    assert "--skip-bad" in e.value.fix
    kept, report = check_samples(
        load_source(str(path), cfg), DataConfig(source=str(path), skip_bad=True), False
    )
    assert len(kept) == len(texts) - 2 and report.n_skipped == 2
    assert [w for w, _ in report.bad] == [f"{path}:row 4", f"{path}:row 8"]


@pytest.mark.parametrize("nan", ["NaN", "nan", " NAN "])
def test_a_literal_nan_label_is_missing_not_a_class(tmp_path, nan):
    texts, labels = _texts(6)
    labels[2] = nan
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    samples = read_text_table(path)
    assert sorted(samples.classes) == ["negative", "neutral", "positive"]
    assert samples.labels[2] == -1
    with pytest.raises(DataError, match="row 3"):
        check_samples(samples, DataConfig(source=str(path)), progress=False)


def test_fit_on_a_csv_with_empty_labels_is_a_clear_error(tmp_path):
    texts, labels = _texts(6)
    labels[0] = ""
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "d.csv", index=False)
    r = runner.invoke(
        app,
        [
            "fit",
            str(tmp_path / "d.csv"),
            "-b",
            "toy-bert",
            "--out",
            str(tmp_path / "run"),
            "--strategy",
            "linear-probe",
            "--head",
            "logistic",
            "--no-progress",
        ],
    )
    assert isinstance(r.exception, DataError), r.output
    assert "row 1" in str(r.exception) and "d.csv" in str(r.exception)


def test_evaluate_refuses_rows_without_a_label(runs, tmp_path):
    texts, labels = _texts(2)
    labels[1] = ""
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(DataError, match="row 2"):
        run_evaluate(runs["text"], str(tmp_path / "e.csv"), device="cpu")


# ------------------------------------------------ 3. predict: the wrong kind of input


def test_a_text_run_refuses_image_files_and_folders(runs):
    model = load(runs["text"], device="cpu")
    one = next((runs["images"] / "circle").glob("*.png"))
    for inputs in ([str(one)], [str(runs["images"] / "square")], one):
        with pytest.raises(DataError, match="images need a run trained on images"):
            model.predict(inputs)


def test_an_image_run_refuses_a_table_of_texts(runs, tmp_path):
    pd.DataFrame({"text": ["a", "b"]}).to_csv(tmp_path / "t.csv", index=False)
    model = load(runs["image"], device="cpu")
    with pytest.raises(DataError, match="the table of texts"):
        model.predict([str(tmp_path / "t.csv")])
    with pytest.raises(DataError, match="names no file or folder"):
        model.predict([LONG_300])


def test_cli_predict_of_a_text_run_on_images_exits_non_zero(runs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    one = next((runs["images"] / "circle").glob("*.png"))
    cmd = [sys.executable, "-m", "headstart", "predict", str(runs["text"]), str(one)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "images need a run trained on images" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr


# ------------------------------------------------ 4. evaluate: the wrong kind of data


def test_evaluate_of_an_image_run_on_a_table_is_a_clear_error(runs, tmp_path):
    pd.DataFrame(
        {"text": ["round", "box", "lines"], "label": ["circle", "square", "stripes"]}
    ).to_csv(tmp_path / "shapes.csv", index=False)
    with pytest.raises(DataError, match="the run was trained on images"):
        run_evaluate(runs["image"], str(tmp_path / "shapes.csv"), device="cpu")


def test_evaluate_of_a_text_run_on_an_image_folder_is_a_clear_error(runs):
    with pytest.raises(DataError, match="the run was trained on texts"):
        run_evaluate(runs["text"], str(runs["images"]), device="cpu")


# ------------------------------------------------------------ 5. an absurd image size


@pytest.mark.parametrize("size", [100_000, 1025, 8, 15])
def test_an_image_size_out_of_range_is_a_config_error(size):
    with pytest.raises(ConfigError, match="from 16 to 1024"):
        DataConfig(image_size=size)
    with pytest.raises(ConfigError, match="from 16 to 1024"):
        FewShotConfig(image_size=size)


def test_image_sizes_in_range_are_accepted():
    assert DataConfig(image_size=16).image_size == 16
    assert DataConfig(image_size=1024).image_size == 1024
    assert DataConfig().image_size is None


def test_cli_image_size_is_refused_before_the_data_is_read(tmp_path):
    r = runner.invoke(
        app, ["fit", str(tmp_path / "nowhere"), "--image-size", "100000", "--out", str(tmp_path)]
    )
    assert isinstance(r.exception, ConfigError) and "100000" in str(r.exception)


# --------------------------------------------------------- 6. --out naming a file


def test_fit_out_naming_a_file_is_a_run_folder_error(image_folder, tmp_path, monkeypatch):
    (tmp_path / "taken").write_text("not a folder")
    monkeypatch.setattr("headstart.workflows.fit.prepare_data", _no_data)
    for out in (tmp_path / "taken", tmp_path / "taken" / "run"):
        with pytest.raises(RunFolderError, match="is a file"):
            fit(_cfg(image_folder), out, progress=False)


def test_compare_rank_and_sweeps_refuse_an_out_file(image_folder, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        Sweep.bind(taken, [SweepCell("a", lambda folder: {"x": 1})], {"k": 1})
    with pytest.raises(RunFolderError, match="is a file"):
        run_rank(
            DataConfig(source=str(image_folder)),
            RankConfig(backbones=["toy-resnet"]),
            taken,
            progress=False,
        )
    from headstart.workflows.compare import run_compare

    with pytest.raises(RunFolderError, match="is a file"):
        run_compare(_cfg(image_folder), CompareConfig(), taken, progress=False)


# ------------------------------------------- 7. class folders linked into each other


def test_a_class_folder_linked_to_another_class_is_a_data_error(tmp_path):
    root = make_image_folder(tmp_path / "d", n_per_class=3, classes=("dog", "fox"))
    (root / "cat").symlink_to(root / "dog", target_is_directory=True)
    with pytest.raises(DataError) as e:
        scan_image_folder(root)
    assert "cat" in str(e.value) and "dog" in str(e.value)


def test_a_class_folder_linked_inside_another_class_is_a_data_error(tmp_path):
    root = make_image_folder(tmp_path / "d", n_per_class=3, classes=("dog", "fox"))
    make_image_folder(root / "dog" / "puppies", n_per_class=2, classes=("x",))
    (root / "cat").symlink_to(root / "dog" / "puppies", target_is_directory=True)
    with pytest.raises(DataError, match="inside class folder"):
        scan_image_folder(root)


def test_an_image_linked_into_two_classes_is_a_data_error(tmp_path):
    root = make_image_folder(tmp_path / "d", n_per_class=3, classes=("cat", "dog"))
    (root / "cat" / "z.png").symlink_to(root / "dog" / "0.png")
    with pytest.raises(DataError) as e:
        scan_image_folder(root)
    msg = str(e.value)
    assert "cat" in msg and "dog" in msg and "z.png" in msg and "0.png" in msg


def test_links_within_one_class_and_to_files_outside_are_fine(tmp_path):
    root = make_image_folder(tmp_path / "d", n_per_class=3, classes=("cat", "dog"))
    outside = make_image_folder(tmp_path / "elsewhere", n_per_class=1, classes=("x",))
    (root / "cat" / "copy.png").symlink_to(root / "cat" / "0.png")
    (root / "dog" / "out.png").symlink_to(outside / "x" / "0.png")
    samples = scan_image_folder(root)
    assert np.bincount(samples.labels).tolist() == [4, 3]
    assert samples.skipped_links == [root / "dog" / "out.png"]


# ------------------------------------- 8. a mistyped backbone or weights path, early


def test_fit_checks_the_backbone_name_before_reading_data(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("headstart.workflows.fit.prepare_data", _no_data)
    with pytest.raises(UnknownNameError, match="did you mean 'toy-efficientnet'"):
        fit(_cfg(image_folder, "toy-efficientnt"), tmp_path / "run", progress=False)
    with pytest.raises(UnknownNameError, match="toy-efficientnet"):
        fit(_cfg(image_folder, "toy-efficientnt@blocks.1"), tmp_path / "run", progress=False)


def test_fit_checks_a_weights_path_before_reading_data(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("headstart.workflows.fit.prepare_data", _no_data)
    with pytest.raises(BackboneError, match="no file at"):
        fit(
            _cfg(image_folder, weights=str(tmp_path / "nope.safetensors")),
            tmp_path / "run",
            progress=False,
        )
    with pytest.raises(BackboneError, match="is a folder"):
        fit(_cfg(image_folder, weights=str(tmp_path)), tmp_path / "run", progress=False)


def test_compare_and_rank_check_the_backbone_before_reading_data(
    image_folder, tmp_path, monkeypatch
):
    from headstart.workflows.compare import run_compare

    monkeypatch.setattr("headstart.workflows.compare.prepare_data", _no_data)
    monkeypatch.setattr("headstart.workflows.rank.load_source", _no_data)
    with pytest.raises(UnknownNameError):
        run_compare(_cfg(image_folder, "toy-resnt"), CompareConfig(), tmp_path / "c")
    with pytest.raises(UnknownNameError, match="did you mean 'toy-resnet'"):
        run_rank(
            DataConfig(source=str(image_folder)),
            RankConfig(backbones=["toy-resnet", "toy-resnt"]),
            progress=False,
        )


def test_predict_and_evaluate_refuse_an_output_under_a_file(runs, tmp_path):
    from headstart.workflows.predict import run_predict

    (tmp_path / "taken").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        run_predict(runs["text"], ["fine"], output=tmp_path / "taken" / "p.csv", device="cpu")
    with pytest.raises(RunFolderError, match="is a file"):
        run_evaluate(runs["text"], "nowhere.csv", output=tmp_path / "taken" / "e.json")
