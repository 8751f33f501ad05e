"""One resumable grid of run folders, bound to its settings and data.

``compare`` (strategies x label budgets x seeds) and ``adapt`` (methods x seeds) are sweeps,
and so is any later grid of runs (hyperparameter trials, continual tasks, federated
rounds). A sweep is a folder::

    OUT/<settings file>     the settings and the data fingerprint the sweep is bound to
    OUT/<cell folder>/      one folder per cell, written by the cell's ``run``
    OUT/...                 the caller's outputs (a summary, a report)

and a list of :class:`SweepCell`: a unique name, a folder under ``OUT`` and a callable that
runs the cell into its folder and returns the cell's result, a JSON-able dict.

- **Finished cells are reused.** A cell is finished once its folder holds the result
  file (``result.json`` unless the caller names another). The sweep writes the dict
  ``run`` returns there, last and atomically; a ``run`` that writes that file itself
  (``fit`` writes ``metrics.json`` last) keeps its own. A finished cell is never run
  again: its result is read back from the file.
- **Unfinished cells run again.** A cell whose folder exists without the result file was
  stopped (a crash, a kill); ``run`` is called on the same folder and may resume from
  whatever it left there (an epoch checkpoint) or start over. A crash in one cell
  propagates to the caller and leaves every earlier cell finished and reusable.
- **Bound to settings and data.** :meth:`Sweep.bind` writes the settings and the data
  fingerprint into the settings file. A sweep started again in the same folder with other
  settings or other data is refused with the keys that differ; settings named in
  ``may_change`` (a time budget, a device) are recorded but may differ. Cells in the
  folder without a settings file are refused too (they are bound to nothing).
  ``overwrite=True`` deletes the cells, the settings file and the caller's outputs first.
- **A time budget.** ``Sweep.run(budget_s=...)`` starts no new cell once ``budget_s``
  seconds have passed since the sweep started; finished cells are still read back
  (they cost nothing), and every run of a sweep runs at least one cell, so running it
  again always goes on. The cells not started are yielded as ``skipped``.

Example::

    cells = [
        SweepCell(f"lr-{lr}", lambda folder, lr=lr: train(folder, lr=lr))
        for lr in (1e-3, 1e-4)
    ]
    sweep = Sweep.bind("runs/tune", cells, settings={"epochs": 5}, data={"train": fp})
    for outcome in sweep.run(budget_s=3600):
        if outcome.state == SKIPPED:
            print(outcome.name, "not run: time budget")
        else:
            print(outcome.name, outcome.result["accuracy"])
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from headstart.errors import ConfigError, RunFolderError
from headstart.runfolder import check_out_folder, write_json
from headstart.storage import write_yaml

#: the states of a cell in a run of the sweep
REUSED = "reused"  # finished before: its result was read back
RAN = "ran"  # run now (from scratch or going on from what an earlier run left)
SKIPPED = "skipped"  # not started: the time budget was spent

#: the key of the settings file that holds the data fingerprint
DATA_KEY = "dataset"

_UNSET = object()


@dataclass(frozen=True)
class SweepCell:
    """One cell of a sweep: ``run(folder)`` runs it into ``folder`` and returns its result.

    ``folder`` is relative to the sweep's folder (``/``-separated); it defaults to
    ``name``."""

    name: str
    run: Callable[[Path], Mapping[str, Any]]
    folder: str | None = None

    @property
    def path(self) -> str:
        return self.folder if self.folder is not None else self.name


@dataclass(frozen=True)
class CellOutcome:
    """What became of one cell in a run of the sweep; ``result`` is None when skipped."""

    name: str
    folder: Path
    state: str
    result: dict[str, Any] | None


class Sweep:
    """A bound sweep: create it with :meth:`bind`, then iterate :meth:`run`."""

    def __init__(
        self,
        out: Path,
        cells: Sequence[SweepCell],
        *,
        result_file: str,
        settings_file: str,
    ) -> None:
        self.out = out
        self.cells = list(cells)
        self.result_file = result_file
        self.settings_file = settings_file

    @classmethod
    def bind(
        cls,
        out: str | Path,
        cells: Iterable[SweepCell],
        settings: Mapping[str, Any],
        *,
        data: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        settings_file: str = "sweep.yaml",
        result_file: str = "result.json",
        may_change: Iterable[str] = (),
        owned: Iterable[str] = (),
        kind: str = "sweep",
    ) -> Sweep:
        """Bind the folder ``out`` to ``settings`` and ``data``, or refuse it.

        ``settings`` is a nested dict of what the cells' results depend on; ``data`` maps
        a name (``train``, ``target``) to a fingerprint of that data's content. A folder
        already bound to the same settings and data is continued; other settings or data
        are refused (:class:`RunFolderError`, naming the dotted keys that differ) unless
        ``overwrite``, which first deletes the cells' folders, the settings file and the
        ``owned`` paths (the caller's outputs, relative to ``out``). ``may_change``
        lists dotted settings keys that are recorded but may differ between runs.
        ``kind`` names the sweep in messages ("comparison")."""
        out = Path(out)
        check_out_folder(out)
        cells = list(cells)
        _check_cells(cells, settings_file, result_file)
        if DATA_KEY in settings:
            raise ConfigError(
                f"settings without a {DATA_KEY!r} key (the sweep keeps the data fingerprint there)",
                f"settings with {DATA_KEY!r}",
                f"pass the fingerprint as data= instead of settings[{DATA_KEY!r}]",
            )
        owned = [*(c.path for c in cells), *owned]
        doc = _plain({**settings, DATA_KEY: dict(data or {})})
        path = out / settings_file
        if overwrite:
            for name in [settings_file, *owned]:
                _remove(out / name)
        if path.is_file():
            old = _read_settings(path, kind, [c.path for c in cells if (out / c.path).exists()])
            _check_same(out, kind, settings_file, old, doc, set(may_change))
        else:
            present = [name for name in owned if (out / name).exists()]
            if present:
                raise RunFolderError(
                    f"{settings_file} beside the cells in {out}",
                    f"cells without settings ({', '.join(present[:3])}"
                    f"{', ...' if len(present) > 3 else ''})",
                    "pass --overwrite or another --out",
                )
        out.mkdir(parents=True, exist_ok=True)
        write_yaml(path, doc)
        return cls(out, cells, result_file=result_file, settings_file=settings_file)

    def folder(self, cell: SweepCell) -> Path:
        return self.out / cell.path

    def is_finished(self, cell: SweepCell) -> bool:
        return (self.folder(cell) / self.result_file).is_file()

    def run(self, budget_s: float | None = None) -> Iterator[CellOutcome]:
        """Each cell in order: read back if finished, else run, unless ``budget_s`` seconds
        have passed since this run of the sweep started and it has already run a cell
        (then the cell is yielded as skipped). A cell that raises stops the sweep."""
        started = time.perf_counter()
        ran = 0
        for cell in self.cells:
            folder = self.folder(cell)
            result_path = folder / self.result_file
            if result_path.is_file():
                yield CellOutcome(cell.name, folder, REUSED, _read_result(result_path))
                continue
            spent = time.perf_counter() - started
            if budget_s is not None and spent >= budget_s and ran:
                yield CellOutcome(cell.name, folder, SKIPPED, None)
                continue
            folder.mkdir(parents=True, exist_ok=True)
            result = dict(cell.run(folder))
            if not result_path.is_file():  # last: its presence marks the cell finished
                write_json(result_path, result)
            ran += 1
            yield CellOutcome(cell.name, folder, RAN, result)


def _read_settings(path: Path, kind: str, present: list[str]) -> dict[str, Any]:
    """The settings a sweep's folder is bound to, or a clear error for a damaged file
    (never an empty dict, which would read as "other settings")."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        doc = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        doc, reason = None, f"unparsable ({str(e).splitlines()[0]})"
    else:
        reason = "empty" if not text.strip() else f"not a mapping ({type(doc).__name__})"
    if isinstance(doc, dict):
        return doc
    raise RunFolderError(
        f"a readable {path.name}: the settings the {kind}'s cells were run with",
        f"{path} is {reason}, with {len(present)} cell folder(s) beside it",
        f"restore {path.name} from a backup to go on, or pass --overwrite to start the "
        f"{kind} again (deletes its cells)",
    )


def skipped(outcomes: Iterable[CellOutcome]) -> list[str]:
    """The names of the cells a run of the sweep did not start (time budget)."""
    return [o.name for o in outcomes if o.state == SKIPPED]


def _check_cells(cells: list[SweepCell], settings_file: str, result_file: str) -> None:
    for what, values in (("names", [c.name for c in cells]), ("folders", [c.path for c in cells])):
        twice = sorted(v for v, n in Counter(values).items() if n > 1)
        if twice:
            raise ConfigError(
                f"sweep cells with distinct {what}",
                f"{', '.join(map(repr, twice))} more than once",
                f"give every cell its own {what[:-1]}",
            )
    for cell in cells:
        p = PurePosixPath(cell.path)
        if not cell.path or p.is_absolute() or ".." in p.parts or str(p) in (".", settings_file):
            raise ConfigError(
                "a cell folder relative to the sweep's folder, inside it",
                f"{cell.path!r} (cell {cell.name!r})",
                "name a subfolder such as 'seed-0/lp-ft'",
            )
    if "/" in result_file or not result_file:
        raise ConfigError(
            "a result file name (a file in each cell's folder)",
            repr(result_file),
            "pass a plain file name such as 'result.json'",
        )


def _check_same(
    out: Path,
    kind: str,
    settings_file: str,
    old: dict[str, Any],
    new: dict[str, Any],
    may_change: set[str],
) -> None:
    """Refuse ``new`` where it differs from the settings ``old`` the folder is bound to."""
    old_data, new_data = old.pop(DATA_KEY, None) or {}, dict(new[DATA_KEY])
    data_keys = sorted(
        k for k in set(old_data) | set(new_data) if old_data.get(k) != new_data.get(k)
    )
    if data_keys:
        raise RunFolderError(
            f"the same data as the {kind} already in {out}",
            f"other {', '.join(data_keys)} data (its content differs: "
            f"{', '.join(f'{DATA_KEY}.{k}' for k in data_keys)} in {settings_file})",
            "run on the same data to continue it, or pass --overwrite or another --out",
        )
    a = _flatten(old)
    b = _flatten({k: v for k, v in new.items() if k != DATA_KEY})
    differ = [
        f"{key}: {_show(a.get(key, _UNSET))} -> {_show(b.get(key, _UNSET))}"
        for key in sorted(set(a) | set(b))
        if key not in may_change and a.get(key, _UNSET) != b.get(key, _UNSET)
    ]
    if differ:
        raise RunFolderError(
            f"the settings of the {kind} already in {out} ({settings_file})",
            f"different settings: {'; '.join(differ)}",
            "run with the same options to continue it, or pass --overwrite or another --out",
        )


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON types (tuples as lists), as the settings file reads back."""
    try:
        return dict(json.loads(json.dumps(doc)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            "sweep settings and data of plain JSON types (str, number, bool, None, list, dict)",
            str(exc),
            "convert the values first (a dataclass with dataclasses.asdict, a path with str)",
        ) from exc


def _read_result(path: Path) -> dict[str, Any]:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(
            f"a JSON result in {path}",
            f"unreadable JSON ({exc})",
            "delete that cell's folder to run it again, or pass --overwrite",
        ) from exc
    if not isinstance(result, dict):
        raise RunFolderError(
            f"a JSON object as the result in {path}",
            type(result).__name__,
            "delete that cell's folder to run it again, or pass --overwrite",
        )
    return result


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
