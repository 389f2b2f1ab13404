"""Layers that point one way: what imports what, at module level, in the core and its plugins."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from dotflow_core import ProviderManager, TaskRecord, hookimpl

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "dotflow_core"
#: What a provider may import from the core (docs/providers.md).
PUBLIC_NAMESPACES = {"dotflow_core", "dotflow_core.plugin", "dotflow_core.testing"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _path_of(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The core modules ``path`` imports, anywhere in it (or at its top), TYPE_CHECKING aside.

    ``from package import name`` counts as an import of ``package.name`` when that is a
    module, else of ``package`` (its ``__init__``).
    """
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                walk(child)
            return
        if top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]).strip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return {module for module in found if module.split(".")[0] == "dotflow_core"} - {name}


def test_the_core_has_no_import_cycle() -> None:
    """Counting imports inside functions too: a deferred import is still a dependency."""
    graph = {_module_name(path): _imports(path) for path in sorted(CORE.rglob("*.py"))}
    cycles: list[str] = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "active"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "active":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("dotflow_core.serialize", "dotflow_core.engine."),
        ("dotflow_core.engine.processes", "dotflow_core.engine.execution"),
        ("dotflow_core.cli.output", "dotflow_core.cli"),
        ("dotflow_core.cli.start", "dotflow_core.cli"),
        ("dotflow_core.cli.providers", "dotflow_core.cli"),
        ("dotflow_core.cli.scaffold", "dotflow_core.cli"),
        ("dotflow_core.hooks.markers", "dotflow_core.discovery"),
    ],
)
def test_layers_do_not_reach_up(importer: str, imported: str) -> None:
    """The cycles the review found stay gone (a trailing dot: nothing of that package)."""
    found = _imports(_path_of(importer))
    if imported.endswith("."):
        assert not {module for module in found if module.startswith(imported)}
    else:
        assert imported not in found


ENGINE_ONLY = """
import json, sys
from dotflow_core.engine.workflow import DotFlow
from dotflow_core.engine.action import action

@action
def step():
    return 1

workflow = DotFlow(providers=[])
workflow.task.add(step=step)
workflow.start()
loaded = sorted(
    name for name in sys.modules
    if name in ("dotflow_core.selection", "dotflow_core.discovery", "importlib.metadata")
    or name.startswith("dotflow_server_")
)
print(json.dumps({"status": workflow.status.value, "loaded": loaded}))
"""


def test_the_engine_runs_without_selection_discovery_or_any_plugin_loaded() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", ENGINE_ONLY], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"status": "Completed", "loaded": []}


def test_from_environment_is_what_dotflow_without_providers_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dotflow_core import DotFlow

    monkeypatch.setenv("DOTFLOW_PROVIDER", "none")
    manager = ProviderManager.from_environment()
    assert manager.names == () and manager.selection is not None
    assert manager.selection.source == "env"
    assert DotFlow().providers.names == ()
    chosen = ProviderManager.from_environment(flag="none")
    assert chosen.selection is not None and chosen.selection.source == "flag"


class _Failing:
    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        raise RuntimeError("provider bug")

    @hookimpl(wrapper=True)
    def create_task(self, task: TaskRecord):  # type: ignore[no-untyped-def]
        return (yield)


def test_isolation_changes_nothing_inside_pluggy() -> None:
    """pluggy calls exactly the functions it found on the registered object (no swapped fields)."""
    plugin = _Failing()
    original = plugin.update_task
    manager = ProviderManager()
    manager.add(plugin, name="failing")
    for caller in vars(manager.hook).values():
        if not isinstance(caller, pluggy.HookCaller):
            continue
        for impl in caller.get_hookimpls():
            assert impl.function is vars(impl.plugin)[impl.function.__name__]
    manager.hook.update_task(task=None)
    assert [failure.hook for failure in manager.failures] == ["update_task"]
    assert plugin.update_task == original  # the provider itself is untouched
    with pytest.raises(RuntimeError):
        plugin.update_task(None)  # type: ignore[arg-type]


def _imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "plugins").glob("*/src/**/*.py")),
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_plugins_import_only_the_public_namespaces(path: Path) -> None:
    core = {name for name in _imports_of(path) if name.split(".")[0] == "dotflow_core"}
    assert core <= PUBLIC_NAMESPACES, (
        f"{path.name} imports internal modules {core - PUBLIC_NAMESPACES}"
    )


def test_the_plugin_namespace_resolves_every_name() -> None:
    import dotflow_core.plugin as plugin

    for name in plugin.__all__:
        assert getattr(plugin, name) is not None, name
