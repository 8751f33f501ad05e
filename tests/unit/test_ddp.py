"""Data-parallel training: `torchrun --nproc-per-node 2 -m headstart fit` (gloo on CPU)
trains as one process with the same global batch does, only the first process writes the
run folder and fills the embedding cache, and a killed launch resumes from the first
process's checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

COMMON = ["--backbone", "toy-efficientnet", "--image-size", "32", "--epochs", "3", "--lr",
          "0.05", "--augment", "none", "--dropout", "0", "--no-progress"]  # fmt: skip
FINETUNE = [*COMMON, "--strategy", "finetune"]


def _torchrun() -> list[str]:
    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    return ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
            "127.0.0.1", "--master-port", port]  # fmt: skip


def _fit(
    args: list[str], root: Path, processes: int, cache: Path, fault: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(root / "scratch"),
           "HEADSTART_CACHE": str(cache)}  # fmt: skip
    env.pop("HEADSTART_FAULT", None)
    if fault:
        env["HEADSTART_FAULT"] = fault
    (root / "scratch").mkdir(exist_ok=True)
    launcher = _torchrun() if processes > 1 else []
    return subprocess.run(
        [sys.executable, *launcher, "-m", "headstart", "fit", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from tests.conftest import make_image_folder

    # 48 images: 40 train, 5 whole global batches of 8 per epoch (with a last partial batch,
    # DDP averages the two processes' means, which weighs its examples unevenly)
    return make_image_folder(tmp_path_factory.mktemp("ddp") / "images", n_per_class=16)


@pytest.fixture(scope="module")
def two_process_run(images, tmp_path_factory):
    """A 2-process fine-tuning at batch 4 per process, and its log."""
    root = tmp_path_factory.mktemp("two")
    out = root / "run"
    r = _fit([str(images), *FINETUNE, "--batch-size", "4", "--out", str(out)], root, 2,
             root / "cache")  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return out, r, root


@pytest.mark.timeout(900)
def test_two_processes_train_as_one_with_the_same_global_batch(images, two_process_run, tmp_path):
    two, r2, root = two_process_run
    one = tmp_path / "one"
    r1 = _fit([str(images), *FINETUNE, "--batch-size", "8", "--out", str(one)], tmp_path, 1,
              tmp_path / "cache")  # fmt: skip
    assert r1.returncode == 0, r1.stderr[-2000:]
    # the same weights (gradients averaged over the two shards of every global batch)
    assert _max_diff(one, two) < 1e-4
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1["test"]["accuracy"] == m2["test"]["accuracy"]
    assert m2["params"]["train"]["effective_batch_size"] == 8
    assert "effective batch 8" in r2.stdout
    # one writer: the same files, each written once (one history line per epoch)
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert len((two / "history.jsonl").read_text().splitlines()) == 3
    assert r2.stdout.count("Test metrics") == 1  # printed by the first process only
    assert not list((root / "scratch").glob("headstart-rank*"))  # scratch removed


@pytest.mark.timeout(900)
def test_a_killed_launch_resumes_from_the_first_process_checkpoint(
    images, two_process_run, tmp_path
):
    two, _, _ = two_process_run
    run = tmp_path / "run"
    args = [str(images), *FINETUNE, "--batch-size", "4", "--out", str(run)]
    # the first process dies writing the checkpoint after the second epoch; the launcher
    # then stops the other
    killed = _fit(args, tmp_path, 2, tmp_path / "cache", "kill:last.safetensors:2")
    assert killed.returncode != 0
    assert not (run / "metrics.json").exists()
    assert (run / "checkpoint" / "last.safetensors").is_file()  # the first epoch's
    assert list((run / "checkpoint").glob(".last.safetensors.*.tmp"))  # the killed write
    resumed = _fit([*args, "--resume"], tmp_path, 2, tmp_path / "cache")
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert _max_diff(run, two) == 0.0  # as if it had never stopped
    assert len((run / "history.jsonl").read_text().splitlines()) == 3
    assert not list(run.rglob("*.tmp"))


@pytest.mark.timeout(900)
def test_followers_read_the_embeddings_the_first_process_cached(images, tmp_path):
    """lp-ft's probe runs on cached embeddings: the first process computes them while the
    second waits, then reads them; the result is the one-process result."""
    args = [str(images), *COMMON, "--strategy", "lp-ft"]
    one, two = tmp_path / "one", tmp_path / "two"
    cache = tmp_path / "cache2"
    r1 = _fit([*args, "--batch-size", "8", "--out", str(one)], tmp_path, 1, tmp_path / "c1")
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _fit([*args, "--batch-size", "4", "--out", str(two)], tmp_path, 2, cache)
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    assert _max_diff(one, two) < 1e-4
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)  # the shared cache was filled
    assert not [p for p in files if p.name.endswith(".tmp")]
    probe = [json.loads(x) for x in (two / "history.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in probe].count("probe") == 1


@pytest.mark.timeout(900)
def test_the_schedule_counts_the_steps_each_process_takes(images, tmp_path):
    """40 training images at a global batch of 6: one process takes 6 steps (the last 4
    images dropped); two processes at batch 3 share 13 batches in 6 whole rounds. The
    learning rate schedule, counted per process, ends where the one-process run's ends and
    every global step sees the same 6 images, so the weights match."""
    args = [str(images), *FINETUNE, "--epochs", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _fit([*args, "--batch-size", "6", "--out", str(one)], tmp_path, 1, tmp_path / "c")
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _fit([*args, "--batch-size", "3", "--out", str(two)], tmp_path, 2, tmp_path / "c")
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    h1, h2 = ([json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
              for run in (one, two))  # fmt: skip
    assert [h["lr"] for h in h1] == pytest.approx([h["lr"] for h in h2], abs=1e-12)
    # the logged training loss is the mean over both processes' batches, not the first's
    assert [h["train_loss"] for h in h1] == pytest.approx([h["train_loss"] for h in h2], abs=1e-4)
    assert _max_diff(one, two) < 1e-4


def test_batches_per_process_follow_the_sharding():
    from headstart.training.trainer import batches_per_process

    class Batches:
        def __init__(self, n: int, drop: bool) -> None:
            self.n, self.drop = n, drop

        def steps_per_epoch(self) -> int:
            return self.n

        def drops_last(self) -> bool:
            return self.drop

    assert batches_per_process(Batches(31, True), 1) == 31  # type: ignore[arg-type]
    assert batches_per_process(Batches(31, True), 2) == 15  # type: ignore[arg-type]
    assert batches_per_process(Batches(31, False), 2) == 16  # type: ignore[arg-type]
    assert batches_per_process(Batches(1, True), 2) == 1  # type: ignore[arg-type]


def test_each_process_draws_its_own_augmentation():
    from headstart.device import derive_seed
    from headstart.training.trainer import train_draws_seed

    # the first process draws as a single process does (one-process runs are unchanged)
    assert train_draws_seed(3, 2, 0) == derive_seed(3, "train draws, epoch 2")
    seeds = {train_draws_seed(3, 2, p) for p in range(4)}
    assert len(seeds) == 4
    assert train_draws_seed(3, 1, 1) != train_draws_seed(3, 2, 1)
