"""dotflow-core: a slim workflow engine that reports every event to pluggable providers.

Public API::

    from dotflow_core import DotFlow, action, Context, hookimpl

The names below are imported on first use (PEP 562), so that ``import
dotflow_core`` stays cheap: the ``dotflow`` command's ``--help`` and
``--version`` must not pay for pluggy, attrs and the engine.

The public namespaces are this package, :mod:`dotflow_core.plugin` (for
provider and command authors) and :mod:`dotflow_core.testing` (the provider
contract kit). Every other module is internal and may change in any release.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dotflow_core._version import __version__

if TYPE_CHECKING:
    from dotflow_core.discovery import installed_providers
    from dotflow_core.engine.action import Action, action
    from dotflow_core.engine.context import Context
    from dotflow_core.engine.task import Task, TaskBuilder
    from dotflow_core.engine.workflow import DotFlow
    from dotflow_core.errors import (
        ConfigurationError,
        DotFlowError,
        InvalidStepError,
        ProviderLoadError,
        StepTimeoutError,
        UnknownProviderError,
        WorkflowStateError,
    )
    from dotflow_core.hooks import (
        ENTRY_POINT_GROUP,
        INITIAL_TASK_ID,
        MAX_TASK_ID,
        TaskError,
        TaskRecord,
        TaskStatus,
        WorkflowRecord,
        WorkflowStatus,
        hookimpl,
    )
    from dotflow_core.manager import ProviderManager
    from dotflow_core.settings import Secret, Settings, parse_flag, read_secret_file, user_dir

#: Where each public name lives; imported when first accessed.
_LAZY: dict[str, str] = {
    "Action": "dotflow_core.engine.action",
    "action": "dotflow_core.engine.action",
    "Context": "dotflow_core.engine.context",
    "Task": "dotflow_core.engine.task",
    "TaskBuilder": "dotflow_core.engine.task",
    "DotFlow": "dotflow_core.engine.workflow",
    "ConfigurationError": "dotflow_core.errors",
    "DotFlowError": "dotflow_core.errors",
    "InvalidStepError": "dotflow_core.errors",
    "ProviderLoadError": "dotflow_core.errors",
    "StepTimeoutError": "dotflow_core.errors",
    "UnknownProviderError": "dotflow_core.errors",
    "UndeliveredEventsError": "dotflow_core.errors",
    "WorkflowStateError": "dotflow_core.errors",
    "ENTRY_POINT_GROUP": "dotflow_core.hooks",
    "INITIAL_TASK_ID": "dotflow_core.hooks",
    "MAX_TASK_ID": "dotflow_core.hooks",
    "TaskError": "dotflow_core.hooks",
    "TaskRecord": "dotflow_core.hooks",
    "TaskStatus": "dotflow_core.hooks",
    "WorkflowRecord": "dotflow_core.hooks",
    "WorkflowStatus": "dotflow_core.hooks",
    "hookimpl": "dotflow_core.hooks",
    "ProviderManager": "dotflow_core.manager",
    "installed_providers": "dotflow_core.discovery",
    "Secret": "dotflow_core.settings",
    "Settings": "dotflow_core.settings",
    "parse_flag": "dotflow_core.settings",
    "read_secret_file": "dotflow_core.settings",
    "user_dir": "dotflow_core.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dotflow_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ENTRY_POINT_GROUP",
    "INITIAL_TASK_ID",
    "MAX_TASK_ID",
    "Action",
    "ConfigurationError",
    "Context",
    "DotFlow",
    "DotFlowError",
    "InvalidStepError",
    "ProviderLoadError",
    "ProviderManager",
    "Secret",
    "Settings",
    "StepTimeoutError",
    "Task",
    "TaskBuilder",
    "TaskError",
    "TaskRecord",
    "TaskStatus",
    "UndeliveredEventsError",
    "UnknownProviderError",
    "WorkflowRecord",
    "WorkflowStateError",
    "WorkflowStatus",
    "__version__",
    "action",
    "hookimpl",
    "installed_providers",
    "parse_flag",
    "read_secret_file",
    "user_dir",
]
