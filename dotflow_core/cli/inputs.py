"""What ``dotflow start`` makes of its arguments: the initial context, steps and a factory.

Each function turns one command-line value into what the engine takes, or
raises a one-line error naming the value and what would be valid (exit 2,
before anything runs).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dotflow_core.cli._common import CliError
from dotflow_core.engine.action import Action
from dotflow_core.engine.steps import import_object, resolve_step
from dotflow_core.errors import InvalidStepError

#: The largest ``--initial-context @FILE`` read (bytes): a context is a parameter,
#: not the data; a step reads big inputs from the path it is given.
MAX_INITIAL_CONTEXT_BYTES = 64 * 1024 * 1024
#: Text that starts like this is meant as JSON: invalid, it is an error, not a string.
_JSON_OPENERS = ("{", "[", '"')


def parse_initial_context(value: str | None) -> Any:
    """The ``--initial-context`` value: JSON text, ``@path`` to a file, or plain text.

    JSON is parsed (``-i 3`` is the number 3, ``-i '{"rows": 10}'`` a dict); text
    that is not JSON is passed as the string it is, as dotflow does (``-i abc``).
    Text that looks like JSON (it starts with ``{``, ``[`` or ``"``) but does not
    parse is an error, so that a typo is not silently a string. A file's content
    follows the same rules.

    :raises CliError: the file cannot be read, is larger than
        :data:`MAX_INITIAL_CONTEXT_BYTES`, or holds broken or too deeply nested JSON.
    """
    if value is None:
        return None
    origin = "--initial-context"
    text = value
    if value.startswith("@"):
        origin = f"--initial-context {value}"
        text = _read_context_file(value[1:], origin)
    try:
        return json.loads(text)
    except RecursionError:
        raise CliError(
            f"{origin}: the JSON is nested too deeply to parse (deeper than Python's "
            f"recursion limit of {sys.getrecursionlimit()}); flatten it"
        ) from None
    except json.JSONDecodeError as error:
        if not text.lstrip().startswith(_JSON_OPENERS):
            return text
        raise CliError(
            f"{origin}: invalid JSON at line {error.lineno} column {error.colno} "
            f"(offset {error.pos}): {error.msg}; pass JSON such as '{{\"rows\": 10}}' or "
            f"'\"text\"', plain text, or @file"
        ) from None


def _read_context_file(name: str, origin: str) -> str:
    if not name:
        raise CliError(f"{origin}: no file name after '@'; use @path/to/context.json")
    path = Path(name).expanduser()
    limit = MAX_INITIAL_CONTEXT_BYTES
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)  # never more: '@/dev/zero' must not fill memory
    except OSError as error:
        raise CliError(f"{origin}: cannot read {str(path)!r}: {error.strerror}") from None
    if len(data) > limit:
        raise CliError(
            f"{origin}: {str(path)!r} is larger than {limit // (1024 * 1024)} MiB, the most "
            f"an initial context may hold; pass its path instead and read it in the step"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CliError(f"{origin}: {str(path)!r} is not UTF-8 text: {error.reason}") from None


def importable_here() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` would."""
    here = os.getcwd()
    if not sys.path or sys.path[0] not in (here, ""):
        sys.path.insert(0, here)


def resolve_steps(steps: Sequence[tuple[str, str]]) -> list[tuple[str, Action]]:
    """Import every ``--step`` (``(group, path)``) before anything runs.

    :raises InvalidStepError: a step cannot be imported or lacks ``@action``.
    """
    importable_here()
    return [(group, resolve_step(path)) for group, path in steps]


def resolve_factory(path: str) -> Callable[[], Any]:
    """The ``--workflow module:factory`` function (imported from the current directory first).

    :raises InvalidStepError: it cannot be imported or is not callable.
    """
    importable_here()
    factory: object = import_object(path, "--workflow")
    if not callable(factory) or isinstance(factory, Action):
        raise InvalidStepError(
            f"--workflow {path!r} is not a function returning a DotFlow (got "
            f"{type(factory).__name__}); pass e.g. 'flows:nightly' where "
            f"'def nightly() -> DotFlow' builds the workflow without starting it"
        )
    return factory
