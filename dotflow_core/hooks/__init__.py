"""The hook contract: markers, specifications and the records passed to hooks.

Everything a provider author needs is importable from :mod:`dotflow_core`;
this package is where it is defined.
"""

from dotflow_core.hooks.markers import (
    COMMAND_ENTRY_POINT_GROUP,
    ENTRY_POINT_GROUP,
    PROJECT_NAME,
    hookimpl,
    hookspec,
)
from dotflow_core.hooks.records import (
    INITIAL_TASK_ID,
    MAX_TASK_ID,
    TaskError,
    TaskRecord,
    TaskStatus,
    WorkflowRecord,
    WorkflowStatus,
)

__all__ = [
    "COMMAND_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "INITIAL_TASK_ID",
    "MAX_TASK_ID",
    "PROJECT_NAME",
    "TaskError",
    "TaskRecord",
    "TaskStatus",
    "WorkflowRecord",
    "WorkflowStatus",
    "hookimpl",
    "hookspec",
]
