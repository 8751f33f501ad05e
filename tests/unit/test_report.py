"""The HTML reports open offline in headless Chromium with no console errors and no
network requests, and every figure is there and has a size."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from headstart.config import (
    BackboneConfig,
    CompareConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from headstart.evaluation.report import BUDGET_FIGURES, FIT_FIGURES
from headstart.workflows.compare import run_compare
from headstart.workflows.fit import fit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        msg = "Debian's chromium is not installed (`apt-get install chromium`)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs it: a missing browser there is a failure
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def render(browser, page_path: Path) -> dict:
    """Open the page; collect console errors, page errors, requests and each figure's size."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    figures = page.evaluate(
        """() => Array.from(document.querySelectorAll('figure[data-figure]')).map(f => {
            const r = f.getBoundingClientRect();
            const visuals = Array.from(f.querySelectorAll('svg, img, .card'));
            const drawn = visuals.filter(v => {
                const b = v.getBoundingClientRect();
                const ok = v.tagName !== 'IMG' || (v.complete && v.naturalWidth > 0);
                return b.width > 20 && b.height > 20 && ok;
            });
            return {name: f.dataset.figure, width: r.width, height: r.height,
                    visuals: visuals.length, drawn: drawn.length};
        })"""
    )
    page.close()
    return {"errors": errors, "requests": requests, "figures": figures}


def _check(result: dict, page_path: Path, names: tuple[str, ...], perfect: bool = False) -> None:
    """``perfect``: the shown model made no mistake, so there are no wrong examples."""
    assert result["errors"] == []
    # the page itself is the only thing loaded from anywhere (thumbnails are data: URIs)
    outside = [u for u in result["requests"] if not u.startswith("data:")]
    assert outside == [page_path.resolve().as_uri()]
    by_name = {f["name"]: f for f in result["figures"]}
    assert set(names) <= set(by_name), f"missing figures: {set(names) - set(by_name)}"
    for name in names:
        f = by_name[name]
        if name == "confident-errors" and perfect:
            assert f["visuals"] == 0 and "No wrong predictions" in page_path.read_text()
            continue
        assert f["height"] > 100 and f["width"] > 100, f
        assert f["drawn"] >= 1 and f["drawn"] == f["visuals"], f


def _cfg(source: str, backbone: str, **data) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=source, **data),
        backbone=BackboneConfig(name=backbone),
        strategy=StrategyConfig(name="lp-ft", head="logistic"),
        train=TrainConfig(epochs=2, patience=2, batch_size=8),
    )


def test_fit_report_renders_every_figure(browser, image_folder, tmp_path):
    out = tmp_path / "run"
    res = fit(_cfg(str(image_folder), "toy-efficientnet", image_size=32), out, progress=False)
    page = out / "report.html"
    result = render(browser, page)
    _check(result, page, FIT_FIGURES, res.metrics["test"]["accuracy"] == 1.0)
    if res.metrics["test"]["accuracy"] < 1.0:
        assert "data:image/png;base64," in page.read_text()  # thumbnails of the mistakes
    html = page.read_text()
    # no address outside the page (SVG namespace names of w3.org are not fetched)
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org/", "")
    assert "<script" not in html and "forgetting" in html


def test_text_fit_report_shows_snippets(browser, tmp_path):
    rows = ["text,label"]
    words = {"sport": "goal match team score", "tech": "chip software data code"}
    for i in range(16):
        for label, w in words.items():
            rows.append(f'"{w} number {i} {w.split()[i % 4]}",{label}')
    table = tmp_path / "t.csv"
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    res = fit(_cfg(str(table), "toy-bert"), out, progress=False)
    page = out / "report.html"
    _check(render(browser, page), page, FIT_FIGURES, res.metrics["test"]["accuracy"] == 1.0)
    text = page.read_text()
    assert "similarity retention" in text  # no source head: what the encoder keeps
    assert 'data-section="vocabulary"' in text and "pieces per word" in text


def test_compare_report_renders_every_figure(browser, image_folder, tmp_path):
    base = _cfg(str(image_folder), "toy-efficientnet", image_size=32, test_fraction=0.3)
    spec = CompareConfig(strategies=["scratch", "lp-ft"], budgets=[2, 4], seeds=2)
    out = tmp_path / "cmp"
    result = run_compare(base, spec, out, progress=False)
    page = out / "report.html"
    best = max(c.accuracy for c in result.cells if c.budget == 4 and c.seed == 0)
    _check(render(browser, page), page, BUDGET_FIGURES + FIT_FIGURES, best == 1.0)
    assert "per class" in page.read_text()


def test_class_names_with_dollar_signs_are_text_not_math():
    from headstart.evaluation.report import confusion_svg, per_class_f1_svg

    names = ["a$_$b", "$x^2$", "plain"]
    metrics = {
        "classes": names,
        "macro_f1": 0.5,
        "per_class": {n: {"f1": 0.5} for n in names},
        "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    }
    assert "a$_$b" in per_class_f1_svg(metrics)  # drawn as written, no parse error
    assert "$x^2$" in confusion_svg(metrics)


def test_rank_report_renders_its_figure(browser, image_folder, tmp_path):
    from headstart.config import RankConfig
    from headstart.workflows.rank import run_rank

    out = tmp_path / "rank"
    res = run_rank(
        DataConfig(source=str(image_folder)),
        RankConfig(backbones=["toy-efficientnet", "toy-efficientnet@blocks.2"]),
        out,
        progress=False,
    )
    page = out / "report.html"
    _check(render(browser, page), page, ("rank-scores",))
    html = page.read_text()
    assert res.recommended is not None and f"<b>{res.recommended}</b>" in html
    assert "not applicable" in html  # LEEP at an intermediate layer
