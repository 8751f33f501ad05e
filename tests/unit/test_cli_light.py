"""The command starts without the heavy libraries, and its defaults and help come from
the config dataclasses (one source of truth per setting)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import headstart
from headstart import config
from headstart.cli import app

#: libraries that only the commands that need them may import
HEAVY = (
    "torch",
    "transformers",
    "timm",
    "sklearn",
    "matplotlib",
    "accelerate",
    "safetensors",
    "scipy",
    "pandas",
    "PIL",
    "onnxruntime",
    "gensim",
)
SRC = str(Path(headstart.__file__).resolve().parents[1])


def _modules_after(code: str) -> list[str]:
    """The top-level modules loaded by ``code`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    listing = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"{code}\nimport json, sys\n{listing}"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", ["import headstart.cli", "import headstart; headstart.RunConfig"])
def test_importing_the_cli_loads_no_heavy_library(code):
    loaded = set(_modules_after(code))
    assert not loaded & set(HEAVY), f"{code!r} imported {sorted(loaded & set(HEAVY))}"


def test_the_public_api_resolves_lazily():
    assert set(headstart.__all__) <= set(dir(headstart))
    for name in headstart.__all__:
        assert getattr(headstart, name) is not None
    from headstart.runfolder import load
    from headstart.workflows.fit import fit

    assert headstart.fit is fit
    assert headstart.load is load
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = headstart.nope  # type: ignore[attr-defined]


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def _config_classes() -> list[type]:
    return [
        obj
        for obj in vars(config).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == config.__name__
    ]


def test_every_config_field_has_help():
    classes = _config_classes()
    assert {"FewShotConfig", "MetaConfig", "ZeroShotConfig", "ContrastiveConfig"} <= {
        c.__name__ for c in classes
    }
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if not f.metadata.get("help")
    ]
    assert not missing


def test_each_command_config_is_defined_once_in_config():
    """No module but config.py defines a command's config class or its lists."""
    src = Path(config.__file__).parent
    names = ("FewShotConfig", "MetaConfig", "ZeroShotConfig", "ContrastiveConfig", "AdaptConfig")
    for path in src.rglob("*.py"):
        if path.name == "config.py":
            continue
        text = path.read_text()
        for name in names:
            assert f"class {name}" not in text, (path, name)
        assert "FEWSHOT_STRATEGIES =" not in text and "METHODS = (" not in text, path


def test_adaptation_methods_come_from_the_registry():
    from headstart.strategies import STRATEGIES
    from headstart.strategies.adaptation import METHODS

    assert set(METHODS.names()) <= set(STRATEGIES.names())
    image_only = [m for m in METHODS.names() if getattr(METHODS.get(m), "image_only", False)]
    assert image_only == ["adabn", "fixmatch", "ft-adabn"]  # augmentations or BatchNorm


#: command -> (its config, CLI parameter -> config field where the names differ)
COMMANDS: dict[str, tuple[type, dict[str, str]]] = {
    "fewshot": (
        config.FewShotConfig,
        {"backbone": "backbones", "strategy": "strategies", "text_col": "text_cols"},
    ),
    "meta-train": (config.MetaConfig, {}),
    "zeroshot": (
        config.ZeroShotConfig,
        {"template": "templates", "describe": "descriptions", "text_col": "text_cols"},
    ),
    "rank": (config.RankConfig, {"text_col": "text_cols"}),
    "compare": (config.CompareConfig, {}),
    "adapt": (config.AdaptConfig, {"method": "methods"}),
    "embed-train": (config.EmbedTrainConfig, {"text_col": "text_cols"}),
}


def _params(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_defaults_and_help_are_the_configs(command):
    cls, renamed = COMMANDS[command]
    fields = _field_names(cls)
    checked = 0
    for name, param in _params(command).items():
        field = renamed.get(name, name)
        if field not in fields:
            continue
        checked += 1
        assert config.help_for(cls, field) in (param.help or ""), (command, name)  # type: ignore[attr-defined]
        default = config.default_of(cls, field)
        given = param.default  # type: ignore[attr-defined]
        if isinstance(default, list) and isinstance(given, str):  # a comma-separated option
            default = ",".join(str(v) for v in default)
        if param.required or (given is None and default in ([], {})):  # type: ignore[attr-defined]
            continue  # a required value, or a repeatable option not given
        assert given == default, (command, name, given, default)
    assert checked >= 3


def test_fit_defaults_and_help_are_the_run_configs():
    from headstart.cli import RENAMED_OPTIONS

    checked = 0
    for name, param in _params("fit").items():
        if name in RENAMED_OPTIONS:
            section, field = RENAMED_OPTIONS[name]
        else:
            section = next((s for s, c in config.SECTIONS.items() if name in _field_names(c)), "")
            field = name
        if not section:
            continue  # --out, --resume and the like: no setting of the run
        cls = config.SECTIONS[section]
        assert config.help_for(cls, field) in (param.help or ""), name  # type: ignore[attr-defined]
        if not param.required and config.default_of(cls, field) is not None:  # type: ignore[attr-defined]
            assert param.default == config.default_of(cls, field), name  # type: ignore[attr-defined]
        checked += 1
    assert checked > 30


def test_image_size_defaults_per_command():
    assert _params("fit")["image_size"].default is None  # type: ignore[attr-defined]
    assert _params("zeroshot")["image_size"].default is None  # type: ignore[attr-defined]
    for command in ("fewshot", "meta-train", "demo"):
        assert _params(command)["image_size"].default == config.SMALL_IMAGE_SIZE  # type: ignore[attr-defined]


def test_help_lists_the_commands_and_where_the_strategies_are():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("fit", "compare", "fewshot", "meta-train", "zeroshot", "strategies"):
        assert command in result.output
    result = CliRunner().invoke(app, ["fit", "--help"])
    assert result.exit_code == 0
    words = " ".join(result.output.replace("│", " ").split())
    assert "`headstart strategies` lists the registered names" in words


def test_strategies_lists_the_registries():
    from headstart.heads import HEADS
    from headstart.strategies import STRATEGIES

    result = CliRunner().invoke(app, ["strategies"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in (*STRATEGIES.names(), *HEADS.names()):
        assert name in result.output
