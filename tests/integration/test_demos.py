"""The demos, shrunk: one strategy each, few labels."""

from __future__ import annotations

import pytest
from rich.console import Console

from headstart.workflows.demo import run_demo, run_text_demo

pytestmark = pytest.mark.slow


def test_image_demo_rows(tmp_path):
    rows = run_demo(
        tmp_path,
        per_class=5,
        test_size=50,
        epochs=1,
        image_size=32,
        progress=False,
        console=Console(quiet=True),
        strategies=("linear-probe",),
    )
    assert [r["strategy"] for r in rows] == ["linear-probe"]
    assert rows[0]["accuracy"] > 0.3 and (tmp_path / "linear-probe" / "model.safetensors").is_file()


def test_text_demo_rows_include_the_tfidf_baseline(tmp_path):
    rows = run_text_demo(
        tmp_path,
        per_class=5,
        epochs=1,
        progress=False,
        console=Console(quiet=True),
        strategies=("linear-probe",),
    )
    assert [r["strategy"] for r in rows] == ["linear-probe", "tf-idf + logistic (baseline)"]
    assert all(0.4 < r["accuracy"] <= 1.0 for r in rows)
