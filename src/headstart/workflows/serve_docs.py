"""The server's API reference at ``/docs``, rendered from its OpenAPI schema.

FastAPI's own ``/docs`` loads Swagger UI's scripts and styles from a CDN, so on a machine
without internet (where headstart is meant to run) it is a blank page. This page is plain
HTML written on the server from the same schema: every operation with its parameters,
request body and responses, and the schemas they refer to; no scripts, fonts or requests.
The schema itself stays at ``/openapi.json`` for tools (schemathesis, code generators).
Written by hand because the packaged Swagger UI bundles predate OpenAPI 3.1, which
FastAPI emits.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

HTTP_VERBS = ("get", "post", "put", "patch", "delete")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1b1f24}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
section.op{border:1px solid #d0d7de;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}
.m{display:inline-block;min-width:3.5rem;font-weight:700;color:#fff;border-radius:4px;
text-align:center;padding:0 .4rem;margin-right:.5rem}.get{background:#0969da}
.post{background:#1a7f37}
.put,.patch{background:#9a6700}.delete{background:#cf222e}
code,pre{font:13px ui-monospace,monospace;background:#f6f8fa;border-radius:4px}
pre{padding:.5rem;overflow-x:auto}table{border-collapse:collapse;margin:.4rem 0}
td,th{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:left;vertical-align:top}
.lock{color:#9a6700}
"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_text(schema: dict[str, Any] | None) -> str:
    """A schema as one short line: ``array of string``, ``Prediction``, ``integer | null``."""
    if not schema:
        return "any"
    if "$ref" in schema:
        return _ref_name(str(schema["$ref"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(type_text(s) for s in schema[key])
    kind = schema.get("type", "object")
    if kind == "array":
        return f"array of {type_text(schema.get('items'))}"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _properties(schema: dict[str, Any]) -> str:
    props = schema.get("properties") or {}
    if not props:
        return f"<p><code>{escape(type_text(schema))}</code></p>"
    required = set(schema.get("required") or ())
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code>{' (required)' if name in required else ''}</td>"
        f"<td><code>{escape(type_text(prop))}</code></td>"
        f"<td>{escape(str(prop.get('description', '')))}</td></tr>"
        for name, prop in props.items()
    )
    return f"<table><tr><th>field</th><th>type</th><th>description</th></tr>{rows}</table>"


def _operation(path: str, method: str, op: dict[str, Any], secured: bool) -> str:
    parts = [
        f'<section class="op" id="{escape(method + path)}"><h3><span class="m {method}">'
        f"{method.upper()}</span><code>{escape(path)}</code></h3>"
    ]
    if op.get("summary"):
        parts.append(f"<p>{escape(str(op['summary']))}</p>")
    if secured and op.get("security") != []:
        parts.append('<p class="lock">Needs <code>Authorization: Bearer TOKEN</code>.</p>')
    params = op.get("parameters") or []
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(str(p.get('name')))}</code></td><td>{escape(str(p.get('in')))}"
            f"</td><td>{'yes' if p.get('required') else 'no'}</td>"
            f"<td><code>{escape(type_text(p.get('schema')))}</code></td>"
            f"<td>{escape(str(p.get('description', '')))}</td></tr>"
            for p in params
        )
        parts.append(
            "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th>"
            f"<th>type</th><th>description</th></tr>{rows}</table>"
        )
    body = op.get("requestBody")
    if body:
        parts.append("<h4>Request body</h4>")
        if body.get("description"):
            parts.append(f"<p>{escape(str(body['description']))}</p>")
        for media, content in (body.get("content") or {}).items():
            parts.append(f"<p><code>{escape(media)}</code></p>")
            parts.append(_properties(content.get("schema") or {}))
    rows = ""
    for code, resp in (op.get("responses") or {}).items():
        schemas = [c.get("schema") for c in (resp.get("content") or {}).values()]
        kind = type_text(schemas[0]) if schemas and schemas[0] else ""
        rows += (
            f"<tr><td>{escape(str(code))}</td><td>{escape(str(resp.get('description', '')))}"
            f"</td><td><code>{escape(kind)}</code></td></tr>"
        )
    if rows:
        parts.append(
            "<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>"
            f"{rows}</table>"
        )
    parts.append("</section>")
    return "".join(parts)


def reference_html(schema: dict[str, Any]) -> str:
    """The whole page for an OpenAPI schema (3.0 or 3.1)."""
    info = schema.get("info") or {}
    secured = bool((schema.get("components") or {}).get("securitySchemes"))
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    ops = [
        _operation(path, method, item[method], secured)
        for path, item in (schema.get("paths") or {}).items()
        for method in HTTP_VERBS
        if method in item
    ]
    components = (schema.get("components") or {}).get("schemas") or {}
    models = "".join(
        f'<section class="op" id="schema-{escape(name)}"><h3><code>{escape(name)}</code></h3>'
        f"{_properties(s)}</section>"
        for name, s in components.items()
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}: API</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(str(info.get('summary', '')))}</p>"
        '<p>The machine-readable schema: <a href="/openapi.json">/openapi.json</a> '
        f"(OpenAPI {escape(str(schema.get('openapi', '')))}).</p>"
        f"<h2>Operations</h2>{''.join(ops)}<h2>Schemas</h2>{models}"
        f"<details><summary>Raw schema</summary><pre>{escape(json.dumps(schema, indent=2))}</pre>"
        "</details></body></html>"
    )
