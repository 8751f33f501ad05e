"""Experiment trackers through Accelerate's tracker API: the config and every epoch's
metrics reach TensorBoard, MLflow and trackio; without --tracker nothing is written."""

from __future__ import annotations

import importlib.util

import pytest

from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.errors import ConfigError
from headstart.training.tracking import check_tracker, epoch_values, flat_config
from headstart.workflows.fit import fit

EPOCHS = 3


def _cfg(folder, tracker=None) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(folder), image_size=32),
        backbone=BackboneConfig(name="toy-efficientnet"),
        strategy=StrategyConfig(name="finetune"),
        train=TrainConfig(epochs=EPOCHS, batch_size=8, patience=EPOCHS, tracker=tracker),
    )


def test_flat_config_and_epoch_values():
    doc = {"train": {"lr": 0.001, "seed": 0}, "data": {"text_cols": ["a", "b"], "val": None}}
    assert flat_config(doc) == {
        "train.lr": 0.001, "train.seed": 0, "data.text_cols": '["a", "b"]', "data.val": None
    }  # fmt: skip
    row = {"epoch": 2, "train_loss": 0.5, "val_loss": float("nan"), "best": True, "lr": 1e-3}
    assert epoch_values(row) == {"train_loss": 0.5, "lr": 1e-3}


def test_tensorboard_gets_the_config_and_every_epoch(image_folder, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = fit(_cfg(image_folder, "tensorboard"), tmp_path / "run", progress=False)
    logdir = tmp_path / "run" / "trackers" / "run"
    events = EventAccumulator(str(logdir)).Reload()
    losses = events.Scalars("train_loss")
    assert [e.step for e in losses] == list(range(EPOCHS))
    history = [h for h in res.history if h.get("phase") == "train"]
    assert [e.value for e in losses] == pytest.approx([h["train_loss"] for h in history])
    assert len(events.Scalars("lr")) == EPOCHS
    # no validation split on this tiny folder: NaN scores are left out, not logged
    assert "val_macro_f1" not in events.Tags()["scalars"]
    import yaml

    (hparams,) = list(logdir.rglob("hparams.yml"))
    config = yaml.safe_load(hparams.read_text())
    assert config["train.epochs"] == EPOCHS and config["strategy.name"] == "finetune"


def test_mlflow_gets_the_config_and_every_epoch(image_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow

    fit(_cfg(image_folder, "mlflow"), tmp_path / "run", progress=False)
    store = tmp_path / "run" / "trackers" / "mlruns"
    assert store.is_dir()
    client = mlflow.MlflowClient(tracking_uri=store.resolve().as_uri())
    (exp,) = [e for e in client.search_experiments() if e.name == "headstart"]
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "run"
    assert run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.params["strategy.name"] == "finetune"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(EPOCHS))
    assert run.info.status == "FINISHED"


def test_trackio_gets_every_epoch(image_folder, tmp_path, monkeypatch):
    if importlib.util.find_spec("trackio") is None:  # imported, it would fix its folder
        pytest.skip("the trackers extra is not installed")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    fit(_cfg(image_folder, "trackio"), tmp_path / "run", progress=False)
    import sqlite3

    (db,) = list((tmp_path / "trackio").rglob("*.db"))
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        assert "metrics" in tables
        rows = con.execute("select step, metrics from metrics").fetchall()
    assert sorted(r[0] for r in rows) == list(range(EPOCHS))
    text = [r[1].decode() if isinstance(r[1], bytes) else str(r[1]) for r in rows]
    assert all("train_loss" in t for t in text)


def test_without_a_tracker_nothing_is_written(image_folder, tmp_path):
    fit(_cfg(image_folder), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "trackers").exists()


def test_an_unknown_or_missing_tracker_is_a_clear_error(image_folder, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="tracker to be one of tensorboard, mlflow, trackio"):
        TrainConfig(tracker="wandb")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'headstart\[trackers\]'"):
        check_tracker("mlflow")
    with pytest.raises(ConfigError, match="not installed"):
        fit(_cfg(image_folder, "mlflow"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()
