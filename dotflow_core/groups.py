"""The entry-point groups through which installed packages extend dotflow-core.

A leaf module (it imports nothing), so that the hook contract, discovery and
the CLI can all name the groups without importing each other.
"""

from __future__ import annotations

from typing import Final

#: Installed providers: entry-point name = provider name, value = ``module:plugin``.
ENTRY_POINT_GROUP: Final = "dotflow.server"

#: Installed packages add ``dotflow`` subcommands here. Entry-point name =
#: subcommand; value = ``module:function`` taking ``argv`` (list of str) and
#: returning an exit code. Imported only when that subcommand runs.
COMMAND_ENTRY_POINT_GROUP: Final = "dotflow.commands"

#: A provider declares here when it should be selected automatically (the
#: ``auto`` rule of :mod:`dotflow_core.selection`), without being imported to
#: find out. Entry-point name = the provider's name in :data:`ENTRY_POINT_GROUP`
#: (or ``<name>.<label>`` for a second rule); value = the environment variables
#: that must all be set, joined by dots: ``"SERVER_BASE_URL.SERVER_USER_TOKEN"``.
AUTO_ENTRY_POINT_GROUP: Final = "dotflow.server.auto"
