"""``headstart serve`` as users run it: a subprocess on a loopback port, spoken to over HTTP.

Two servers for the whole module, on toy run folders trained once: ``main`` serves an
image run and a text run (no token, a small body limit, batching of up to 8 inputs),
``secure`` serves the image run alone behind a token given through HEADSTART_TOKEN.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from headstart import load
from headstart.config import BackboneConfig, DataConfig, RunConfig, StrategyConfig, TrainConfig
from headstart.workflows.fit import fit
from tests.conftest import make_image_folder

TOKEN = "s3cret-token"
BODY_LIMIT_MB = 0.25
LIMIT = int(BODY_LIMIT_MB * 1024 * 1024)
MAX_INPUTS = 10
TEXTS = {
    "positive": ["great", "love", "excellent", "happy", "perfect", "wonderful"],
    "negative": ["awful", "hate", "broken", "terrible", "refund", "worst"],
    "neutral": ["okay", "average", "fine", "arrived", "normal", "box"],
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _texts(n_per_class: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in TEXTS.items():
        for _ in range(n_per_class):
            texts.append(" ".join(rng.choice(words, size=rng.integers(3, 8))))
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import pandas as pd

    root = tmp_path_factory.mktemp("serve")
    images = make_image_folder(root / "images", n_per_class=10)
    fit(
        RunConfig(
            data=DataConfig(source=str(images)),
            backbone=BackboneConfig(name="toy-efficientnet"),
            strategy=StrategyConfig(name="finetune"),
            train=TrainConfig(epochs=3, batch_size=8),
        ),
        root / "shapes",
        progress=False,
    )
    texts, labels = _texts(12, 0)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "reviews.csv", index=False)
    fit(
        RunConfig(
            data=DataConfig(source=str(root / "reviews.csv")),
            backbone=BackboneConfig(name="toy-bert"),
            strategy=StrategyConfig(name="finetune"),
            train=TrainConfig(epochs=3, batch_size=8),
        ),
        root / "reviews",
        progress=False,
    )
    return {"image": root / "shapes", "text": root / "reviews", "images": images}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture(scope="module")
def start_server() -> Iterator:
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        cmd = [sys.executable, "-m", "headstart", "serve", *args, "--port", str(port)]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})},
        )
        server = Server(f"http://127.0.0.1:{port}", port, proc)
        started.append(server)
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: server.lines.extend(stdout), daemon=True).start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"the server exited ({proc.returncode}):\n{server.log}")
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the server did not answer /health:\n{server.log}")

    yield start
    for server in started:
        server.proc.terminate()
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)


@pytest.fixture(scope="module")
def main(runs, start_server) -> Server:
    return start_server(
        str(runs["image"]),
        f"reviews={runs['text']}",
        "--max-batch",
        "8",
        "--batch-wait-ms",
        "50",
        "--max-body-mb",
        str(BODY_LIMIT_MB),
        "--max-inputs",
        str(MAX_INPUTS),
        "--top-k",
        "3",
    )


@pytest.fixture(scope="module")
def secure(runs, start_server) -> Server:
    return start_server(str(runs["image"]), env={"HEADSTART_TOKEN": TOKEN})


def _files(runs) -> list[Path]:
    return sorted(runs["images"].glob("*/[0-2].png"))


def _upload(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _png(size: int = 24, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _reason(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


# -- predictions ------------------------------------------------------------------------------


def test_predictions_equal_the_library_for_images_and_texts(main, runs):
    files = _files(runs)
    r = httpx.post(f"{main.url}/models/shapes/predict", files=_upload(files), timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model"] == "shapes" and doc["engine"] == "torch"
    model = load(runs["image"], device="cpu")
    want = model.predict(files, top_k=3)
    got = doc["predictions"]
    assert [g["input"] for g in got] == [p.name for p in files]
    assert [g["labels"] for g in got] == [w["labels"] for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g["probabilities"], w["probabilities"], atol=1e-4)

    texts, _ = _texts(2, 7)
    r = httpx.post(f"{main.url}/models/reviews/predict?top_k=2", json={"texts": texts}, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = load(runs["text"], device="cpu").predict(texts, top_k=2)
    assert [len(g["labels"]) for g in got] == [2] * len(texts)
    assert [g["labels"][0] for g in got] == [w["labels"][0] for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g["probabilities"], w["probabilities"], atol=1e-4)


def test_an_exported_run_served_on_onnxruntime_predicts_as_predict(runs, start_server, tmp_path):
    run = tmp_path / "shapes"
    shutil.copytree(runs["image"], run)
    cli = [sys.executable, "-m", "headstart"]
    done = subprocess.run([*cli, "export", str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run / "export" / "model.onnx").is_file()
    files = _files(runs)
    csv = tmp_path / "torch.csv"
    done = subprocess.run(
        [*cli, "predict", str(run), *map(str, files), "--engine", "torch", "--output", str(csv)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    import pandas as pd

    expected = pd.read_csv(csv)
    server = start_server(str(run), "--engine", "onnx")
    assert httpx.get(f"{server.url}/info").json()["models"]["shapes"]["engine"] == "onnx"
    body = httpx.post(f"{server.url}/predict?top_k=1", files=_upload(files), timeout=60).json()
    assert body["engine"] == "onnx"
    served = [p["labels"][0] for p in body["predictions"]]
    assert served == list(expected["label_1"]) and len(served) == len(files)
    server.proc.terminate()


def test_health_info_and_openapi(main, runs):
    health = httpx.get(f"{main.url}/health").json()
    assert health["status"] == "ok" and health["models"] == ["shapes", "reviews"]
    info = httpx.get(f"{main.url}/info").json()["models"]
    assert info["shapes"]["labels"] == ["circle", "square", "stripes"]
    assert info["shapes"]["modality"] == "image" and info["shapes"]["input_size"] == 64
    assert info["reviews"]["modality"] == "text" and info["reviews"]["backbone"] == "toy-bert"
    metrics = json.loads((runs["image"] / "metrics.json").read_text())
    assert info["shapes"]["metrics"]["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert info["shapes"]["metrics"]["strategy"] == metrics["strategy"]
    assert info["shapes"]["engine"] == "torch"
    schema = httpx.get(f"{main.url}/openapi.json").json()
    assert {"/predict", "/models/{name}/predict", "/health", "/info"} <= set(schema["paths"])
    docs = httpx.get(f"{main.url}/docs")
    assert docs.status_code == 200 and "<script" not in docs.text
    assert docs.headers["content-security-policy"].startswith("default-src 'none'")
    for path in schema["paths"]:
        assert f"<code>{path}</code>" in docs.text
    assert "PredictResponse" in docs.text and "multipart/form-data" in docs.text


def test_one_model_route_needs_exactly_one_model(main):
    r = httpx.post(f"{main.url}/predict", json={"texts": ["great"]})
    assert "shapes" in _reason(r, 400) and "reviews" in _reason(r, 400)
    assert "nope" in _reason(httpx.post(f"{main.url}/models/nope/predict", json={}), 404)


def test_the_default_address_is_loopback(main):
    assert f"Uvicorn running on http://127.0.0.1:{main.port}" in main.log
    assert f"http://127.0.0.1:{main.port}/" in main.log  # headstart's own start line
    tcp = Path("/proc/net/tcp")
    if tcp.exists():  # the listening socket itself: 0100007F is 127.0.0.1
        listening = [
            line.split()[1] for line in tcp.read_text().splitlines()[1:] if line.split()[3] == "0A"
        ]
        assert f"0100007F:{main.port:04X}" in listening
        assert f"00000000:{main.port:04X}" not in listening


def test_concurrent_requests_are_batched(main, runs):
    before = httpx.get(f"{main.url}/info").json()["models"]["shapes"]["served"]
    files = _files(runs)
    n = 24

    def one(i: int) -> int:
        path = files[i % len(files)]
        r = httpx.post(f"{main.url}/models/shapes/predict", files=_upload([path]), timeout=60)
        return r.status_code

    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    assert codes == [200] * n
    after = httpx.get(f"{main.url}/info").json()["models"]["shapes"]["served"]
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == n
    assert batches < requests
    assert batches >= n // 8  # at most --max-batch inputs per forward pass
    assert after["largest_batch"] > 1


# -- bad requests -----------------------------------------------------------------------------


def test_bad_images_are_400_with_a_reason(main):
    url = f"{main.url}/models/shapes/predict"
    corrupt = _png()[:40] + b"\x00garbage" * 20
    assert "corrupt.png" in _reason(
        httpx.post(url, files=[("files", ("corrupt.png", corrupt, "image/png"))]), 400
    )
    assert "not a readable image" in _reason(
        httpx.post(url, files=[("files", ("notes.txt", b"just words", "text/plain"))]), 400
    )
    assert "empty" in _reason(httpx.post(url, files=[("files", ("e.png", b"", "image/png"))]), 400)
    # a text where an image is expected: a form field, not a file
    as_field = httpx.post(url, files=[("files", (None, b"a text"))])
    assert "not a file" in _reason(as_field, 400)
    assert "no images" in _reason(httpx.post(url, files=[("other", (None, b"x"))]), 400)
    many = [("files", (f"{i}.png", _png(seed=i), "image/png")) for i in range(MAX_INPUTS + 1)]
    assert "limit" in _reason(httpx.post(url, files=many), 400)


def test_bad_texts_are_400_with_a_reason(main):
    url = f"{main.url}/models/reviews/predict"
    json_type = {"content-type": "application/json"}
    assert "not valid JSON" in _reason(
        httpx.post(url, content=b'{"texts": [', headers=json_type), 400
    )
    for shape in ({"text": "x"}, {"texts": "great"}, {"texts": [1, 2]}, ["great"], None, 3):
        body = json.dumps(shape).encode()
        assert "texts" in _reason(httpx.post(url, content=body, headers=json_type), 400)
    assert "empty list" in _reason(httpx.post(url, json={"texts": []}), 400)
    assert "empty text" in _reason(httpx.post(url, json={"texts": ["fine", "  "]}), 400)
    assert "limit" in _reason(httpx.post(url, json={"texts": ["great"] * (MAX_INPUTS + 1)}), 400)
    assert "top_k" in _reason(httpx.post(f"{url}?top_k=0", json={"texts": ["great"]}), 400)
    # a text naming a file on the server is a text, never read as that file
    r = httpx.post(url, json={"texts": [str(Path(__file__).resolve())]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_wrong_content_type_is_415(main, runs):
    json_to_images = httpx.post(f"{main.url}/models/shapes/predict", json={"texts": ["a"]})
    assert "multipart/form-data" in _reason(json_to_images, 415)
    plain = httpx.post(
        f"{main.url}/models/reviews/predict",
        content=b"great",
        headers={"content-type": "text/plain"},
    )
    assert "application/json" in _reason(plain, 415)
    images_to_text = httpx.post(
        f"{main.url}/models/reviews/predict", files=_upload(_files(runs)[:1])
    )
    assert "texts" in _reason(images_to_text, 415)


def _raw(port: int, head: bytes, chunks: list[bytes] | None = None) -> tuple[bytes, int]:
    """Send ``head`` and then ``chunks`` until the server answers; the answer and how many
    body bytes were sent by then."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        for chunk in chunks or []:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered: stop sending
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            time.sleep(0.002)
        data = b""
        try:
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                more = s.recv(65536)
                if not more:
                    break
                data += more
        except ConnectionResetError:
            pass
    return data, sent


def _json_of(raw: bytes) -> dict:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def test_bodies_over_the_limit_are_413_before_they_are_read(main):
    big = _png(600)  # about 1 MB of noise, over the 0.25 MB limit
    assert len(big) > LIMIT
    r = httpx.post(f"{main.url}/models/shapes/predict", files=[("files", ("b.png", big))])
    assert "limit" in _reason(r, 413)
    # a Content-Length over the limit is refused without waiting for a byte of the body
    head = (
        b"POST /models/reviews/predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    )
    answer, _ = _raw(main.port, head)
    assert answer.startswith(b"HTTP/1.1 413") and "limit" in _json_of(answer)["detail"]
    # a chunked body is counted as it arrives and refused once over the limit
    head = (
        b"POST /models/reviews/predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 16384
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 400  # 6.5 MB if all were sent
    answer, sent = _raw(main.port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert "limit" in _json_of(answer)["detail"]
    assert sent < 40 * len(piece)  # stopped near the limit, not at the end of the body


def test_the_server_still_answers_after_bad_requests(main):
    r = httpx.post(f"{main.url}/models/reviews/predict", json={"texts": ["love it"]})
    assert r.status_code == 200
    assert "Traceback" not in main.log and " 500 " not in main.log


# -- the token --------------------------------------------------------------------------------


def test_token_required_everywhere_but_health_and_the_page(secure, runs):
    url = secure.url
    assert httpx.get(f"{url}/health").json()["token_required"] is True
    assert httpx.get(f"{url}/").status_code == 200
    for path in ("/info", "/openapi.json"):
        missing = httpx.get(f"{url}{path}")
        assert "token" in _reason(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert "wrong token" in _reason(wrong, 401)
    files = _upload(_files(runs)[:2])
    assert _reason(httpx.post(f"{url}/predict", files=files), 401)
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{url}/info", headers=good).status_code == 200
    r = httpx.post(f"{url}/predict", files=files, headers=good)  # the only model
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    schema = httpx.get(f"{url}/openapi.json", headers=good).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_start_up_errors_are_clear(runs, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "headstart", "serve"]
    twice = subprocess.run(
        [*cmd, str(runs["image"]), f"shapes={runs['text']}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert twice.returncode == 2
    assert "'shapes'" in twice.stderr and "name=path" in " ".join(twice.stderr.split())
    missing = subprocess.run(
        [*cmd, str(tmp_path / "nope")], capture_output=True, text=True, env=env, timeout=120
    )
    assert missing.returncode == 2 and "no folder" in missing.stderr


# -- the page ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        msg = "Debian's chromium is not installed (`apt-get install chromium`)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    seen: dict[str, list[str]] = {"errors": [], "requests": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(url, wait_until="load")
    return page, seen


def _bars(page) -> list[dict]:
    page.wait_for_selector("#results .bar-row")
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#results .bar-row')).map(r => {
            const fill = r.querySelector('.fill'), bar = r.querySelector('.bar');
            return {label: r.querySelector('.label').textContent,
                    pct: r.querySelector('.pct').textContent,
                    width: fill.getBoundingClientRect().width / bar.getBoundingClientRect().width};
        })"""
    )


def _same_as_api(bars: list[dict], prediction: dict) -> None:
    assert [b["label"] for b in bars] == prediction["labels"]
    for b, p in zip(bars, prediction["probabilities"], strict=True):
        assert b["width"] == pytest.approx(p, abs=0.01)
        assert b["pct"] == f"{100 * p:.1f}%"


def _local_only(seen: dict, url: str) -> None:
    outside = [u for u in seen["requests"] if not u.startswith((url, "blob:", "data:"))]
    assert outside == []
    assert seen["errors"] == []


def test_page_shows_the_top_k_of_an_image(browser, main, runs):
    path = _files(runs)[4]
    api = httpx.post(f"{main.url}/models/shapes/predict", files=_upload([path])).json()
    page, seen = _open(browser, f"{main.url}/")
    page.wait_for_selector("#model:not([disabled])")
    assert page.input_value("#model") == "shapes"
    assert "3 classes" in page.inner_text("#model-meta")
    page.set_input_files("#file", str(path))
    bars = _bars(page)
    assert len(bars) == 3
    _same_as_api(bars, api["predictions"][0])
    assert page.is_visible("#preview")
    _local_only(seen, main.url)
    assert any(u.endswith("/models/shapes/predict?top_k=3") for u in seen["requests"])
    page.close()


def test_page_shows_the_top_k_of_a_text(browser, main):
    text = "terrible broken refund"
    api = httpx.post(f"{main.url}/models/reviews/predict", json={"texts": [text]}).json()
    page, seen = _open(browser, f"{main.url}/")
    page.wait_for_selector("#model:not([disabled])")
    page.select_option("#model", "reviews")
    assert page.is_visible("#text") and not page.is_visible("#drop")
    page.fill("#text", text)
    page.click("#text-go")
    _same_as_api(_bars(page), api["predictions"][0])
    _local_only(seen, main.url)
    page.close()


def test_page_asks_for_the_token(browser, secure, runs):
    response = httpx.get(f"{secure.url}/")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "https:" not in csp and "http:" not in csp
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(https?:)?//", response.text)
    page, seen = _open(browser, f"{secure.url}/")
    page.wait_for_selector("#token-card:not(.hidden)")
    page.fill("#token", TOKEN)
    page.click("#token-go")
    page.wait_for_selector("#model:not([disabled])")
    page.set_input_files("#file", str(_files(runs)[0]))
    assert len(_bars(page)) == 3
    _local_only(seen, secure.url)
    page.close()


def test_api_docs_render_offline(browser, secure):
    assert httpx.get(f"{secure.url}/docs").status_code == 401
    page = browser.new_page()
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.set_extra_http_headers({"authorization": f"Bearer {TOKEN}"})
    page.goto(f"{secure.url}/docs", wait_until="load")
    ops = page.eval_on_selector_all("section.op h3", "els => els.map(e => e.textContent)")
    assert "POST/models/{name}/predict" in ops and "GET/health" in ops
    assert page.inner_text("[id='post/predict'] .lock").startswith("Needs")
    assert page.locator("[id='get/health'] .lock").count() == 0
    assert seen == [f"{secure.url}/docs"]
    page.close()


# -- fuzzing from the OpenAPI schema ----------------------------------------------------------


def test_fuzzing_the_api_finds_no_server_error(main):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{main.url}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    statuses: list[int] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=schema.as_strategy(generation_mode=mode))
        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case) -> None:
            response = case.call_and_validate(base_url=main.url, checks=checks, timeout=30)
            statuses.append(response.status_code)
            assert response.status_code < 500

        fuzz()
    assert len(statuses) >= 40 and 500 not in statuses
    assert {400, 404} <= set(statuses)  # the fuzzer reached the predict routes
    assert "Traceback" not in main.log


# -- the load benchmark, bounded ---------------------------------------------------------------


def test_the_load_benchmark_gets_only_200s(main, runs):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serve.py"
    spec = importlib.util.spec_from_file_location("bench_serve", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    images = [p.read_bytes() for p in _files(runs)]
    url = f"{main.url}/models/shapes/predict"
    with ThreadPoolExecutor(1) as pool:  # a thread of its own: the browser's loop runs here
        result = pool.submit(bench.load_test, url, images, 8, 16).result()
    assert result["codes"] == [200] and result["ok"] == result["requests"] == 16
    assert result["rps"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
