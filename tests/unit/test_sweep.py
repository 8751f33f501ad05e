"""The shared sweep on fake cells (no models): resuming, settings and data binding, the
time budget, and a crash in one cell."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from headstart.errors import ConfigError, RunFolderError
from headstart.workflows.sweep import RAN, REUSED, SKIPPED, Sweep, SweepCell, skipped


class Grid:
    """Cells that write a file and return their value; counts how often each ran."""

    def __init__(self, names: list[str], fail: str | None = None, sleep: float = 0.0) -> None:
        self.names, self.fail, self.sleep = names, fail, sleep
        self.calls: Counter[str] = Counter()

    def cells(self) -> list[SweepCell]:
        return [SweepCell(n, lambda folder, n=n: self.run(n, folder)) for n in self.names]

    def run(self, name: str, folder: Path) -> dict[str, Any]:
        self.calls[name] += 1
        (folder / "partial.txt").write_text("started")
        if name == self.fail:
            raise RuntimeError(f"cell {name} crashed")
        time.sleep(self.sleep)
        return {"name": name, "value": len(name)}


SETTINGS = {"train": {"epochs": 2, "lr": 0.1}, "grid": ["a", "bb"]}
FP = {"train": "f1"}


def test_a_sweep_runs_every_cell_once_and_reuses_them_when_run_again(tmp_path):
    grid = Grid(["a", "bb", "ccc"])
    first = list(Sweep.bind(tmp_path, grid.cells(), SETTINGS, data=FP).run())
    assert [o.state for o in first] == [RAN] * 3
    assert [o.result for o in first] == [{"name": n, "value": len(n)} for n in grid.names]
    assert json.loads((tmp_path / "bb" / "result.json").read_text()) == {"name": "bb", "value": 2}
    assert (tmp_path / "sweep.yaml").is_file()

    again = list(Sweep.bind(tmp_path, grid.cells(), SETTINGS, data=FP).run())
    assert [o.state for o in again] == [REUSED] * 3
    assert [o.result for o in again] == [o.result for o in first]
    assert grid.calls == Counter({"a": 1, "bb": 1, "ccc": 1})  # never run again
    # a grown grid runs only its new cell
    grown = Grid(["a", "bb", "ccc", "dddd"])
    states = [o.state for o in Sweep.bind(tmp_path, grown.cells(), SETTINGS, data=FP).run()]
    assert states == [REUSED] * 3 + [RAN] and grown.calls == Counter({"dddd": 1})


def test_other_settings_or_data_are_refused_and_overwrite_runs_again(tmp_path):
    grid = Grid(["a", "bb"])
    list(Sweep.bind(tmp_path, grid.cells(), SETTINGS, data=FP).run())
    other = {**SETTINGS, "train": {"epochs": 3, "lr": 0.1}}
    with pytest.raises(RunFolderError, match=r"train\.epochs: 2 -> 3") as err:
        Sweep.bind(tmp_path, grid.cells(), other, data={"train": "f1"})
    assert "--overwrite" in err.value.fix and "train.lr" not in str(err.value)
    with pytest.raises(RunFolderError, match=r"other train data .*dataset\.train"):
        Sweep.bind(tmp_path, grid.cells(), SETTINGS, data={"train": "f2"})
    added = {**SETTINGS, "train": {**SETTINGS["train"], "momentum": 0.9}}
    with pytest.raises(RunFolderError, match=r"train\.momentum: \(unset\) -> 0\.9"):
        Sweep.bind(tmp_path, grid.cells(), added, data={"train": "f1"})
    # a setting that may change is recorded, not compared
    Sweep.bind(tmp_path, grid.cells(), other, data={"train": "f1"}, may_change=["train.epochs"])
    assert "epochs: 3" in (tmp_path / "sweep.yaml").read_text()
    # overwrite deletes the cells (and the caller's outputs) and runs them again
    (tmp_path / "summary.json").write_text("{}")
    sweep = Sweep.bind(tmp_path, grid.cells(), other, overwrite=True, owned=["summary.json"])
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "a").exists()
    assert [o.state for o in sweep.run()] == [RAN, RAN]
    assert grid.calls == Counter({"a": 2, "bb": 2})


def test_cells_without_settings_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(RunFolderError, match=r"cells without settings \(a\)"):
        Sweep.bind(tmp_path, Grid(["a"]).cells(), SETTINGS)
    assert not (tmp_path / "sweep.yaml").exists()


def test_the_time_budget_stops_starting_cells_and_a_rerun_goes_on(tmp_path):
    grid = Grid(["a", "bb", "ccc"], sleep=0.05)
    first = list(Sweep.bind(tmp_path, grid.cells(), SETTINGS).run(budget_s=0.01))
    # the budget is checked before each cell: at least one runs, so a rerun always goes on
    assert [o.state for o in first] == [RAN, SKIPPED, SKIPPED]
    assert skipped(first) == ["bb", "ccc"] and first[1].result is None
    assert not (tmp_path / "bb").exists()
    second = list(Sweep.bind(tmp_path, grid.cells(), SETTINGS).run(budget_s=0.01))
    assert [o.state for o in second] == [REUSED, RAN, SKIPPED]  # finished cells cost nothing
    third = list(Sweep.bind(tmp_path, grid.cells(), SETTINGS).run())
    assert [o.state for o in third] == [REUSED, REUSED, RAN] and not skipped(third)
    assert grid.calls == Counter({"a": 1, "bb": 1, "ccc": 1})
    generous = list(Sweep.bind(tmp_path / "big", grid.cells(), SETTINGS).run(budget_s=60))
    assert [o.state for o in generous] == [RAN] * 3


def test_a_crash_in_one_cell_leaves_the_earlier_cells_reusable(tmp_path):
    crashing = Grid(["a", "bb", "ccc"], fail="bb")
    with pytest.raises(RuntimeError, match="cell bb crashed"):
        list(Sweep.bind(tmp_path, crashing.cells(), SETTINGS).run())
    assert (tmp_path / "bb" / "partial.txt").is_file()  # started, not finished
    assert not (tmp_path / "bb" / "result.json").exists()
    fixed = Grid(["a", "bb", "ccc"])
    outcomes = list(Sweep.bind(tmp_path, fixed.cells(), SETTINGS).run())
    assert [o.state for o in outcomes] == [REUSED, RAN, RAN]
    assert fixed.calls == Counter({"bb": 1, "ccc": 1})  # the unfinished cell ran again


def test_a_cell_that_writes_its_own_result_file_keeps_it(tmp_path):
    def run(folder: Path) -> dict[str, Any]:
        (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "own": True}))
        return {"accuracy": 0.5}

    cells = [SweepCell("seed 0", run, folder="seed-0/probe")]
    (ran,) = Sweep.bind(tmp_path, cells, {}, result_file="metrics.json").run()
    assert ran.result == {"accuracy": 0.5} and ran.folder == tmp_path / "seed-0" / "probe"
    (again,) = Sweep.bind(tmp_path, cells, {}, result_file="metrics.json").run()
    assert again.state == REUSED and again.result == {"accuracy": 0.5, "own": True}


def test_bad_cells_and_settings_are_refused_before_any_work(tmp_path):
    def noop(folder: Path) -> dict[str, Any]:
        return {}

    with pytest.raises(ConfigError, match="distinct names"):
        Sweep.bind(tmp_path, [SweepCell("a", noop), SweepCell("a", noop, folder="b")], {})
    with pytest.raises(ConfigError, match="distinct folders"):
        Sweep.bind(tmp_path, [SweepCell("a", noop, "x"), SweepCell("b", noop, "x")], {})
    with pytest.raises(ConfigError, match="inside it"):
        Sweep.bind(tmp_path, [SweepCell("a", noop, folder="../elsewhere")], {})
    with pytest.raises(ConfigError, match="data="):
        Sweep.bind(tmp_path, [], {"dataset": {"train": "f"}})
    with pytest.raises(ConfigError, match="plain JSON types"):
        Sweep.bind(tmp_path, [], {"out": tmp_path})
    assert not any(tmp_path.iterdir())
