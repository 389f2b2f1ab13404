"""Drift guard: every hook spec is documented where declared, in the guide, and called in tests."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from dotflow_core.hooks import specs

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "providers.md"
HOOK_NAMES = sorted(
    name
    for name, function in vars(specs).items()
    if inspect.isfunction(function) and hasattr(function, "dotflow_spec")
)


def test_the_specs_are_the_published_contract() -> None:
    assert {"create_workflow", "update_workflow", "create_task", "update_task"} <= set(HOOK_NAMES)
    assert {"get_next_task_id", "configure", "flush", "shutdown"} <= set(HOOK_NAMES)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_spec_says_when_it_fires_what_it_receives_and_returns(hook: str) -> None:
    doc = inspect.getdoc(getattr(specs, hook)) or ""
    assert len(doc) > 80, f"hook {hook!r} has no real docstring"
    assert re.search(r"\bFires\b", doc), f"hook {hook!r}: say when it fires"
    assert ":returns:" in doc, f"hook {hook!r}: say what it may return"
    for parameter in inspect.signature(getattr(specs, hook)).parameters:
        assert f":param {parameter}:" in doc, f"hook {hook!r}: document {parameter!r}"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_spec_has_a_section_in_the_provider_guide(hook: str) -> None:
    headings = re.findall(r"^#{2,3} `([a-z_]+)", GUIDE.read_text(), flags=re.MULTILINE)
    assert hook in headings, f"docs/providers.md has no '## `{hook}`' section"


def _hooks_called_in_tests() -> set[str]:
    called: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "hook"
            ):
                called.add(node.func.attr)
    return called


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_spec_is_called_by_a_test(hook: str) -> None:
    assert hook in _hooks_called_in_tests(), f"no test calls '<manager>.hook.{hook}(...)'"
