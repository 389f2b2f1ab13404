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

#: The pluggy project name; every marker and manager of dotflow uses it.
PROJECT_NAME: Final = "dotflow"

#: The entry-point group under which installed providers are found.
ENTRY_POINT_GROUP: Final = "dotflow.server"

#: The entry-point group through which installed packages add ``dotflow`` subcommands.
#: Entry-point name = subcommand; value = ``module:function`` taking ``argv`` (list of
#: str) and returning an exit code. Imported only when that subcommand runs.
COMMAND_ENTRY_POINT_GROUP: Final = "dotflow.commands"

#: Marks the hook specifications in :mod:`dotflow_core.hooks.specs`.
hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)

#: Marks a provider's hook implementations.
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)
