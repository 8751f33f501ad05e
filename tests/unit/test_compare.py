"""`headstart compare`: cells, resuming a killed comparison, the time budget, settings,
and the forgetting check of the source task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headstart.backbones import create_backbone
from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.data.loading import prepare_data
from headstart.errors import RunFolderError
from headstart.evaluation import read_predictions
from headstart.evaluation.stats import HELPS, NEGATIVE, NO_DIFFERENCE
from headstart.workflows.compare import budget_splits, cell_dir, run_compare

ARGS = [
    "--backbone", "toy-efficientnet", "--image-size", "32", "--epochs", "2",
    "--batch-size", "16", "--no-progress",
]  # fmt: skip


def _base(folder: Path) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(folder), image_size=32, test_fraction=0.3),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(head="logistic"),
        train=TrainConfig(epochs=2, patience=2, batch_size=16),
    )


@pytest.fixture
def folder(tmp_path):
    from tests.conftest import make_image_folder

    return make_image_folder(tmp_path / "images", n_per_class=20)


def test_compare_trains_every_cell_on_one_test_set(folder, tmp_path):
    spec = CompareConfig(strategies=["scratch", "linear-probe", "lp-ft"], budgets=[3, 6], seeds=2)
    out = tmp_path / "cmp"
    result = run_compare(_base(folder), spec, out, progress=False)
    assert len(result.cells) == 3 * 2 * 2 and not result.not_run
    labels = {read_predictions(cell_dir(out, c.strategy, c.budget, c.seed))["labels"].tobytes()
              for c in result.cells}  # fmt: skip
    assert len(labels) == 1  # every cell scored on the very same test examples
    # the budget is honoured: 3 and 6 labelled images per class
    for budget in (3, 6):
        run = cell_dir(out, "lp-ft", budget, 0)
        assert json.loads((run / "metrics.json").read_text())["params"]
        cfg = (run / "config.yaml").read_text()
        assert f"per_class: {budget}" in cfg
    doc = json.loads((out / "comparison.json").read_text())
    assert set(doc["budgets"]) == {"3", "6"}
    entry = doc["budgets"]["6"]
    assert set(entry["strategies"]) == {"scratch", "linear-probe", "lp-ft"}
    assert entry["verdict"]["verdict"] in (HELPS, NO_DIFFERENCE, NEGATIVE)
    gain = entry["gain_over_baseline"]["lp-ft"]
    assert gain["seeds"] == [0, 1] and 0.0 <= gain["mcnemar_max_p"] <= 1.0
    assert len(gain["mcnemar_per_seed"]) == 2
    assert (out / "report.html").is_file() and (out / "comparison.csv").is_file()
    # seeds draw different labelled examples; validation shrinks with the budget
    from rich.console import Console

    data = prepare_data(_base(folder).data, Console(quiet=True), progress=False, small_data=False)
    s0, s1 = (budget_splits(data, 3, seed, _base(folder)) for seed in (0, 1))
    assert len(s0.train) == len(s1.train) == 3 * 3
    assert s0.train.arrays is None and s0.train.paths != s1.train.paths
    assert s0.test is s1.test is data.test and len(data.val) > 0
    # 3 per class would give a validation split of 1 per class: none is drawn (noise)
    assert len(s0.val) == 0 and "none" in s0.policy["validation"]


def test_a_killed_compare_run_again_skips_finished_cells(folder, tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "headstart", "compare", str(folder), "--out", str(out),
           "--strategies", "scratch,finetune", "--budgets", "4,8", "--seeds", "2",
           "--test-fraction", "0.3", *ARGS]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    first = cell_dir(out, "scratch", 4, 0) / "metrics.json"
    while not first.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first.is_file(), proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)  # killed with no chance to clean up
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("cells/**/metrics.json")}
    assert 1 <= len(finished) < 8
    assert not (out / "comparison.json").exists()

    res = CliRunner().invoke(app, cmd[3:], env={**os.environ, "COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert res.output.count("already finished") == len(finished)
    for p, mtime in finished.items():  # never trained again
        assert p.stat().st_mtime_ns == mtime
    doc = json.loads((out / "comparison.json").read_text())
    assert len(doc["cells"]) == 8 and doc["not_run"] == []


def test_time_budget_stops_starting_cells_and_a_rerun_goes_on(folder, tmp_path):
    spec = CompareConfig(strategies=["scratch", "linear-probe"], budgets=[4], seeds=2,
                         time_budget=1e-9)  # fmt: skip
    out = tmp_path / "cmp"
    first = run_compare(_base(folder), spec, out, progress=False)
    # the budget is checked before each cell: the first starts, the rest wait
    assert len(first.cells) == 1 and len(first.not_run) == 3
    assert json.loads((out / "comparison.json").read_text())["not_run"] == first.not_run
    spec.time_budget = None  # the time budget may change between runs
    second = run_compare(_base(folder), spec, out, progress=False)
    assert len(second.cells) == 4 and not second.not_run


def test_other_settings_in_the_same_folder_are_refused(folder, tmp_path):
    out = tmp_path / "cmp"
    spec = CompareConfig(strategies=["linear-probe"], budgets=[4], seeds=1)
    run_compare(_base(folder), spec, out, progress=False)
    other = CompareConfig(strategies=["linear-probe"], budgets=[5], seeds=1)
    with pytest.raises(RunFolderError, match=r"compare\.budgets"):
        run_compare(_base(folder), other, out, progress=False)
    assert len(run_compare(_base(folder), other, out, overwrite=True, progress=False).cells) == 1


def test_cli_compare_rejects_bad_lists(folder, tmp_path):
    def run(*extra):
        cmd = [sys.executable, "-m", "headstart", "compare", str(folder), *extra, *ARGS,
               "--out", str(tmp_path / "x")]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    r = run("--budgets", "10,x")
    assert r.returncode == 2 and "comma-separated list of ints" in r.stderr
    r = run("--strategies", "scratch,lp-fft")
    assert r.returncode == 2 and "did you mean 'lp-ft'" in r.stderr
    assert not (tmp_path / "x").exists()  # refused before any work


# -- forgetting of the source task ------------------------------------------------------------
def _fit(folder: Path, tmp_path: Path, strategy: str, **train):
    from headstart.workflows.fit import fit

    cfg = RunConfig(
        data=DataConfig(source=str(folder), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name=strategy, head="logistic", backbone_lr_scale=1.0),
        train=TrainConfig(epochs=3, patience=3, batch_size=8, **train),
    )
    return fit(cfg, tmp_path / strategy, progress=False).metrics["forgetting"]


def test_forgetting_check(folder, tmp_path):
    probe = _fit(folder, tmp_path, "linear-probe")
    assert probe["applicable"] and probe["top1_agreement"] == 1.0  # the backbone is frozen
    tuned = _fit(folder, tmp_path, "finetune", lr=0.05)
    assert tuned["applicable"] and tuned["source_classes"] == 1000
    assert tuned["top1_agreement"] < 1.0  # a hard fine-tune moved the source predictions
    scratch = _fit(folder, tmp_path, "scratch")
    assert not scratch["applicable"] and "source head" in scratch["reason"]


@pytest.mark.parametrize(
    "name", ["toy-efficientnet", "toy-resnet", "toy-vit", "toy-bert", "toy-vectors"]
)
def test_head_on_embeddings_equals_forward(name):
    """Evaluation computes logits as the head applied to the pooled embeddings (one pass
    gives both): this must equal the backbone's own forward in eval mode."""
    bb = create_backbone(BackboneConfig(name=name, drop_rate=0.3), 4, 32).eval()
    if bb.spec.modality == "text":
        from headstart.data import from_texts

        ds = bb.make_dataset(from_texts(["a short one", "and a somewhat longer text here"]))
        x = bb.collate_fn()([ds[0], ds[1]])[0]
    else:
        x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        w, b = bb.head_weights()
        assert np.allclose(
            torch.nn.functional.linear(bb.embed(x), w, b).numpy(), bb(x).numpy(), atol=1e-5
        )


def test_a_budget_above_the_smallest_class_is_refused_before_any_work(folder, tmp_path):
    from headstart.errors import ConfigError

    out = tmp_path / "cmp"
    spec = CompareConfig(strategies=["linear-probe"], budgets=[4, 500], seeds=1)
    with pytest.raises(ConfigError, match=r"at most \d+ per class.*500"):
        run_compare(_base(folder), spec, out, progress=False)
    assert not (out / "compare.yaml").exists()  # a corrected run is not refused later


def test_changed_data_under_a_comparison_is_refused(folder, tmp_path):
    out = tmp_path / "cmp"
    spec = CompareConfig(strategies=["linear-probe"], budgets=[4], seeds=1)
    run_compare(_base(folder), spec, out, progress=False)
    from PIL import Image

    for i in range(3):  # new images: other splits, other test set
        Image.new("RGB", (24, 24), (i * 80, 0, 0)).save(folder / "circle" / f"new{i}.png")
    with pytest.raises(RunFolderError, match=r"dataset\."):
        run_compare(_base(folder), spec, out, progress=False)


def test_a_cell_config_reproduces_its_labelled_examples(folder):
    from rich.console import Console

    from headstart.workflows.compare import cell_config

    quiet = Console(quiet=True)
    base = _base(folder)
    data = prepare_data(base.data, quiet, progress=False)
    for seed in (0, 3):
        drawn = budget_splits(data, 4, seed, base)
        again = prepare_data(cell_config(base, "lp-ft", 4, seed).data, quiet, progress=False)
        assert again.train.paths == drawn.train.paths
        assert again.val.paths == drawn.val.paths and again.test.paths == drawn.test.paths
