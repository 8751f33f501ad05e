"""Atomic writes, folder locks, strict resume, a full disk: nothing lost, nothing silently
wrong. The crash tests with real kills are in test_fault_injection.py."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml

from headstart import storage
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.errors import DiskFullError, RunFolderError
from headstart.workflows.fit import fit


def _cfg(source: Path, epochs: int = 2, **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="finetune"),
        train=TrainConfig(epochs=epochs, batch_size=8, **train),
    )


def _hold_lock(folder: Path) -> subprocess.Popen[str]:
    """Another process holding the lock of ``folder`` until its stdin closes."""
    code = textwrap.dedent(
        f"""
        import sys
        from headstart.storage import folder_lock
        with folder_lock({str(folder)!r}):
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


# --- the atomic writer ---------------------------------------------------------------


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    storage.write_json(path, {"x": 1})
    storage.write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_a_full_disk_is_a_clear_error_and_the_old_file_survives(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    storage.atomic_write(path, "old: 1\n")
    monkeypatch.setenv("HEADSTART_FAULT", "enospc:config.yaml")
    with pytest.raises(DiskFullError) as e:
        storage.atomic_write(path, "new: 2\n" * 1000)
    assert str(tmp_path) in e.value.expected and "6.8 KB" in e.value.expected
    assert "free" in e.value.found and "another --out" in e.value.fix
    assert path.read_text() == "old: 1\n"  # never torn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temp left


def test_a_write_killed_before_the_rename_keeps_the_old_file_and_its_temp_is_cleaned(tmp_path):
    path = tmp_path / "metrics.json"
    storage.write_json(path, {"v": "old"})
    code = f"from headstart import storage; storage.write_json({str(path)!r}, {{'v': 'new'}})"
    env = {**os.environ, "HEADSTART_FAULT": "kill:metrics.json"}
    r = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert r.returncode == -9  # killed between the temp file and the rename
    assert json.loads(path.read_text()) == {"v": "old"}
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith(".metrics.json.")
    mine = storage.temp_path(tmp_path / "other.json")  # a live process's temp stays
    mine.write_text("in progress")
    assert storage.clean_temp_files(tmp_path) == temps
    assert mine.exists() and not temps[0].exists()


def test_appended_lines_survive_a_torn_last_line(tmp_path):
    from headstart.evaluation.report import read_history

    path = tmp_path / "history.jsonl"
    storage.append_line(path, '{"epoch": 0}')
    with path.open("a") as f:
        f.write('{"epoch": 1, "lo')  # a kill mid-line
    storage.append_line(path, '{"epoch": 1}')
    assert [r["epoch"] for r in read_history(path)] == [0, 1]


# --- the lock ------------------------------------------------------------------------


def test_a_second_command_on_a_locked_folder_is_refused_naming_the_holder(image_folder, tmp_path):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        with pytest.raises(RunFolderError) as e:
            fit(_cfg(image_folder), out, progress=False)
        assert f"process {holder.pid}" in e.value.found
        assert "wait for that command" in e.value.fix
        assert not (out / "config.yaml").exists()  # nothing was written
    finally:
        holder.communicate("")
    fit(_cfg(image_folder, epochs=1), out, progress=False)  # released: the folder is free


def test_the_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    holder.kill()
    holder.wait()
    heard: list[str] = []
    # the same process may take it again (a workflow inside another)
    with storage.folder_lock(out, say=heard.append), storage.folder_lock(out):
        pass
    assert len(heard) == 1 and f"process {holder.pid}" in heard[0]
    assert "no longer running" in heard[0]
    with storage.folder_lock(out, say=heard.append):  # released cleanly: nothing to say
        pass
    assert len(heard) == 1


def test_a_command_that_fails_early_leaves_no_folder(tmp_path, image_folder):
    out = tmp_path / "never"
    with pytest.raises(RunFolderError):
        fit(_cfg(image_folder), out, resume=True, progress=False)
    assert not out.exists()


def test_out_naming_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(RunFolderError, match="is a file"), storage.folder_lock(f):
        pass


# --- resume --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, found",
    [("", "empty"), ("data: [unclosed\n", "readable"), ("{}\n", "without them")],
)
def test_resume_refuses_an_unreadable_config_instead_of_defaults(
    image_folder, tmp_path, monkeypatch, content, found
):
    out = tmp_path / "run"
    fit(_cfg(image_folder, epochs=1), out, progress=False)
    (out / "config.yaml").write_text(content)
    before = (out / "model.safetensors").read_bytes()
    monkeypatch.chdir(image_folder / "circle")  # the default source, "", would be here
    with pytest.raises(RunFolderError) as e:
        fit(_cfg(image_folder, epochs=1), out, resume=True, progress=False)
    assert found in str(e.value) and "--overwrite" in e.value.fix
    assert (out / "model.safetensors").read_bytes() == before
    assert (out / "config.yaml").read_text() == content  # nothing rewritten


def test_resume_with_other_settings_names_each_difference(image_folder, tmp_path):
    out = tmp_path / "run"
    fit(_cfg(image_folder, epochs=1), out, progress=False)
    other = _cfg(image_folder.parent, epochs=3)
    with pytest.raises(RunFolderError) as e:
        fit(other, out, resume=True, progress=False)
    assert "2 different" in e.value.found
    assert "train.epochs: the run has 1, given 3" in e.value.found
    assert "data.source" in e.value.found
    # where it runs may change; values that ask headstart to choose match what it chose
    same = _cfg(image_folder, epochs=1, device="cpu", num_workers=1)
    same = dataclasses.replace(same, data=DataConfig(source=str(image_folder)))
    fit(same, out, resume=True, progress=False)


def test_cli_resume_compares_the_options_given(image_folder, tmp_path):
    from typer.testing import CliRunner

    from headstart.cli import app

    out = tmp_path / "run"
    args = ["fit", str(image_folder), "--backbone", "toy-efficientnet", "--strategy"]
    args += ["finetune", "--epochs", "1", "--out", str(out), "--no-progress"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, [*args, "--resume", "--lr", "0.5"])
    assert r.exit_code != 0 and "train.lr" in str(r.exception)
    r = runner.invoke(app, ["fit", str(tmp_path), "--out", str(out), "--resume"])
    assert r.exit_code != 0 and "data.source" in str(r.exception)
    # options left out keep the run's values (not the defaults): accepted
    r = runner.invoke(app, ["fit", str(image_folder), "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output


# --- sweeps and the cache ------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "compare: {strategies: [linear", "- a list\n"])
def test_a_damaged_sweep_settings_file_is_a_clear_error(tmp_path, content):
    from headstart.workflows.sweep import Sweep, SweepCell

    cells = [SweepCell("a", lambda folder: {"x": 1}, folder="a")]
    list(Sweep.bind(tmp_path, cells, {"k": 1}).run())
    (tmp_path / "sweep.yaml").write_text(content)
    with pytest.raises(RunFolderError) as e:
        Sweep.bind(tmp_path, cells, {"k": 1})
    assert "sweep.yaml" in e.value.found and "1 cell folder" in e.value.found
    assert "restore" in e.value.fix


def test_an_unwritable_cache_warns_and_the_fit_goes_on(image_folder, tmp_path, monkeypatch):
    from headstart.features import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache")
    monkeypatch.setenv("HEADSTART_FAULT", "enospc:*.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.store("k" * 64, __import__("torch").zeros(3, 4))
    assert not cache.enabled
    assert any("going on without it" in str(w.message) for w in caught)
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    monkeypatch.delenv("HEADSTART_FAULT")
    cfg = RunConfig(
        data=DataConfig(source=str(image_folder), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="linear-probe"),
    )
    result = fit(cfg, tmp_path / "run", progress=False, cache=cache)
    assert result.metrics["cache"]["hits"] == 0 and (tmp_path / "run/model.safetensors").is_file()


def test_cli_reports_a_full_disk_from_any_write_without_a_traceback(tmp_path, monkeypatch):
    from headstart import cli

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.bin"))

    monkeypatch.setattr(cli, "app", full)
    monkeypatch.setattr(sys, "argv", ["headstart", "fit", "x"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2


def test_config_yaml_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    RunConfig().to_yaml(path)
    monkeypatch.setenv("HEADSTART_FAULT", "enospc:c.yaml")
    with pytest.raises(DiskFullError):
        RunConfig(train=TrainConfig(epochs=99)).to_yaml(path)
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == RunConfig().train.epochs


def test_shard_folders_of_a_killed_process_are_removed_on_the_next_use(tmp_path):
    from headstart.features.store import SCRATCH_PREFIX, clean_scratch, scratch_folder

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    left = tmp_path / f"{SCRATCH_PREFIX}{dead.stdout.strip()}-abc"
    (left / "x").mkdir(parents=True)
    live = scratch_folder(tmp_path)  # this process's: kept; the dead one's: gone
    assert live.is_dir() and not left.exists()
    assert clean_scratch(tmp_path) == [] and live.is_dir()


def test_sharded_embeddings_go_on_without_the_cache_when_its_disk_is_full(tmp_path, monkeypatch):
    import torch

    from headstart.features import EmbeddingCache
    from headstart.features.store import ShardWriter

    def compute_into(folder):
        w = ShardWriter(folder, dim=4, shard_rows=2)
        w.append(torch.arange(12.0).reshape(3, 4))
        w.close()

    cache = EmbeddingCache(tmp_path / "cache")
    monkeypatch.setenv("HEADSTART_FAULT", "enospc:shard-*.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = cache.get_or_compute_sharded("k" * 64, compute_into)
    assert torch.equal(emb.materialise(), torch.arange(12.0).reshape(3, 4))
    assert not cache.enabled and any("going on without it" in str(w.message) for w in caught)
    assert not list((tmp_path / "cache" / "embeddings").iterdir())  # nothing half-written


def test_a_folder_replaced_under_a_kill_is_the_old_one_whole(tmp_path):
    final = tmp_path / "tokenizer"
    final.mkdir()
    (final / "vocab.txt").write_text("old")
    code = textwrap.dedent(
        f"""
        from headstart.storage import replaced_folder
        with replaced_folder({str(final)!r}) as out:
            (out / "vocab.txt").write_text("new")
        """
    )
    env = {**os.environ, "HEADSTART_FAULT": "kill:tokenizer"}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == -9
    assert (final / "vocab.txt").read_text() == "old"
    assert storage.clean_temp_files(tmp_path)  # the killed process's new folder
    env.pop("HEADSTART_FAULT")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert (final / "vocab.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer"]
