"""How the CLI is put together: commands never call each other, settings hold only values.

`ratchet demo` once called the `run` command's function and left one argument out: typer's
`OptionInfo` default went into settings.json and the README's first command crashed. Shared
logic is a plain function both commands call with every argument given.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import typer

from harness.cli.demo import demo_settings
from harness.loop.settings import LoopSettings
from tests.conftest import ROOT

CLI_MODULES = sorted((ROOT / "harness" / "cli").glob("*.py"))


def _command_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(call, ast.Attribute) and call.attr == "command":
                    found[node.name] = node
    return found


def command_calls(sources: list[str]) -> list[str]:
    """`caller -> callee` for every command function that calls another command function."""
    trees = [ast.parse(source) for source in sources]
    commands = {name: node for tree in trees for name, node in _command_functions(tree).items()}
    calls = []
    for name, node in commands.items():
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id in commands:
                calls.append(f"{name} -> {inner.func.id}")
    return calls


def test_no_command_calls_another_commands_function():
    assert len(CLI_MODULES) >= 2
    sources = [path.read_text() for path in CLI_MODULES]
    assert len({n for s in sources for n in _command_functions(ast.parse(s))}) >= 15
    assert command_calls(sources) == []


def test_the_check_sees_a_command_calling_another():
    """The bug as it was: `demo` calling the `run` command with an argument left out."""
    source = ("@app.command()\ndef run(suite: str = typer.Option(...)): ...\n"
              "@app.command()\ndef demo():\n    run(suite='quickstart')\n")
    assert command_calls([source]) == ["demo -> run"]


def test_demo_settings_are_complete_and_round_trip(tmp_path: Path):
    settings = demo_settings("demo-x")
    settings.save(tmp_path / "settings.json")
    assert LoopSettings.load(tmp_path / "settings.json") == settings
    assert json.loads((tmp_path / "settings.json").read_text())["scripted"] == "demo"


def test_settings_refuse_a_typer_option_left_as_a_value():
    """Whatever calls the loop with a typer default left in gets one clear error, at once,
    before anything is written (not a TypeError from json deep inside `save`)."""
    with pytest.raises(TypeError, match="LoopSettings.executor .*not a plain value"):
        LoopSettings(run="r", suite="quickstart", generations=1, agent_model="m", meta_model="m",
                     executor=typer.Option("local", "--executor"))
