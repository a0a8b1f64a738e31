"""The installed package stands alone: nothing in bot/ reaches into tests/ or edits the import path."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[2] / "bot"


def _is_tests(module: str) -> bool:
    return module == "tests" or module.startswith("tests.")


def reaches_outside(source: str) -> list[str]:
    """Each place in `source` that imports from `tests` (statically or by name) or touches `sys.path`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _is_tests(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_tests(node.module or ""):
            found.append(f"line {node.lineno}: from {node.module} import …")
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _is_tests(node.args[0].value)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__", "find_spec"}
        ):
            found.append(f"line {node.lineno}: imports {node.args[0].value} by name")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            found.append(f"line {node.lineno}: sys.path")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import tests.e2e.synapse",
        "from tests.fakes.gotosocial import FakeGoToSocial",
        "from tests import conftest",
        "import importlib\nimportlib.import_module('tests.e2e.human')",
        "import sys\nsys.path.insert(0, '/checkout')",
    ],
)
def test_the_check_finds_each_way_of_reaching_into_tests(source: str) -> None:
    assert len(reaches_outside(source)) == 1


@pytest.mark.parametrize(
    "source", ["from bot.testing import x", "import testsuite", "from . import tests", "x = 'tests.e2e'"]
)
def test_the_check_leaves_other_imports_alone(source: str) -> None:
    assert reaches_outside(source) == []


def test_nothing_in_bot_imports_from_tests() -> None:
    modules = sorted(BOT.rglob("*.py"))
    assert len(modules) > 20  # the package was found
    offenders = {
        str(path.relative_to(BOT.parent)): found
        for path in modules
        if (found := reaches_outside(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
