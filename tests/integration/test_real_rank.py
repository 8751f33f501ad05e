"""`headstart rank` on the real backbones: ImageNet features of EfficientNet-Lite rank
above a randomly initialised Lite0 on Fashion-MNIST, and MiniLM above a random encoder on
BBC News; LEEP and NCE apply only where a real source head exists."""

from __future__ import annotations

import pytest
from rich.console import Console

from headstart.config import DataConfig, RankConfig
from headstart.data import load_bundled_text
from headstart.workflows.rank import order_rows, run_rank

pytestmark = pytest.mark.slow
QUIET = Console(quiet=True)


def test_pretrained_efficientnet_ranks_above_random_weights(tmp_path):
    res = run_rank(
        DataConfig(source="fashion-mnist", image_size=64),
        RankConfig(
            backbones=[
                "efficientnet_lite0",
                "efficientnet_lite0@blocks.4",
                "random:efficientnet_lite0",
            ],
            max_per_class=15,
        ),
        tmp_path / "rank",
        progress=False,
        console=QUIET,
    )
    assert res.n == 150
    rows = {r.candidate: r for r in res.rows}
    assert rows["efficientnet_lite0"].scores["leep"] is not None  # the ImageNet head
    assert rows["random:efficientnet_lite0"].scores["leep"] is None
    for score in ("logme", "knn", "linear"):
        order = [r.candidate for r in order_rows(res.rows, score)]
        assert order[-1] == "random:efficientnet_lite0", (score, order)
    # the shrunk H-score grows with the feature width: compare equal widths only
    shrunk = rows["efficientnet_lite0"].scores["hscore-shrink"]
    assert shrunk is not None and shrunk > (
        rows["random:efficientnet_lite0"].scores["hscore-shrink"] or 0.0
    )
    # the plain one is K - 1 = 9 for both once the 1,280 features outnumber the 150 examples
    for name in ("efficientnet_lite0", "random:efficientnet_lite0"):
        assert rows[name].scores["hscore"] == pytest.approx(9.0, abs=1e-6)
    assert res.recommended != "random:efficientnet_lite0"
    assert (tmp_path / "rank" / "report.html").is_file()


def test_minilm_ranks_above_a_random_encoder_on_bbc_news():
    res = run_rank(
        DataConfig(source="bbc-news", max_length=64),
        RankConfig(
            backbones=["minilm-l6", "paraphrase-minilm-l3", "random:minilm-l6"], max_per_class=10
        ),
        progress=False,
        console=QUIET,
        samples=load_bundled_text("bbc-news", "train"),
    )
    for score in ("logme", "knn", "linear"):
        assert order_rows(res.rows, score)[-1].candidate == "random:minilm-l6", score
    assert all(r.scores["leep"] is None for r in res.rows)  # no text encoder has a source head
