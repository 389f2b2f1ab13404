"""Markers that tie hook specifications and implementations to the ``dotflow`` project.

Providers decorate their hook functions with :data:`hookimpl`::

    from dotflow_core import hookimpl

    class MyProvider:
        @hookimpl
        def update_task(self, task):
            ...
"""

from __future__ import annotations

from typing import Final

import pluggy

from dotflow_core.groups import COMMAND_ENTRY_POINT_GROUP, ENTRY_POINT_GROUP

#: The pluggy project name; every marker and manager of dotflow uses it.
PROJECT_NAME: Final = "dotflow"

#: Marks the hook specifications in :mod:`dotflow_core.hooks.specs`.
hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)

#: Marks a provider's hook implementations.
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "COMMAND_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "hookimpl",
    "hookspec",
]
