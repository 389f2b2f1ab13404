"""Everything a provider (or a contributed ``dotflow`` command) imports from the core.

Provider authors import from here, from :mod:`dotflow_core` and from the
contract kit :mod:`dotflow_core.testing`; every other module of dotflow-core is
internal and may change without notice. Names are imported on first use
(PEP 562), so ``import dotflow_core.plugin`` is cheap, and a provider that
never builds a command line never imports ``argparse``.

- the hook contract: :data:`hookimpl`, the records and statuses, the
  entry-point groups, :data:`INITIAL_TASK_ID` / :data:`MAX_TASK_ID`;
- settings: :class:`Settings`, :class:`Secret`, :func:`read_secret_file`,
  :func:`parse_flag` with :data:`FLAG_CHOICES` (what its error message should say
  is valid), :func:`user_dir` and :data:`HOME_ENV`;
- turning values into JSON: :func:`to_json_safe`, :func:`record_to_dict`,
  :func:`capped_repr`, and the bounded walk behind them (:class:`JsonSafe`,
  :data:`DEFAULT_MAX_BYTES`, :func:`json_size`);
- messages: :func:`one_line`, :func:`warn_once` (one WARNING per process;
  :func:`forget_warnings` for tests);
- checks: :func:`is_strict_int`;
- threads: :class:`DaemonCall` (work on a daemon thread, waited for up to a
  deadline and abandoned past it, as a step's ``timeout`` is);
- commands: :class:`CommandParser` (argparse with the CLI's one-line usage
  errors and exit code 2), :func:`error_line`, the exit codes;
- strict delivery: :class:`UndeliveredEventsError` (what ``shutdown`` raises when
  events were dropped or left undelivered), :data:`EXIT_UNDELIVERED`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dotflow_core.cli import CommandParser
    from dotflow_core.cli._common import (
        EXIT_OK,
        EXIT_TASK_FAILED,
        EXIT_UNDELIVERED,
        EXIT_USAGE,
        error_line,
    )
    from dotflow_core.errors import ConfigurationError, UndeliveredEventsError
    from dotflow_core.groups import (
        AUTO_ENTRY_POINT_GROUP,
        COMMAND_ENTRY_POINT_GROUP,
        ENTRY_POINT_GROUP,
    )
    from dotflow_core.hooks.markers import hookimpl
    from dotflow_core.hooks.records import (
        INITIAL_TASK_ID,
        MAX_TASK_ID,
        TaskError,
        TaskRecord,
        TaskStatus,
        WorkflowRecord,
        WorkflowStatus,
        is_strict_int,
    )
    from dotflow_core.messages import forget_warnings, one_line, warn_once
    from dotflow_core.serialize import (
        DEFAULT_MAX_BYTES,
        REPR_LIMIT,
        JsonSafe,
        capped_repr,
        json_size,
        record_to_dict,
        to_json_safe,
    )
    from dotflow_core.settings import (
        FLAG_CHOICES,
        HOME_ENV,
        Secret,
        Settings,
        parse_flag,
        read_secret_file,
        user_dir,
    )
    from dotflow_core.threads import DaemonCall

#: Where each name lives; imported when first accessed.
_LAZY: dict[str, str] = {
    "CommandParser": "dotflow_core.cli",
    "EXIT_OK": "dotflow_core.cli._common",
    "EXIT_TASK_FAILED": "dotflow_core.cli._common",
    "EXIT_UNDELIVERED": "dotflow_core.cli._common",
    "EXIT_USAGE": "dotflow_core.cli._common",
    "error_line": "dotflow_core.cli._common",
    "ConfigurationError": "dotflow_core.errors",
    "UndeliveredEventsError": "dotflow_core.errors",
    "AUTO_ENTRY_POINT_GROUP": "dotflow_core.groups",
    "COMMAND_ENTRY_POINT_GROUP": "dotflow_core.groups",
    "ENTRY_POINT_GROUP": "dotflow_core.groups",
    "hookimpl": "dotflow_core.hooks.markers",
    "INITIAL_TASK_ID": "dotflow_core.hooks.records",
    "MAX_TASK_ID": "dotflow_core.hooks.records",
    "TaskError": "dotflow_core.hooks.records",
    "TaskRecord": "dotflow_core.hooks.records",
    "TaskStatus": "dotflow_core.hooks.records",
    "WorkflowRecord": "dotflow_core.hooks.records",
    "WorkflowStatus": "dotflow_core.hooks.records",
    "is_strict_int": "dotflow_core.hooks.records",
    "forget_warnings": "dotflow_core.messages",
    "one_line": "dotflow_core.messages",
    "warn_once": "dotflow_core.messages",
    "DEFAULT_MAX_BYTES": "dotflow_core.serialize",
    "JsonSafe": "dotflow_core.serialize",
    "json_size": "dotflow_core.serialize",
    "REPR_LIMIT": "dotflow_core.serialize",
    "capped_repr": "dotflow_core.serialize",
    "record_to_dict": "dotflow_core.serialize",
    "to_json_safe": "dotflow_core.serialize",
    "FLAG_CHOICES": "dotflow_core.settings",
    "HOME_ENV": "dotflow_core.settings",
    "Secret": "dotflow_core.settings",
    "Settings": "dotflow_core.settings",
    "parse_flag": "dotflow_core.settings",
    "read_secret_file": "dotflow_core.settings",
    "user_dir": "dotflow_core.settings",
    "DaemonCall": "dotflow_core.threads",
}

__all__ = [
    "AUTO_ENTRY_POINT_GROUP",
    "COMMAND_ENTRY_POINT_GROUP",
    "DEFAULT_MAX_BYTES",
    "ENTRY_POINT_GROUP",
    "EXIT_OK",
    "EXIT_TASK_FAILED",
    "EXIT_UNDELIVERED",
    "EXIT_USAGE",
    "FLAG_CHOICES",
    "HOME_ENV",
    "INITIAL_TASK_ID",
    "MAX_TASK_ID",
    "REPR_LIMIT",
    "CommandParser",
    "ConfigurationError",
    "DaemonCall",
    "JsonSafe",
    "Secret",
    "Settings",
    "TaskError",
    "TaskRecord",
    "TaskStatus",
    "UndeliveredEventsError",
    "WorkflowRecord",
    "WorkflowStatus",
    "capped_repr",
    "error_line",
    "forget_warnings",
    "hookimpl",
    "is_strict_int",
    "json_size",
    "one_line",
    "parse_flag",
    "read_secret_file",
    "record_to_dict",
    "to_json_safe",
    "user_dir",
    "warn_once",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dotflow_core.plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
