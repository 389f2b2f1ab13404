"""``dotflow providers new NAME``: scaffold a third-party provider package.

The generated module implements every hook of :mod:`dotflow_core.hooks.specs`
(read from the specs at generation time, so it never drifts from the
contract), each doing nothing yet, with comments on when it fires and what
to do there. The package installs as-is: ``pip install -e ./dotflow-server-NAME``
makes ``NAME`` appear in ``dotflow providers``, ``dotflow start --provider NAME``
works, and its contract tests pass.
"""

from __future__ import annotations

import argparse
import builtins
import inspect
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dotflow_core import discovery
from dotflow_core._version import __version__
from dotflow_core.cli._common import EXIT_OK, EXIT_USAGE, CliError, error_line
from dotflow_core.hooks import specs
from dotflow_core.hooks.markers import ENTRY_POINT_GROUP, PROJECT_NAME

#: Lowercase, starts with a letter, ends with a letter or digit (a valid distribution name).
NAME_PATTERN = re.compile(r"^[a-z](?:[a-z0-9_-]*[a-z0-9])?$")
#: Names the selection rules give a meaning of their own.
RESERVED_NAMES = frozenset({"none"})

#: What a provider does in each hook; a test checks every spec has an entry.
GUIDANCE: dict[str, str] = {
    "configure": (
        "Read your settings here: settings.lookup('url', env='{ENV}_URL', section='{name}') "
        "for plain values, settings.secret('token', env='{ENV}_TOKEN', section='{name}') for "
        "secrets (environment or a 0600 file, never the project file). Raise "
        "ConfigurationError with a one-line message naming the bad setting to stop the run "
        "before any task starts ('dotflow start' exits with code 2)."
    ),
    "create_workflow": (
        "Register the workflow where you report (a server, a database, a file). Keep hooks "
        "fast: queue the record and deliver it from a thread of your own if the destination "
        "is remote."
    ),
    "update_workflow": (
        "Record the start (status In progress) and, at the end, the final status, duration "
        "and task counts."
    ),
    "create_task": "Register the task (status Not started) under task.workflow_id.",
    "update_task": (
        "Record the task's new status, errors and contexts. This runs on several threads "
        "(and for tasks of worker processes): guard shared state with a lock and never block "
        "for long."
    ),
    "get_next_task_id": (
        "Return the next free task id of this workflow when your destination knows it (e.g. "
        "1 + the highest task id stored; reserve ids for run_id if several runs may share "
        "the workflow id), else None for 'no opinion'. Raise "
        "ConfigurationError only in a strict mode where guessing is worse than stopping."
    ),
    "flush": (
        "Deliver everything still queued for workflow_id and return by the deadline: timeout "
        "seconds, or your own configured deadline when it is None."
    ),
    "run_link": (
        "Return the URL of the run's page where you report (e.g. a dashboard), or None; "
        "'dotflow start' prints it as its last line. Answer from what you already know, "
        "without blocking."
    ),
    "shutdown": (
        "Deliver or persist what is left, then release connections and threads. It may be "
        "called more than once: make it idempotent."
    ),
}


def run(options: argparse.Namespace) -> int:
    """Create ``./dotflow-server-NAME/``; returns the exit code."""
    name = options.name
    try:
        check_not_installed(check_name(name))
        target = scaffold(name, Path.cwd())
    except CliError as error:
        sys.stderr.write(error_line(str(error)))
        return EXIT_USAGE
    files = sorted(path.relative_to(target.parent) for path in target.rglob("*") if path.is_file())
    sys.stdout.write(
        f"created {target.name}/ (distribution {target.name}, entry point {name!r} "
        f"in {ENTRY_POINT_GROUP}):\n" + "".join(f"  {path}\n" for path in files) + "next:\n"
        f"  pip install -e ./{target.name}\n"
        f"  dotflow providers\n"
        f"  dotflow start --provider {name} --step flow.extract\n"
        f"  pytest {target.name}/tests\n"
    )
    return EXIT_OK


def check_name(name: str) -> str:
    """The provider name, checked; :raises CliError: it is not usable."""
    if not NAME_PATTERN.match(name):
        raise CliError(
            f"provider name {name!r} is not valid; use lowercase letters, digits, '-' and '_', "
            f"starting with a letter and ending with a letter or digit (e.g. 'audit', "
            f"'my-store')"
        )
    if name in RESERVED_NAMES:
        raise CliError(f"provider name {name!r} is reserved (it selects no provider)")
    return name


def check_not_installed(name: str) -> None:
    """:raises CliError: installing the generated package would clash with an installed one.

    It would either offer a provider name already taken (neither would load) or,
    with the same distribution name, replace the installed provider.
    """
    from importlib import metadata

    distribution = f"dotflow-server-{name}"
    installed: str | None
    try:
        installed = f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        installed = next(
            (
                str(entry.distribution)
                for entry in discovery.entry_points(ENTRY_POINT_GROUP)
                if entry.name == name
            ),
            None,
        )
    if installed is not None:
        raise CliError(
            f"a provider named {name!r} is already installed ({installed}); installing this "
            f"package would replace it or clash with it: choose another name"
        )


def scaffold(name: str, parent: Path) -> Path:
    """Write the package into ``parent/dotflow-server-NAME`` (all or nothing) and return it.

    :raises CliError: the name is invalid or the directory exists.
    """
    check_name(name)
    target = parent / f"dotflow-server-{name}"
    if target.exists():
        raise CliError(f"{str(target)!r} already exists; remove it or choose another provider name")
    files = render(name)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=parent))
    try:
        for relative, content in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def render(name: str) -> dict[str, str]:
    """The files of the package for provider ``name``, by relative path."""
    module = "dotflow_server_" + name.replace("-", "_")
    class_name = "".join(part.capitalize() for part in re.split(r"[-_]", name)) + "Provider"
    values = {
        "name": name,
        "module": module,
        "class_name": class_name,
        "distribution": f"dotflow-server-{name}",
        "core": __version__,
        "group": ENTRY_POINT_GROUP,
    }
    return {
        "pyproject.toml": _PYPROJECT.format(**values),
        "README.md": _README.format(**values),
        f"src/{module}/__init__.py": render_module(name, module, class_name),
        f"src/{module}/py.typed": "",
        f"tests/test_{module}.py": _TEST.format(**values),
    }


def hook_specs() -> list[Callable[..., Any]]:
    """The hook specifications, in the order the specs module defines them."""
    marker = f"{PROJECT_NAME}_spec"
    return [
        value
        for value in vars(specs).values()
        if inspect.isfunction(value) and hasattr(value, marker)
    ]


def render_module(name: str, module: str, class_name: str) -> str:
    """The provider module: a class with one do-nothing ``@hookimpl`` per hook spec."""
    hooks = hook_specs()
    imported = sorted({"hookimpl", *_annotation_names(hooks)}, key=_isort_key)
    imports = _imports(imported)
    methods = "\n\n".join(_render_hook(hook, name) for hook in hooks)
    return _MODULE.format(
        name=name,
        module=module,
        class_name=class_name,
        imports=imports,
        methods=methods,
        group=ENTRY_POINT_GROUP,
    )


def _annotation_names(hooks: list[Callable[..., Any]]) -> set[str]:
    names: set[str] = set()
    for hook in hooks:
        signature = inspect.signature(hook)
        annotations = [p.annotation for p in signature.parameters.values()]
        annotations.append(signature.return_annotation)
        for annotation in annotations:
            names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _annotation_text(annotation)))
    return {n for n in names if n != "None" and not hasattr(builtins, n)}


def _annotation_text(annotation: Any) -> str:
    """An annotation as source text (the specs use postponed, i.e. string, annotations)."""
    if annotation is inspect.Signature.empty:
        return "Any"
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _imports(names: list[str]) -> str:
    """Import lines for the names the hook signatures use: from dotflow_core when public."""
    import dotflow_core

    public = set(dotflow_core.__all__)
    by_module: dict[str, list[str]] = {}
    for name in names:
        if name in public:
            by_module.setdefault("dotflow_core", []).append(name)
        else:
            origin = getattr(vars(specs).get(name), "__module__", None) or specs.__name__
            by_module.setdefault(origin, []).append(name)
    return "\n".join(
        f"from {module} import {', '.join(items)}" for module, items in sorted(by_module.items())
    )


def _isort_key(name: str) -> tuple[int, str]:
    """isort's order-by-type: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def _paragraphs(doc: str) -> list[str]:
    """The docstring's paragraphs on one line each, Sphinx roles turned into plain code."""
    plain = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", doc).replace("``", "`")
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", plain.strip()) if p.strip()]


def _comment(text: str) -> str:
    """Comment lines that keep the generated module within 88 columns."""
    return "\n".join(f"        # {line}" for line in textwrap.wrap(text, width=78))


def _render_hook(hook: Callable[..., Any], provider: str) -> str:
    signature = inspect.signature(hook)
    parameters = ", ".join(
        f"{p.name}: {_annotation_text(p.annotation)}" for p in signature.parameters.values()
    )
    returns = _annotation_text(signature.return_annotation)
    paragraphs = [p for p in _paragraphs(inspect.getdoc(hook) or "") if not p.startswith(":")]
    summary = paragraphs[0] if paragraphs else f"The {hook.__name__} hook."
    when = next((p for p in paragraphs[1:] if p.startswith("Fires")), None)
    if when is None and len(paragraphs) > 1:
        when = paragraphs[1]
    env = "DOTFLOW_" + provider.upper().replace("-", "_")  # the prefix the kit isolates
    guidance = GUIDANCE.get(
        hook.__name__, f"see the {hook.__name__} specification in {specs.__name__}."
    ).format(name=provider, ENV=env)
    body = [f'        """{summary}"""']
    if when:
        body.append(_comment(when if when.startswith("Fires") else f"When: {when}"))
    body.append(_comment(f"What to do: {guidance[:1].lower()}{guidance[1:]}"))
    if returns != "None":
        body.append("        return None")
    return (
        f"    @hookimpl\n    def {hook.__name__}(self, {parameters}) -> {returns}:\n"
        + "\n".join(body)
    )


_MODULE = '''\
"""The ``{name}`` dotflow server provider.

Installed as the entry point ``{name}`` in the ``{group}`` group (see
pyproject.toml), so ``dotflow start --provider {name}`` activates it and
``dotflow providers`` lists it. Every hook of the dotflow contract is below,
doing nothing yet: fill in the ones you need and delete the others (a hook
you leave out costs nothing). Hooks may be called from several threads, so
guard any state you keep. Log on ``logging.getLogger("dotflow.server.{name}")``;
never print.
"""

from __future__ import annotations

{imports}

__all__ = ["{class_name}", "provider"]


class {class_name}:
    """Reports dotflow workflows and tasks to ... (say where)."""

{methods}


#: The plugin object the ``{name}`` entry point names.
provider = {class_name}()
'''

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "0.1.0"
description = "A dotflow server provider: {name}."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["dotflow-core>={core}"]

[project.optional-dependencies]
test = ["pytest"]

# The entry point makes the provider visible to dotflow: name = "module:object".
[project.entry-points."{group}"]
{name} = "{module}:provider"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
{module} = ["py.typed"]

[tool.ruff]
line-length = 100
"""

_README = """\
# {distribution}

A [dotflow](https://pypi.org/project/dotflow-core/) server provider: every
workflow and task event of a `dotflow` run reaches the hooks in
`src/{module}/__init__.py`.

## Try it

```sh
pip install -e ./{distribution}
dotflow providers                                  # {name} is listed
dotflow start --provider {name} --step flow.extract
```

Select it without the flag with `DOTFLOW_PROVIDER={name}`, or in the project's
`pyproject.toml`:

```toml
[tool.dotflow]
provider = "{name}"

[tool.dotflow.{name}]
url = "https://example.invalid"   # read in configure() with settings.lookup(...)
```

Secrets never go in that file: read them with `settings.secret(...)` from an
environment variable or a file only its owner can read (mode 0600).

## Develop it

Each hook says when it fires and what to do there. Fill in the ones you need
and delete the others. Then:

```sh
pip install -e './{distribution}[test]'
pytest {distribution}/tests
```

The tests run dotflow-core's contract kit (`dotflow_core.testing.ProviderContract`):
hook signatures, every record accepted, `get_next_task_id` answers, a real run
in every execution mode. Once your provider delivers somewhere, override
`delivered_state()` in the test so the kit also checks that everything arrived.
"""

_TEST = '''\
"""dotflow-core's provider contract, run against the {name} provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from dotflow_core import installed_providers
from dotflow_core.testing import ProviderContract, isolate_environment

from {module} import {class_name}, provider


class Test{class_name}(ProviderContract):
    @pytest.fixture(autouse=True)
    def private_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        # None of your DOTFLOW_*/SERVER_* variables; user_dir() is a temporary directory.
        isolate_environment(monkeypatch, tmp_path / "home")

    def make_provider(self) -> object:
        return {class_name}()

    # Once the provider delivers somewhere, read back what arrived so the kit checks
    # that delivery is complete after flush:
    #
    # def delivered_state(self, provider, workflow_id):
    #     return {{"status": <workflow status>, "tasks": {{task_id: <task status>}}}}


def test_the_entry_point_names_this_provider() -> None:
    installed = installed_providers()
    assert "{name}" in installed, "install the package first: pip install -e ."
    assert installed["{name}"].entry_point.load() is provider
'''
