"""Crash tests: a command killed at a write (checkpoint, config, settings, cache), then run
again, must finish identical to a run that was never interrupted; a full disk must be one
clear error. Kills come from the writer's fault hook (``HEADSTART_FAULT``) and, where strace
can inject signals, from the kernel at a ``rename`` system call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FIT = ["fit", "--backbone", "toy-efficientnet", "--strategy", "finetune", "--epochs", "3"]
FIT += ["--batch-size", "8", "--image-size", "32", "--no-progress"]
#: what differs between two identical runs: timings, and cache use when the cache was cold
VOLATILE = {"seconds", "train_seconds", "cache"}


def headstart(args: list[str], cache: Path, fault: str | None = None, prefix=()) -> int:
    env = {**os.environ, "HEADSTART_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("HEADSTART_FAULT", None)
    if fault:
        env["HEADSTART_FAULT"] = fault
    cmd = [*prefix, sys.executable, "-m", "headstart", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode not in (0, -9, 137):
        print(r.stdout[-3000:], r.stderr[-3000:])
    return r.returncode


def fit_args(images: Path, out: Path) -> list[str]:
    return [FIT[0], str(images), *FIT[1:], "--out", str(out)]


def outcome(run: Path) -> tuple[dict, dict]:
    """The weights (as raw bytes per tensor: bitwise) and the metrics but timings. Not
    the file's bytes: its header's metadata comes out in a per-process hash order."""
    from safetensors.torch import load_file

    metrics = json.loads((run / "metrics.json").read_text())
    weights = {
        k: (t.dtype, t.shape, t.numpy().tobytes())
        for k, t in load_file(str(run / "model.safetensors")).items()
    }
    return weights, {k: v for k, v in metrics.items() if k not in VOLATILE}


def no_temp_files(*folders: Path) -> bool:
    return not [p for f in folders for p in f.rglob("*.tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.conftest import make_image_folder

    root = tmp_path_factory.mktemp("ref")
    images = make_image_folder(root / "images")
    run = root / "run"
    assert headstart(fit_args(images, run), root / "cache") == 0
    return images, outcome(run)


@pytest.mark.parametrize(
    "fault",
    [
        "kill:last.safetensors:2",  # the checkpoint after the second epoch
        "kill:config.yaml:2",  # the config rewritten after training
        "kill:metrics.json",  # the results
        "kill:model.safetensors",
        "kill:report.html",  # the last file a fit writes
    ],
)
def test_a_fit_killed_at_a_write_resumes_to_the_uninterrupted_result(reference, tmp_path, fault):
    images, expected = reference
    run = tmp_path / "run"
    rc = headstart(fit_args(images, run), tmp_path / "cache", fault)
    if rc == 0:  # the fault's write did not happen in this run: nothing to resume
        assert outcome(run) == expected
        return
    assert rc in (-9, 137)
    assert headstart([*fit_args(images, run), "--resume"], tmp_path / "cache") == 0
    assert outcome(run) == expected
    assert no_temp_files(run)


def test_a_fit_killed_at_its_first_config_write_starts_again_cleanly(reference, tmp_path):
    images, expected = reference
    run = tmp_path / "run"
    assert headstart(fit_args(images, run), tmp_path / "cache", "kill:config.yaml") in (-9, 137)
    assert [p.name for p in run.iterdir() if not p.name.startswith(".")] == []
    # nothing to resume: --resume says so; the plain command starts the run
    assert headstart([*fit_args(images, run), "--resume"], tmp_path / "cache") == 2
    assert headstart(fit_args(images, run), tmp_path / "cache") == 0
    assert outcome(run) == expected and no_temp_files(run)


def test_a_fit_killed_at_an_embedding_cache_write_resumes_identically(tmp_path):
    from tests.conftest import make_image_folder

    images = make_image_folder(tmp_path / "images")
    args = [a if a != "finetune" else "linear-probe" for a in FIT]
    ref, run, cache = tmp_path / "ref", tmp_path / "run", tmp_path / "cache"
    assert headstart([args[0], str(images), *args[1:], "--out", str(ref)], tmp_path / "c0") == 0
    every = [args[0], str(images), *args[1:], "--out", str(run)]
    hexname = "[0-9a-f]" * 8 + "*.safetensors"  # an embedding file: <sha256>.safetensors
    assert headstart(every, cache, f"kill:{hexname}:2") in (-9, 137)
    assert list(cache.rglob("*.tmp"))  # the killed write's temp file...
    assert headstart([*every, "--resume"], cache) == 0
    assert outcome(run) == outcome(ref)
    assert no_temp_files(run, cache)  # ...is gone after the next run


def _compare_args(images: Path, out: Path) -> list[str]:
    return [
        "compare",
        str(images),
        "--backbone",
        "toy-efficientnet",
        "--strategies",
        "linear-probe,finetune",
        "--budgets",
        "4",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--out",
        str(out),
        "--no-progress",
    ]


def _cells(out: Path) -> list[dict]:
    doc = json.loads((out / "comparison.json").read_text())
    return [{k: v for k, v in c.items() if k != "seconds"} for c in doc["cells"]]


def test_a_comparison_killed_in_a_cell_then_at_its_settings_goes_on_to_the_same_result(
    tmp_path,
):
    from tests.conftest import make_image_folder

    images = make_image_folder(tmp_path / "images", n_per_class=16)
    ref, out = tmp_path / "ref", tmp_path / "cmp"
    assert headstart(_compare_args(images, ref), tmp_path / "c0") == 0
    cache = tmp_path / "cache"
    # killed as the third cell writes its results, then as the rerun rewrites compare.yaml
    assert headstart(_compare_args(images, out), cache, "kill:metrics.json:3") in (-9, 137)
    assert headstart(_compare_args(images, out), cache, "kill:compare.yaml") in (-9, 137)
    assert headstart(_compare_args(images, out), cache) == 0  # not refused: same settings
    assert _cells(out) == _cells(ref)
    assert no_temp_files(out)


def _strace_can_inject() -> bool:
    if shutil.which("strace") is None:
        return False
    r = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "inject=getpid:retval=1", "true"],
        capture_output=True,
        check=False,
    )
    return r.returncode == 0


@pytest.mark.skipif(not _strace_can_inject(), reason="strace cannot inject faults here")
@pytest.mark.parametrize("nth", [3, 8])
def test_a_fit_killed_by_the_kernel_at_a_rename_resumes_to_the_same_result(
    reference, tmp_path, nth
):
    images, expected = reference
    run = tmp_path / "run"
    calls = "rename,renameat,renameat2"
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={calls}"]
    strace += ["-e", f"inject={calls}:signal=KILL:when={nth}"]
    rc = headstart(fit_args(images, run), tmp_path / "cache", prefix=strace)
    assert rc != 0  # killed
    resume = ["--resume"] if (run / "config.yaml").is_file() else []
    assert headstart([*fit_args(images, run), *resume], tmp_path / "cache") == 0
    assert outcome(run) == expected and no_temp_files(run)


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_under_the_run_folder_is_one_clear_error(reference, tmp_path, small_disk):
    images, _ = reference
    run = small_disk / "run"
    env = {**os.environ, "HEADSTART_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "headstart", *fit_args(images, run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "free in" in r.stderr and str(small_disk) in r.stderr
    assert no_temp_files(small_disk)


def test_a_full_disk_under_the_cache_warns_and_the_run_finishes(reference, tmp_path, small_disk):
    images, _ = reference
    (small_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 8192))  # all but 8 KB
    args = [a if a != "finetune" else "linear-probe" for a in FIT]
    env = {**os.environ, "HEADSTART_CACHE": str(small_disk / "cache"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "headstart",
            args[0],
            str(images),
            *args[1:],
            "--out",
            str(tmp_path / "run"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "going on without it" in r.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file() and no_temp_files(small_disk)
