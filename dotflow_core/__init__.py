"""dotflow-core: a slim workflow engine that reports every event to pluggable providers.

Public API::

    from dotflow_core import DotFlow, action, Context, hookimpl
"""

from dotflow_core._version import __version__
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
    TaskError,
    TaskRecord,
    TaskStatus,
    WorkflowRecord,
    WorkflowStatus,
    hookimpl,
)
from dotflow_core.manager import ProviderManager, installed_providers
from dotflow_core.settings import Secret, Settings, read_secret_file, user_dir

__all__ = [
    "ENTRY_POINT_GROUP",
    "INITIAL_TASK_ID",
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
    "UnknownProviderError",
    "WorkflowRecord",
    "WorkflowStateError",
    "WorkflowStatus",
    "__version__",
    "action",
    "hookimpl",
    "installed_providers",
    "read_secret_file",
    "user_dir",
]
