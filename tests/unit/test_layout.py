"""The layout's rules that a linter does not check: no module imports another's private
names, and the one module per command lives in headstart.workflows."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "headstart"


def test_no_module_imports_private_names_of_another():
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("headstart"):
                found += [
                    f"{path.relative_to(SRC)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not found, found


def test_every_command_has_its_workflow_module():
    from typer.main import get_command

    from headstart.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    listing = {"backbones", "strategies"}  # registries shown, no workflow behind them
    modules = {p.stem.replace("_", "-") for p in (SRC / "workflows").glob("*.py")}
    assert commands - listing <= modules, commands - listing - modules
