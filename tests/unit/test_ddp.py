"""Data-parallel training: `torchrun --nproc-per-node 2 -m headstart fit` (gloo on CPU)
trains as one process with the same global batch does, and only the first process writes
the run folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

COMMON = ["--backbone", "toy-efficientnet", "--image-size", "32", "--epochs", "3", "--lr",
          "0.05", "--strategy", "finetune", "--augment", "none", "--dropout", "0",
          "--no-progress"]  # fmt: skip


def _fit(args: list[str], tmp_path, launcher: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "scratch")}
    (tmp_path / "scratch").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, *launcher, "-m", "headstart", "fit", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.timeout(900)
def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path):
    from tests.conftest import make_image_folder

    # 48 images: 40 train, 5 whole global batches of 8 per epoch (with a last partial batch,
    # DDP averages the two processes' means, which weighs its examples unevenly)
    image_folder = make_image_folder(tmp_path / "images", n_per_class=16)
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _fit([str(image_folder), *COMMON, "--batch-size", "8", "--out", str(one)], tmp_path, [])
    assert r1.returncode == 0, r1.stderr[-2000:]
    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    torchrun = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                "127.0.0.1", "--master-port", port]  # fmt: skip
    r2 = _fit(
        [str(image_folder), *COMMON, "--batch-size", "4", "--out", str(two)], tmp_path, torchrun
    )
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    # the same weights (gradients averaged over the two shards of every global batch)
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-4
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1["test"]["accuracy"] == m2["test"]["accuracy"]
    assert m2["params"]["train"]["effective_batch_size"] == 8
    assert "effective batch 8" in r2.stdout
    # one writer: the same files, each written once (one history line per epoch)
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert len((two / "history.jsonl").read_text().splitlines()) == 3
    assert r2.stdout.count("Test metrics") == 1  # printed by the first process only
    assert not list((tmp_path / "scratch").glob("headstart-rank*"))  # scratch removed
