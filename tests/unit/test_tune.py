"""`headstart tune` on Optuna with a toy backbone: a study that grows when run again,
pruned trials marked in their run folders, a test split the search never reads, two
workers that share a study (SQLite here, and a real PostgreSQL server started by the
test), and clear errors for a bad space, an unreachable storage and zero workers."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from headstart.cli import app
from headstart.config import (
    BackboneConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    TuneConfig,
)
from headstart.errors import ConfigError
from headstart.workflows import tune as tune_mod
from headstart.workflows.tune import applies, configure, read_space, run_tune

optuna = pytest.importorskip("optuna")
runner = CliRunner()
QUIET = Console(quiet=True)
#: a small space: trials take seconds on the toy backbone
SPACE = {
    "strategy": {"choices": ["finetune", "lp-ft"]},
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "layer_decay": {"low": 0.5, "high": 1.0},
}


@pytest.fixture
def data(tmp_path):
    from tests.conftest import make_image_folder

    return make_image_folder(tmp_path / "images", n_per_class=16)


def _base(folder, epochs: int = 2) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(folder), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="lp-ft"),
        train=TrainConfig(epochs=epochs, batch_size=8, patience=epochs),
    )


def _space(tmp_path, space=SPACE) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def test_conditional_parameters_apply_only_where_they_mean_something():
    assert applies("layer_decay", "finetune", "image")
    assert not applies("layer_decay", "linear-probe", "image")  # trains no body weights
    assert not applies("layer_decay", "lora", "image")  # adapters, not the body's weights
    assert applies("freeze", "freeze", "text") and not applies("freeze", "lp-ft", "text")
    assert not applies("augment", "finetune", "text")
    for loop_only in ("lr", "batch_size", "weight_decay", "drop_rate", "augment", "epochs"):
        assert applies(loop_only, "lp-ft", "image")
        assert not applies(loop_only, "linear-probe", "image")  # a probe: no training loop
    cfg = configure(_base("x"), {"strategy": "freeze", "freeze": 2, "lr": 0.01}, "lp-ft")
    assert cfg.strategy.name == "freeze:2" and cfg.train.lr == 0.01


def test_a_study_run_again_adds_trials_and_best_is_a_loadable_run(data, tmp_path):
    out = tmp_path / "tune"
    spec = TuneConfig(trials=2, space=_space(tmp_path), pruner="none")
    first = run_tune(_base(data), spec, out, progress=False, console=QUIET)
    assert first is not None and len(first.doc["trials"]) == 2
    second = run_tune(_base(data), spec, out, progress=False, console=QUIET)
    assert second is not None
    numbers = [t["number"] for t in second.doc["trials"]]
    assert numbers == [0, 1, 2, 3]  # the same study, two more trials
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0001", "0002", "0003"]
    best = second.doc["best"]
    assert best["validation_macro_f1"] == max(t["value"] for t in second.doc["trials"])
    # best/ is the best trial's run folder, scored once on the test split
    from headstart.runfolder import load

    model = load(out / "best", "cpu")
    assert model.classes == ["circle", "square", "stripes"]
    assert 0.0 <= best["test"]["accuracy"] <= 1.0 and best["test"]["n"] > 0
    doc = json.loads((out / "tune.json").read_text())
    assert doc["best"]["number"] == best["number"]
    page = (out / "report.html").read_text()
    for figure in ("tune-history", "tune-importances", "tune-slices"):
        assert f'data-figure="{figure}"' in page
    # a trial's run folder holds validation figures only: the search never saw the test
    trial = json.loads((out / best["trial_folder"] / "metrics.json").read_text())
    assert "validation" in trial and "test" not in trial


def test_a_trial_repeating_finished_parameters_is_not_trained_again(data, tmp_path):
    """A linear probe reads none of the loop's parameters: every such trial samples the
    same parameters, and only the first trains."""
    space = {"strategy": {"choices": ["linear-probe"]}, "lr": {"low": 1e-4, "high": 1e-2}}
    spec = TuneConfig(trials=3, space=_space(tmp_path, space), pruner="none")
    out = tmp_path / "tune"
    res = run_tune(_base(data), spec, out, progress=False, console=QUIET)
    assert res is not None
    trials = res.doc["trials"]
    assert [t["params"] for t in trials] == [{"strategy": "linear-probe"}] * 3
    assert [t["same_as"] for t in trials] == [None, 0, 0]
    assert len({t["value"] for t in trials}) == 1
    assert [p.name for p in (out / "trials").iterdir()] == ["0000"]  # trained once
    assert res.doc["best"]["number"] == 0 and (out / "best" / "model.safetensors").is_file()


def test_a_pruned_trial_leaves_a_run_folder_marked_pruned(data, tmp_path, monkeypatch):
    # the pruner's verdict is forced for trial 1, after its first epoch
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)
    out = tmp_path / "tune"
    spec = TuneConfig(trials=3, space=_space(tmp_path), pruner="median")
    res = run_tune(_base(data, epochs=3), spec, out, progress=False, console=QUIET)
    assert res is not None
    states = {t["number"]: t["state"] for t in res.doc["trials"]}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE"}
    pruned = out / "trials" / "0001"
    mark = json.loads((pruned / "pruned.json").read_text())
    assert mark["epochs"] == 1 and "pruned after epoch 0" in mark["why"]
    assert not (pruned / "metrics.json").exists() and not (pruned / "checkpoint").exists()
    assert res.doc["counts"]["PRUNED"] == 1
    assert res.doc["epochs_trained"] == 3 + 1 + 3


def test_the_test_split_is_never_read_during_the_search(data, tmp_path, monkeypatch):
    real_prepare = tune_mod.prepare_data
    searching = {"on": True}

    class Tripwire:
        """The test split: any use during the search fails the test."""

        def __init__(self, samples):
            self._samples = samples

        def __getattr__(self, name):
            if searching["on"]:
                raise AssertionError(f"the test split was read during the search ({name})")
            return getattr(self._samples, name)

        def __len__(self):
            if searching["on"]:
                raise AssertionError("the test split was read during the search (len)")
            return len(self._samples)

    def prepare(*args, **kwargs):
        data = real_prepare(*args, **kwargs)
        return type(data)(data.train, data.val, Tripwire(data.test))

    real_score = tune_mod.score_on_test

    def score(run, test):
        searching["on"] = False
        return real_score(run, test._samples)

    monkeypatch.setattr(tune_mod, "prepare_data", prepare)
    monkeypatch.setattr(tune_mod, "score_on_test", score)
    spec = TuneConfig(trials=2, space=_space(tmp_path), pruner="none")
    res = run_tune(_base(data), spec, tmp_path / "tune", progress=False, console=QUIET)
    assert res is not None and not searching["on"]  # read once, after the search
    assert res.doc["best"]["test"]["n"] > 0


def test_two_local_workers_share_the_study_without_repeating_a_trial(data, tmp_path):
    out = tmp_path / "tune"
    spec = TuneConfig(trials=4, space=_space(tmp_path), pruner="none", workers=2)
    res = run_tune(_base(data), spec, out, progress=False, console=QUIET)
    assert res is not None
    numbers = [t["number"] for t in res.doc["trials"] if t["state"] == "COMPLETE"]
    assert len(numbers) >= 4 and len(set(numbers)) == len(numbers)
    log = (out / "workers" / "worker-1.log").read_text()
    assert "Traceback" not in log
    folders = sorted(p.name for p in (out / "trials").iterdir())
    assert folders == [f"{n:04d}" for n in sorted(numbers)]


def test_bad_inputs_are_clear_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="search-space parameters among"):
        read_space(_space(tmp_path, {"momentum": {"low": 0.1, "high": 0.9}}))
    with pytest.raises(ConfigError, match="low < high"):
        read_space(_space(tmp_path, {"lr": {"low": 0.1, "high": 0.01}}))
    with pytest.raises(ConfigError, match="workers > 0"):
        TuneConfig(workers=0)
    r = runner.invoke(app, ["tune", str(data), "--workers", "0", "--out", str(tmp_path / "w")])
    assert r.exit_code != 0 and "workers > 0" in (r.output + str(r.exception))
    spec = TuneConfig(trials=1, storage="postgresql://nobody@127.0.0.1:1/none")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="a reachable Optuna storage"):
        run_tune(_base(data), spec, tmp_path / "pg", progress=False, console=QUIET)
    assert time.perf_counter() - t0 < 60


# -- a real PostgreSQL server ------------------------------------------------------------------
def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres(tmp_path):
    """A PostgreSQL server of its own on a free loopback port, stopped at the end (run as
    the postgres user when the tests run as root, which PostgreSQL refuses)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    root = Path(f"/tmp/headstart-pg-{os.getpid()}-{_free_port()}")
    root.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"

    def pg(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "tuner", "--auth=trust", "-E", "UTF8")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
       f"-h 127.0.0.1 -p {port} -k {root}", "start")  # fmt: skip
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tuner", "study")
        yield f"postgresql://tuner@127.0.0.1:{port}/study"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_worker_processes_share_one_postgresql_study(data, tmp_path, postgres):
    space = _space(tmp_path)
    procs = []
    for i in range(2):
        out = tmp_path / f"machine-{i}"  # two machines: each its own folder, one study
        cmd = [sys.executable, "-m", "headstart", "tune", str(data), "--backbone",
               "toy-efficientnet", "--image-size", "32", "--epochs", "2", "--trials", "3",
               "--space", space, "--pruner", "none",
               "--storage", postgres, "--study-name", "shared", "--out", str(out),
               "--no-progress"]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))  # fmt: skip
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    study = optuna.load_study(study_name="shared", storage=postgres)
    numbers = [t.number for t in study.trials]
    # both run until the study holds 3 trials (one more may start as the other finishes)
    assert len(numbers) >= 3 and len(set(numbers)) == len(numbers)  # never the same trial
    mine = [
        {int(p.name) for p in (tmp_path / f"machine-{i}" / "trials").iterdir()} for i in range(2)
    ]
    assert mine[0] and mine[1]  # both did work
    assert not (mine[0] & mine[1])  # each trial trained by one worker
    assert mine[0] | mine[1] == set(numbers)
    for i in range(2):  # each keeps its own best, scored on its test split
        doc = json.loads((tmp_path / f"machine-{i}" / "tune.json").read_text())
        assert doc["best"]["number"] in mine[i] and doc["study"] == "shared"
