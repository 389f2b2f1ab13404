"""Finding installed providers and contributed commands in package metadata.

Reads entry points only: nothing found here is imported, and this module
imports neither pluggy, attrs nor the engine (``importlib.metadata`` itself is
imported on first use), so ``dotflow --help`` and ``--version`` stay fast and
work even when an installed provider is broken.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

#: The entry-point group under which installed providers are found.
ENTRY_POINT_GROUP: Final = "dotflow.server"

#: The entry-point group through which installed packages add ``dotflow`` subcommands.
#: Entry-point name = subcommand; value = ``module:function`` taking ``argv`` (list of
#: str) and returning an exit code. Imported only when that subcommand runs.
COMMAND_ENTRY_POINT_GROUP: Final = "dotflow.commands"


@dataclass(frozen=True)
class InstalledEntryPoint:
    """An entry point of a dotflow group and the distribution that offers it."""

    name: str
    entry_point: EntryPoint
    distribution: str | None
    version: str | None
    #: Other distributions offering a provider of the same name: it cannot be loaded
    #: until all but one are uninstalled (other providers are not affected).
    also_offered_by: tuple[str | None, ...] = ()


def entry_points(group: str) -> tuple[InstalledEntryPoint, ...]:
    """Every entry point of ``group``, one per distinct (name, target), sorted by name."""
    return _scan().get(group, ())


def rescan() -> None:
    """Forget what was read, so that the next lookup reads the metadata again."""
    _scan.cache_clear()


@functools.cache
def _scan() -> dict[str, tuple[InstalledEntryPoint, ...]]:
    """Both dotflow groups, read in one pass over the installed distributions.

    Every pass opens the metadata of every distribution on ``sys.path``; ``dotflow
    start`` needs both groups, so it pays for one pass, not two.
    """
    from importlib import metadata

    everything = metadata.entry_points()
    return {
        group: _distinct(everything.select(group=group))
        for group in (ENTRY_POINT_GROUP, COMMAND_ENTRY_POINT_GROUP)
    }


def _distinct(found_in_group: Iterable[EntryPoint]) -> tuple[InstalledEntryPoint, ...]:
    found: dict[tuple[str, str], InstalledEntryPoint] = {}
    for entry_point in found_in_group:
        if (entry_point.name, entry_point.value) in found:
            continue
        dist = getattr(entry_point, "dist", None)
        # One parse of the distribution's METADATA for both fields (``dist.version``
        # would parse it again: a few hundred microseconds per entry point).
        metadata = dist.metadata if dist is not None else None
        found[entry_point.name, entry_point.value] = InstalledEntryPoint(
            name=entry_point.name,
            entry_point=entry_point,
            distribution=metadata["Name"] if metadata is not None else None,
            version=metadata["Version"] if metadata is not None else None,
        )
    return tuple(sorted(found.values(), key=lambda entry: (entry.name, entry.distribution or "")))


def installed_providers() -> dict[str, InstalledEntryPoint]:
    """Every provider in the ``dotflow.server`` entry-point group, by name.

    A name that several distributions offer maps to the first by distribution
    name, its ``also_offered_by`` naming the others: loading it is an error
    (:func:`dotflow_core.manager.load_provider`), and no other provider is affected.
    """
    found: dict[str, InstalledEntryPoint] = {}
    for provider in entry_points(ENTRY_POINT_GROUP):
        earlier = found.get(provider.name)
        if earlier is None:
            found[provider.name] = provider
        else:
            found[provider.name] = replace(
                earlier, also_offered_by=(*earlier.also_offered_by, provider.distribution)
            )
    return found


def contributed_commands() -> dict[str, InstalledEntryPoint]:
    """``dotflow.commands`` entry points by subcommand name; the first distribution wins."""
    commands: dict[str, InstalledEntryPoint] = {}
    for entry in entry_points(COMMAND_ENTRY_POINT_GROUP):
        commands.setdefault(entry.name, entry)
    return commands
