"""Memory that does not grow with the dataset: a bounded preflight queue, disk-backed
embeddings in row shards, and a probe that streams them."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from headstart.data import checks
from headstart.features.store import (
    DISK_ROWS,
    DISK_ROWS_ENV,
    MeanEmbeddings,
    ShardedEmbeddings,
    ShardWriter,
    disk_rows,
)
from tests.conftest import make_image_folder


def test_preflight_keeps_a_bounded_number_of_checks_in_flight(monkeypatch):
    lock = threading.Lock()
    state = {"submitted": 0, "finished": 0, "peak": 0}

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
            with lock:
                state["submitted"] += 1
                state["peak"] = max(state["peak"], state["submitted"] - state["finished"])
            return super().submit(fn, *args, **kwargs)

    def fake_check(path, max_pixels):
        time.sleep(0.0005)
        with lock:
            state["finished"] += 1
        return "broken" if path.name.startswith("bad") else None

    monkeypatch.setattr(checks, "ThreadPoolExecutor", CountingPool)
    monkeypatch.setattr(checks, "check_image", fake_check)
    paths = [Path(f"{'bad' if i % 97 == 0 else 'ok'}-{i}.png") for i in range(600)]
    bad = checks._bad_files(paths, 100, progress=False)
    assert state["submitted"] == len(paths)
    workers = min(8, __import__("os").cpu_count() or 1)
    # one future per file up front would reach hundreds here
    assert state["peak"] <= workers * checks.IN_FLIGHT_PER_WORKER
    assert [p for p, _ in bad] == [str(p) for p in paths if p.name.startswith("bad")]
    assert all(r == "broken" for _, r in bad)


def test_shards_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    full = torch.as_tensor(rng.normal(size=(50, 6)).astype(np.float32))
    writer = ShardWriter(tmp_path / "s", dim=6, shard_rows=7)
    for lo, hi in ((0, 3), (3, 20), (20, 21), (21, 50)):
        writer.append(full[lo:hi])
    writer.close()
    files = sorted((tmp_path / "s").glob("shard-*.safetensors"))
    assert len(files) == 8  # ceil(50 / 7): written as they filled, not joined
    assert all(len(load_file(str(f))["embeddings"]) <= 7 for f in files)
    x = ShardedEmbeddings(tmp_path / "s")
    assert len(x) == 50 and x.shape == (50, 6)
    assert torch.equal(x.materialise(), full)
    assert torch.equal(torch.cat(list(x.batches(9))), full)
    assert torch.equal(x.rows(5, 23), full[5:23])  # across three shards
    idx = rng.permutation(50)[:17]
    assert torch.equal(x.take(idx), full[idx])
    mean = MeanEmbeddings([x, x])
    assert torch.allclose(mean.rows(0, 50), full)


def test_disk_rows_from_the_environment(monkeypatch):
    from headstart.errors import ConfigError

    monkeypatch.delenv(DISK_ROWS_ENV, raising=False)
    assert disk_rows() == DISK_ROWS
    monkeypatch.setenv(DISK_ROWS_ENV, "12")
    assert disk_rows() == 12
    monkeypatch.setenv(DISK_ROWS_ENV, "many")
    with pytest.raises(ConfigError, match=DISK_ROWS_ENV):
        disk_rows()


def test_embeddings_on_disk_equal_those_in_memory(tmp_path):
    from headstart.backbones import create_backbone
    from headstart.config import BackboneConfig
    from headstart.data import scan_image_folder
    from headstart.features.cache import compute_embeddings, compute_embeddings_to_disk

    folder = make_image_folder(tmp_path / "img", n_per_class=7)
    samples = scan_image_folder(folder)
    bb = create_backbone(BackboneConfig(name="toy-resnet"), 3, 32)
    ds = bb.make_dataset(samples)
    in_ram = compute_embeddings(bb, ds, batch_size=4, progress=False)
    compute_embeddings_to_disk(bb, ds, tmp_path / "s", batch_size=4, progress=False)
    x = ShardedEmbeddings(tmp_path / "s")
    assert x.shape == tuple(in_ram.shape)
    assert torch.allclose(x.materialise(), in_ram, atol=1e-6)


def _fit(folder: Path, out: Path, monkeypatch, rows: int | None, cache: Path):
    from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig
    from headstart.features import EmbeddingCache
    from headstart.workflows.fit import fit

    if rows is None:
        monkeypatch.delenv(DISK_ROWS_ENV, raising=False)
    else:
        monkeypatch.setenv(DISK_ROWS_ENV, str(rows))
    cfg = RunConfig(
        data=DataConfig(source=str(folder), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="linear-probe"),
    )
    return fit(cfg, out, progress=False, cache=EmbeddingCache(cache))


def test_a_fit_on_disk_backed_embeddings_matches_the_one_in_memory(tmp_path, monkeypatch):
    import headstart.features.store as store
    from headstart.evaluation.report import read_predictions

    folder = make_image_folder(tmp_path / "img", n_per_class=40)
    ram = _fit(folder, tmp_path / "ram", monkeypatch, None, tmp_path / "c1")
    assert not list((tmp_path / "c1").rglob("*.shards"))  # small data: in memory as before
    assert "cross-validation" in ram.metrics["params"]["probe"]["head"]["policy"]

    monkeypatch.setattr(store, "SHARD_ROWS", 16)  # several shards per split
    disk = _fit(folder, tmp_path / "disk", monkeypatch, 10, tmp_path / "c2")
    shard_dirs = list((tmp_path / "c2").rglob("*.shards"))
    assert shard_dirs and all((d / "index.json").is_file() for d in shard_dirs)
    rows = [json.loads((d / "index.json").read_text())["rows"] for d in shard_dirs]
    assert max(rows) > 16  # the training split really spans shards
    head = disk.metrics["params"]["probe"]["head"]
    assert (
        "streamed from disk" in head["policy"]
        and disk.metrics["params"]["probe"]["head"]["holdout"] > 0
    )
    assert disk.metrics["test"]["accuracy"] >= ram.metrics["test"]["accuracy"] - 0.15
    assert disk.metrics["test"]["accuracy"] > 0.8
    pred = read_predictions(tmp_path / "disk")
    assert pred["map"].shape == (len(pred["labels"]), 2)
    assert (tmp_path / "disk" / "metrics.json").is_file()
    # the run folder predicts like any other
    from headstart import load

    model = load(tmp_path / "disk")
    files = sorted((folder / "square").glob("*.png"))[:5]
    assert [p["labels"][0] for p in model.predict(files)].count("square") >= 4


def test_small_data_embeddings_stay_in_memory(tmp_path, monkeypatch):
    from rich.console import Console

    from headstart.backbones import create_backbone
    from headstart.config import BackboneConfig, RunConfig
    from headstart.data import scan_image_folder
    from headstart.features import EmbeddingCache
    from headstart.features.embedder import Embedder

    monkeypatch.delenv(DISK_ROWS_ENV, raising=False)
    samples = scan_image_folder(make_image_folder(tmp_path / "img", n_per_class=5))
    bb = create_backbone(BackboneConfig(name="toy-resnet"), 3, 32)
    emb = Embedder(bb, RunConfig(), EmbeddingCache(tmp_path / "c"), "cpu", False, Console())
    x = emb.lazy(samples, "train")
    assert isinstance(x, torch.Tensor)
    assert torch.equal(x, emb(samples, "train"))
    assert not list((tmp_path / "c").rglob("*.shards"))


def test_a_subset_shares_the_paths_it_keeps(tmp_path):
    from headstart.data import scan_image_folder

    samples = scan_image_folder(make_image_folder(tmp_path / "img", n_per_class=3))
    sub = samples.subset(np.array([4, 1, 7]))
    # no copy of every path per split: the same Path objects
    assert all(sub.paths[j] is samples.paths[i] for j, i in enumerate((4, 1, 7)))


def _sharded(tmp_path: Path, full: torch.Tensor, shard_rows: int = 16) -> ShardedEmbeddings:
    writer = ShardWriter(tmp_path / "s", dim=full.shape[1], shard_rows=shard_rows)
    writer.append(full)
    writer.close()
    return ShardedEmbeddings(tmp_path / "s")


def test_streamed_prototypes_and_map_equal_the_in_memory_ones(tmp_path):
    from headstart.evaluation.report import embedding_map
    from headstart.heads.prototypes import prototype_head, streamed_prototype_head

    rng = np.random.default_rng(1)
    full = torch.as_tensor(rng.normal(size=(90, 5)).astype(np.float32))
    y = rng.integers(0, 3, 90)
    x = _sharded(tmp_path, full)
    w, b = streamed_prototype_head(x, y, 3)
    w0, b0 = prototype_head(full.numpy(), y, 3)
    assert torch.allclose(w, w0, atol=1e-6) and torch.equal(b, b0)
    # under MAP_FIT_ROWS rows the sample is every row: the same components (up to sign)
    m, m0 = embedding_map(x), embedding_map(full.numpy())
    assert m.shape == (90, 2)
    np.testing.assert_allclose(np.abs(m), np.abs(m0), atol=1e-5)
