"""Lean run folders: no training checkpoint once a run is finished (unless kept), a finished
run is not resumed, comparison cells keep only what their reports need, and files are
written with the user's umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from headstart import load
from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.errors import ConfigError, RunFolderError
from headstart.evaluation import read_predictions
from headstart.workflows.compare import cell_dir, kept_cells, run_compare
from headstart.workflows.fit import fit

runner = CliRunner()


def _cfg(folder: Path, keep: bool = False, strategy: str = "finetune") -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.3),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name=strategy, head="logistic"),
        train=TrainConfig(epochs=2, patience=2, batch_size=16, keep_checkpoint=keep),
    )


@pytest.fixture
def folder(tmp_path):
    from tests.conftest import make_image_folder

    return make_image_folder(tmp_path / "images", n_per_class=12)


def test_a_finished_run_has_no_checkpoint_unless_kept(folder, tmp_path):
    fit(_cfg(folder), tmp_path / "lean", progress=False)
    assert not (tmp_path / "lean" / "checkpoint").exists()
    assert (tmp_path / "lean" / "model.safetensors").is_file()
    fit(_cfg(folder, keep=True), tmp_path / "kept", progress=False)
    assert (tmp_path / "kept" / "checkpoint" / "last.safetensors").is_file()
    # the lean run predicts exactly as the kept one (same seed, same data)
    files = sorted((folder / "circle").glob("*.png"))[:4]
    lean, kept = load(tmp_path / "lean", "cpu"), load(tmp_path / "kept", "cpu")
    assert (lean.predict_proba(files) == kept.predict_proba(files)).all()


def test_resume_of_a_finished_run_says_it_is_finished(folder, tmp_path):
    out = tmp_path / "run"
    first = fit(_cfg(folder, keep=True), out, progress=False)  # even with its checkpoint kept
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    console = Console(record=True, width=200)
    again = fit(_cfg(folder), out, resume=True, progress=False, console=console)
    assert "is finished, nothing is left to train" in console.export_text()
    assert again.metrics == first.metrics and len(again.history) == 2
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # nothing retrained or rewritten
    r = runner.invoke(app, ["fit", str(folder), "--out", str(out), "--resume", "--no-progress"])
    assert r.exit_code == 0 and "is finished" in r.output


def test_cli_keep_checkpoint(folder, tmp_path):
    out = tmp_path / "run"
    args = ["fit", str(folder), "--out", str(out), "--backbone", "toy-efficientnet",
            "--image-size", "32", "--epochs", "1", "--strategy", "finetune",
            "--no-progress"]  # fmt: skip
    assert runner.invoke(app, [*args, "--keep-checkpoint"]).exit_code == 0
    assert (out / "checkpoint").is_dir()
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert not (out / "checkpoint").exists()


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_run_files_follow_the_umask(folder, tmp_path, mask):
    old = os.umask(mask)
    try:
        fit(_cfg(folder, strategy="linear-probe"), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o666 & ~mask}, modes


def _compare(folder: Path, out: Path, keep: str):
    spec = CompareConfig(
        strategies=["scratch", "linear-probe"], budgets=[3, 6], seeds=2, keep_models=keep
    )
    return run_compare(_cfg(folder), spec, out, progress=False)


def test_compare_keeps_only_the_best_models_and_every_report_input(folder, tmp_path):
    out = tmp_path / "cmp"
    result = _compare(folder, out, "best")
    kept = kept_cells(result.cells, "best")
    # best: every seed of the most accurate strategy, at each budget
    assert len(kept) == 2 * 2 and len({(s, b) for s, b, _ in kept}) == 2
    for c in result.cells:
        run = cell_dir(out, c.strategy, c.budget, c.seed)
        assert (run / "metrics.json").is_file() and (run / "history.jsonl").is_file()
        assert read_predictions(run)["split"] == "test"  # what the report reads
        assert not (run / "checkpoint").exists()
        if (c.strategy, c.budget, c.seed) in kept:
            assert load(run, "cpu").classes == ["circle", "square", "stripes"]
            assert (run / "model.safetensors").is_file()
        else:
            assert not (run / "model.safetensors").exists()
            with pytest.raises(RunFolderError, match="model was removed") as e:
                load(run, "cpu")
            assert "--keep-models all" in e.value.fix
    # the comparison run again reuses every cell and its figures are unchanged
    doc = json.loads((out / "comparison.json").read_text())
    again = _compare(folder, out, "best")
    assert json.loads((out / "comparison.json").read_text())["budgets"] == doc["budgets"]
    assert [c.accuracy for c in again.cells] == [c.accuracy for c in result.cells]


def test_keep_models_all_and_none(folder, tmp_path):
    for keep, expected in (("all", 8), ("none", 0)):
        out = tmp_path / keep
        _compare(folder, out, keep)
        assert len(list(out.rglob("model.safetensors"))) == expected
        assert len(list(out.rglob("metrics.json"))) == 8


def test_keep_models_rejects_other_values():
    with pytest.raises(ConfigError, match="keep_models"):
        CompareConfig(keep_models="some")
