"""``headstart serve``: run folders behind an HTTP API and a web page.

One process serves one or more run folders, each under its name. Requests for one model
are queued and run in batches by one worker task per model, which runs the forward pass
in a thread of its own so that the event loop keeps accepting requests. A batch takes
what is queued, up to ``max_batch`` inputs, and waits at most ``batch_wait_ms`` for more
only while other requests are still being received: a lone request runs at once.

Safe by default: the server listens on 127.0.0.1 only; ``--token`` requires a bearer
token on everything but ``/health`` and the page; a request body over the size limit is
refused (413) before it is read, and a streamed body as soon as it goes over; bad input
is a 400 or 415 with a JSON reason, never a 500. Uploaded images are decoded with Pillow
in a small set of formats, checked and converted to RGB before they are queued.

FastAPI, uvicorn and python-multipart are the optional extra ``headstart[serve]``; this
module imports them, so the CLI imports it only inside the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from headstart.config import DataConfig, ServeConfig, default_of
from headstart.errors import ConfigError, HeadstartError, RunFolderError
from headstart.workflows.serve_docs import CSP as DOCS_CSP
from headstart.workflows.serve_docs import reference_html

try:
    import uvicorn
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    try:
        import python_multipart  # noqa: F401 (starlette reads forms with it)
    except ImportError:
        import multipart  # noqa: F401 (its older name)
except ImportError as e:  # pragma: no cover - the extra is installed in development
    raise ConfigError(
        "FastAPI, uvicorn and python-multipart for `headstart serve`",
        f"{e.name or 'one of them'} not installed",
        "pip install 'headstart[serve]'",
    ) from e

log = logging.getLogger("headstart.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: image formats an upload may be in (Pillow's names); others, such as EPS, which Pillow
#: reads through an external program, are refused
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
#: paths open without a token: the liveness probe and the page (which asks for the token)
OPEN_PATHS = ("/", "/health")
PAGE = "serve_page.html"
CSP = (
    "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_MB = 1024 * 1024


class BadInput(Exception):
    """A request the server cannot use: answered with ``status`` and ``detail``."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


# -- which run folders, under which names ---------------------------------------------------


def parse_runs(runs: Sequence[str]) -> dict[str, Path]:
    """``name=path`` or ``path`` (named after its folder) for each run; a name twice is an
    error that names both folders."""
    if not runs:
        raise ConfigError("at least one run folder", "none", "pass e.g. `headstart serve runs/x`")
    named: dict[str, Path] = {}
    for item in runs:
        name, sep, path = item.partition("=")
        if not sep or not name or "/" in name:
            name, path = Path(item).resolve().name, item
        if not name or any(c in name for c in "/?#%\\ "):
            raise ConfigError(
                "a model name of letters, digits, dots, dashes and underscores",
                repr(name),
                "choose one with name=path, e.g. `headstart serve shoes=runs/latest`",
            )
        if name in named:
            raise ConfigError(
                "a different name for each served run",
                f"{name!r} for both {named[name]} and {path}",
                f"name them with name=path, e.g. `{name}-2={path}`",
            )
        named[name] = Path(path)
    return named


def _load(path: Path, device: str, engine: str) -> Any:
    """``headstart.load`` of one served run folder on the chosen engine."""
    from headstart.runfolder import load

    return load(path, device, engine=engine)


def metrics_summary(run_dir: Path) -> dict[str, Any]:
    """Test accuracy, macro-F1, strategy and backbone from the run's ``metrics.json``."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    test = metrics.get("test")
    if not isinstance(test, dict):
        test = {}
    out: dict[str, Any] = {}
    for key in ("accuracy", "macro_f1"):
        v = test.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[f"test_{key}"] = float(v)
    for key in ("strategy", "backbone"):
        v = metrics.get(key)
        if isinstance(v, (str, int, float)):
            out[key] = v
    return out


# -- batching ---------------------------------------------------------------------------------


@dataclass
class _Job:
    inputs: list[Any]
    future: asyncio.Future[Any]


@dataclass
class BatchStats:
    """What a model's worker has done: requests answered, inputs, forward passes."""

    requests: int = 0
    inputs: int = 0
    batches: int = 0
    largest_batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "inputs": self.inputs,
            "batches": self.batches,
            "largest_batch": self.largest_batch,
        }


@dataclass
class Batcher:
    """One model's queue and the worker that empties it in batches. ``infer`` maps a list
    of inputs to one row of probabilities per input; it runs in a thread of its own."""

    infer: Callable[[list[Any]], Any]
    max_batch: int
    wait_s: float
    stats: BatchStats = field(default_factory=BatchStats)
    #: requests whose body is being read or decoded: the inputs a batch may wait for
    arriving: int = 0
    queue: asyncio.Queue[_Job] | None = None
    _carry: _Job | None = None
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="headstart-infer")
    )

    async def submit(self, inputs: list[Any]) -> Any:
        if self.queue is None:
            raise RuntimeError("the batch worker has not started")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(inputs, future))
        return await future

    async def _next(self, timeout: float | None) -> _Job | None:
        assert self.queue is not None
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is None:
            return await self.queue.get()
        if timeout <= 0:
            return self.queue.get_nowait() if not self.queue.empty() else None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def run(self) -> None:
        """Forever: take a job, add more until the batch is full, the wait is over or no
        other request is on its way, run the batch, and answer each job with its rows."""
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            assert first is not None
            jobs, n = [first], len(first.inputs)
            deadline = loop.time() + self.wait_s
            while n < self.max_batch:
                if self.arriving == 0 and self.queue.empty() and self._carry is None:
                    break  # nothing else on its way: a lone request does not wait
                job = await self._next(deadline - loop.time())
                if job is None:
                    break
                if n + len(job.inputs) > self.max_batch:
                    self._carry = job  # the first of the next batch
                    break
                jobs.append(job)
                n += len(job.inputs)
            jobs = [j for j in jobs if not j.future.done()]  # a client that went away
            if not jobs:
                continue
            inputs = [x for j in jobs for x in j.inputs]
            try:
                rows = await loop.run_in_executor(self._executor, self.infer, inputs)
            except Exception as e:
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(inputs))
            start = 0
            for j in jobs:
                self.stats.requests += 1
                self.stats.inputs += len(j.inputs)
                if not j.future.done():
                    j.future.set_result(rows[start : start + len(j.inputs)])
                start += len(j.inputs)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- the models -------------------------------------------------------------------------------


@dataclass
class Served:
    """One served run folder."""

    name: str
    path: Path
    model: Any
    batcher: Batcher
    summary: dict[str, Any]

    @property
    def engine(self) -> str:
        return str(getattr(self.model, "engine", "torch"))

    @property
    def modality(self) -> str:
        return str(self.model.backbone.spec.modality)

    def info(self) -> dict[str, Any]:
        spec = self.model.backbone.spec
        return {
            "name": self.name,
            "labels": list(self.model.classes),
            "backbone": spec.name,
            "modality": spec.modality,
            "input": "images (multipart/form-data, field 'files')"
            if spec.modality == "image"
            else 'texts (application/json, {"texts": [...]})',
            "input_size": getattr(spec, "input_size", None) if spec.modality == "image" else None,
            "temperature": float(self.model.temperature),
            "engine": self.engine,
            "metrics": self.summary,
            "served": self.batcher.stats.to_dict(),
        }


def load_models(runs: dict[str, Path], cfg: ServeConfig, console: Console) -> dict[str, Served]:
    """Each run folder loaded once, with its batcher (the workers start with the app)."""
    served: dict[str, Served] = {}
    for name, path in runs.items():
        if not path.is_dir():
            raise RunFolderError(
                "a run folder written by `headstart fit`",
                f"{path}, which is no folder",
                "check the path, or train one with `headstart fit`",
            )
        model = _load(path, cfg.device, cfg.engine)
        batcher = Batcher(_inference(model), cfg.max_batch, cfg.batch_wait_ms / 1000)
        served[name] = Served(name, path, model, batcher, metrics_summary(path))
        spec = model.backbone.spec
        console.print(
            f"[bold]model[/] {escape(name)}: {escape(str(path))} ({spec.name}, {spec.modality}, "
            f"{len(model.classes)} classes, {getattr(model, 'engine', 'torch')})",
            highlight=False,
            soft_wrap=True,
        )
    return served


def _inference(model: Any) -> Callable[[list[Any]], Any]:
    """Calibrated probabilities of a list of RGB images or of texts."""
    if model.backbone.spec.modality == "text":
        from headstart.data import from_texts

        return lambda texts: model.predict_proba(from_texts(texts))
    return lambda images: model.predict_proba(images)


def _top(model: Any, rows: Any, names: list[str], k: int) -> list[dict[str, Any]]:
    classes = list(model.classes)
    k = min(k, len(classes))
    out = []
    for name, row in zip(names, rows, strict=True):
        order = sorted(range(len(classes)), key=lambda i: -float(row[i]))[:k]
        out.append(
            {
                "input": name,
                "labels": [classes[i] for i in order],
                "probabilities": [float(row[i]) for i in order],
            }
        )
    return out


# -- reading a request ------------------------------------------------------------------------


def decode_image(data: bytes, name: str, max_pixels: int) -> Any:
    """An upload as an RGB Pillow image; anything else is a :class:`BadInput`."""
    from PIL import Image

    if not data:
        raise BadInput(f"{name}: an empty file, not an image")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as probe:
            w, h = probe.size
            if w < 1 or h < 1 or w * h > max_pixels:
                raise BadInput(f"{name}: {w}x{h} pixels, over the limit of {max_pixels}")
            probe.verify()
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            img.load()
            return img.convert("RGB")
    except BadInput:
        raise
    except Exception as e:  # Pillow raises many kinds for many kinds of broken file
        raise BadInput(
            f"{name}: not a readable image ({type(e).__name__}); send PNG, JPEG, GIF, BMP, "
            "WebP or TIFF files"
        ) from e


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_images(request: Request, cfg: ServeConfig) -> tuple[list[Any], list[str]]:
    if _media_type(request) != "multipart/form-data":
        raise BadInput(
            "this model takes images: send multipart/form-data with the files in field "
            f"'files' (got content type {_media_type(request) or 'none'!r})",
            415,
        )
    try:
        form = await request.form(max_files=cfg.max_inputs, max_fields=cfg.max_inputs + 16)
    except HTTPException as e:  # the parser's own 400 (malformed, too many parts)
        if "too many files" in str(e.detail).lower():
            raise BadInput(
                f"more than {cfg.max_inputs} images, over the limit of {cfg.max_inputs} per "
                "request (--max-inputs)"
            ) from e
        raise BadInput(f"unreadable multipart body: {e.detail}") from e
    items = form.getlist("files")
    if not items:
        raise BadInput("no images: send one or more files in the multipart field 'files'")
    if len(items) > cfg.max_inputs:
        raise BadInput(f"{len(items)} images, over the limit of {cfg.max_inputs} per request")
    max_pixels = int(default_of(DataConfig, "max_pixels"))
    images, names = [], []
    for n, item in enumerate(items):
        if not isinstance(item, UploadFile):
            raise BadInput(f"files[{n}] is a text field, not a file: upload the image itself")
        name = item.filename or f"#{n}"
        data = await item.read()
        images.append(await run_in_threadpool(decode_image, data, name, max_pixels))
        names.append(name)
    await form.close()
    return images, names


async def read_texts(request: Request, cfg: ServeConfig) -> tuple[list[str], list[str]]:
    if _media_type(request) != "application/json":
        raise BadInput(
            'this model takes texts: send application/json {"texts": ["...", ...]} '
            f"(got content type {_media_type(request) or 'none'!r})",
            415,
        )
    body = await request.body()
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise BadInput(f"the body is not valid JSON ({type(e).__name__}: {e})") from e
    texts = doc.get("texts") if isinstance(doc, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadInput('expected a JSON object {"texts": ["...", ...]} with a list of strings')
    if not texts:
        raise BadInput('an empty list of texts: send at least one in "texts"')
    if len(texts) > cfg.max_inputs:
        raise BadInput(f"{len(texts)} texts, over the limit of {cfg.max_inputs} per request")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise BadInput(f"empty text(s) at position(s) {empty[:10]}: each text needs words")
    names = [t if len(t) <= 80 else t[:77] + "..." for t in texts]
    return texts, names


# -- the ASGI guards --------------------------------------------------------------------------


async def _send_json(send: Send, status: int, doc: dict[str, Any], headers: Any = ()) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(BadInput):
    """A streamed request body went over the limit (answered 413)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, 413)


class LimitBody:
    """Refuse a request body over ``limit`` bytes with 413: at once when its
    Content-Length says so (nothing is read), and for a chunked or understated body as
    soon as the bytes received go over (the rest is not read)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self, size: str) -> dict[str, str]:
        return {
            "detail": f"request body of {size}, over the limit of "
            f"{self.limit / _MB:g} MB (--max-body-mb)"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, {"detail": "a Content-Length that is no number"})
                return
            if declared > self.limit:
                await _send_json(send, 413, self._too_large(f"{declared} bytes"))
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self._too_large(f"more than {self.limit} bytes")["detail"])
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as e:  # read outside a route, where no handler answers it
            if started:
                raise
            await _send_json(send, 413, {"detail": e.detail})


class RequireToken:
    """Bearer-token check on every path but :data:`OPEN_PATHS` (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            await self.app(scope, receive, send)
            return
        reason = "a missing" if not auth else "a wrong"
        await _send_json(
            send,
            401,
            {"detail": f"{reason} token: send the header 'Authorization: Bearer <token>'"},
            [(b"www-authenticate", b"Bearer")],
        )


# -- the app ----------------------------------------------------------------------------------


class Prediction(BaseModel):
    input: str
    labels: list[str]
    probabilities: list[float]


class PredictResponse(BaseModel):
    model: str
    engine: str
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Unusable input (the reason in detail)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong token"},
    404: {"model": ErrorResponse, "description": "No model of that name"},
    413: {"model": ErrorResponse, "description": "Request body over the size limit"},
    415: {"model": ErrorResponse, "description": "Images sent to a text model, or the reverse"},
    500: {"model": ErrorResponse, "description": "An unexpected error (logged by the server)"},
}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "Images for an image model (multipart/form-data, field `files`, one or "
        'more); texts for a text model (application/json `{"texts": [...]}`).',
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["texts"],
                    "properties": {
                        "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1}
                    },
                }
            },
        },
    }
}


def page_html() -> str:
    """The page at ``/`` (shipped in the package beside this module)."""
    return resources.files("headstart.workflows").joinpath(PAGE).read_text(encoding="utf-8")


def create_app(models: dict[str, Served], cfg: ServeConfig) -> Any:
    """The ASGI app: the FastAPI routes inside the token check and the body limit."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        workers = [asyncio.create_task(m.batcher.run()) for m in models.values()]
        try:
            yield
        finally:
            for w in workers:
                w.cancel()
            for m in models.values():
                m.batcher.close()

    api = FastAPI(
        title="headstart",
        summary="Predictions of trained headstart run folders.",
        version="1",
        lifespan=lifespan,
        responses={500: _ERRORS[500]},
        docs_url=None,
        redoc_url=None,
    )
    started = time.time()

    @api.exception_handler(BadInput)
    async def _bad_input(_: Request, e: BadInput) -> JSONResponse:
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
            for err in e.errors()
        )
        return JSONResponse({"detail": reasons or "invalid request"}, status_code=400)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"unexpected server error ({type(e).__name__}); it is in the log"},
            status_code=500,
        )

    @api.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(
            page_html(),
            headers={
                "content-security-policy": CSP,
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
                "cache-control": "no-store",
            },
        )

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(
            reference_html(api.openapi()),
            headers={"content-security-policy": DOCS_CSP, "x-content-type-options": "nosniff"},
        )

    @api.get("/health", summary="Liveness: ok and the models loaded")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": list(models),
            "token_required": cfg.token is not None,
            "uptime_s": round(time.time() - started, 1),
        }

    @api.get("/info", summary="Each model: labels, backbone, input, test metrics, engine")
    async def info() -> dict[str, Any]:
        return {
            "models": {name: m.info() for name, m in models.items()},
            "max_inputs": cfg.max_inputs,
            "max_body_mb": cfg.max_body_mb,
            "max_batch": cfg.max_batch,
            "top_k": cfg.top_k,
        }

    async def predict_with(served: Served, request: Request, top_k: int | None) -> Any:
        served.batcher.arriving += 1
        try:
            if served.modality == "text":
                inputs, names = await read_texts(request, cfg)
            else:
                inputs, names = await read_images(request, cfg)
        finally:
            served.batcher.arriving -= 1
        try:
            rows = await served.batcher.submit(inputs)
        except HeadstartError as e:
            raise BadInput(str(e)) from e
        preds = _top(served.model, rows, names, top_k or cfg.top_k)
        return {"model": served.name, "engine": served.engine, "predictions": preds}

    top_k_query = Query(None, ge=1, le=10_000, description="Labels per input (default: --top-k).")

    @api.post(
        "/predict",
        summary="Predict with the only model served",
        response_model=PredictResponse,
        responses={k: v for k, v in _ERRORS.items() if k != 404},
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(request: Request, top_k: int | None = top_k_query) -> Any:
        if len(models) != 1:
            raise BadInput(
                f"{len(models)} models are served ({', '.join(models)}): post to "
                "/models/{name}/predict"
            )
        return await predict_with(next(iter(models.values())), request, top_k)

    @api.post(
        "/models/{name}/predict",
        summary="Predict with the model of that name",
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra=_PREDICT_BODY,
    )
    async def predict_model(name: str, request: Request, top_k: int | None = top_k_query) -> Any:
        served = models.get(name)
        if served is None:
            raise BadInput(f"no model named {name!r}; served: {', '.join(models)}", 404)
        return await predict_with(served, request, top_k)

    if cfg.token is not None:
        _document_token(api)
    app: ASGIApp = api
    if cfg.token is not None:
        app = RequireToken(app, cfg.token)
    return LimitBody(app, int(cfg.max_body_mb * _MB))


def _document_token(api: Any) -> None:
    """The bearer token in the OpenAPI schema, on every operation but the open ones."""
    plain = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = plain()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            for path in OPEN_PATHS:
                for op in schema["paths"].get(path, {}).values():
                    op["security"] = []
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi


def run_serve(runs: Sequence[str], cfg: ServeConfig, console: Console | None = None) -> None:
    """Load the run folders and serve them until interrupted."""
    console = console or Console()
    named = parse_runs(runs)
    models = load_models(named, cfg, console)
    app = create_app(models, cfg)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    url = f"http://{host}:{cfg.port}"
    console.print(
        f"[bold green]serving[/] {len(models)} model(s) at {url}/ (page), {url}/docs (API)"
        + (", token required" if cfg.token else ""),
        highlight=False,
        soft_wrap=True,
    )
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.token:
        console.print(
            f"[yellow]warning[/] listening on {cfg.host} without --token: anyone who can "
            "reach this port can use the models",
            highlight=False,
            soft_wrap=True,
        )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", access_log=True)
