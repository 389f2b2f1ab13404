"""Installed providers and contributed commands, read from package metadata only.

Nothing here imports a provider, pluggy or the engine: ``dotflow --help`` and
``dotflow --version`` must stay fast and must work even when an installed
provider is broken. The group names repeat the constants of
:mod:`dotflow_core.hooks.markers` (importing that module would import
pluggy); a test keeps them equal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata

#: ``dotflow_core.hooks.markers.ENTRY_POINT_GROUP``.
PROVIDER_GROUP = "dotflow.server"
#: ``dotflow_core.hooks.markers.COMMAND_ENTRY_POINT_GROUP``.
COMMAND_GROUP = "dotflow.commands"


@dataclass(frozen=True)
class Contributed:
    """One entry point of a dotflow group and the distribution that offers it."""

    name: str
    entry_point: metadata.EntryPoint
    distribution: str | None
    version: str | None


def _entries(group: str) -> list[Contributed]:
    found: dict[tuple[str, str], Contributed] = {}
    for entry_point in metadata.entry_points(group=group):
        dist = getattr(entry_point, "dist", None)
        key = (entry_point.name, entry_point.value)
        found.setdefault(
            key,
            Contributed(
                name=entry_point.name,
                entry_point=entry_point,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
            ),
        )
    return sorted(found.values(), key=lambda entry: (entry.name, entry.distribution or ""))


@functools.cache
def provider_entry_points() -> list[Contributed]:
    """Every ``dotflow.server`` entry point, by name (one row per distinct target)."""
    return _entries(PROVIDER_GROUP)


@functools.cache
def contributed_commands() -> dict[str, Contributed]:
    """``dotflow.commands`` entry points by subcommand name; the first distribution wins."""
    commands: dict[str, Contributed] = {}
    for entry in _entries(COMMAND_GROUP):
        commands.setdefault(entry.name, entry)
    return commands
