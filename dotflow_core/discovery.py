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
from typing import TYPE_CHECKING

from dotflow_core.groups import AUTO_ENTRY_POINT_GROUP, COMMAND_ENTRY_POINT_GROUP, ENTRY_POINT_GROUP

if TYPE_CHECKING:
    from collections.abc import Mapping
    from importlib.metadata import EntryPoint

__all__ = [
    "AUTO_ENTRY_POINT_GROUP",
    "COMMAND_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "AutoRule",
    "InstalledEntryPoint",
    "auto_rules",
    "contributed_commands",
    "entry_points",
    "installed_providers",
    "parse_auto_rule",
    "rescan",
]


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


@dataclass(frozen=True)
class AutoRule:
    """One way a provider asks to be selected automatically: every variable set.

    Declared in the provider's package metadata, one entry point per rule in the
    ``dotflow.server.auto`` group: name ``<provider>`` or ``<provider>.<label>``,
    value the variables joined by dots (``"SERVER_BASE_URL.SERVER_USER_TOKEN"``).
    A variable counts as set when its value is not blank.
    """

    provider: str
    variables: tuple[str, ...]

    def met(self, environ: Mapping[str, str]) -> bool:
        return not self.missing(environ)

    def missing(self, environ: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(name for name in self.variables if not environ.get(name, "").strip())

    def partly_met(self, environ: Mapping[str, str]) -> bool:
        return 0 < len(self.missing(environ)) < len(self.variables)


def parse_auto_rule(name: str, value: str) -> AutoRule | None:
    """The rule an entry point of the ``dotflow.server.auto`` group declares; None if malformed."""
    provider = name.split(".", 1)[0].strip()
    variables = tuple(part.strip() for part in value.split("."))
    if not provider or not variables or not all(part.isidentifier() for part in variables):
        return None
    return AutoRule(provider, variables)


def entry_points(group: str) -> tuple[InstalledEntryPoint, ...]:
    """Every entry point of ``group``, one per distinct (name, target), sorted by name."""
    return _scan().get(group, ())


def rescan() -> None:
    """Forget what was read, so that the next lookup reads the metadata again."""
    _scan.cache_clear()


@functools.cache
def _scan() -> dict[str, tuple[InstalledEntryPoint, ...]]:
    """Every dotflow group, read in one pass over the installed distributions.

    Every pass opens the metadata of every distribution on ``sys.path``; ``dotflow
    start`` needs all the groups, so it pays for one pass, not three.
    """
    from importlib import metadata

    everything = metadata.entry_points()
    return {
        group: _distinct(everything.select(group=group))
        for group in (ENTRY_POINT_GROUP, COMMAND_ENTRY_POINT_GROUP, AUTO_ENTRY_POINT_GROUP)
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


def auto_rules() -> tuple[AutoRule, ...]:
    """The auto-selection rules installed providers declare (group ``dotflow.server.auto``).

    Read from metadata only: a provider's module is imported when it is selected,
    never to learn whether it should be. A malformed declaration is ignored with a
    warning naming it.
    """
    rules = []
    for entry in entry_points(AUTO_ENTRY_POINT_GROUP):
        rule = parse_auto_rule(entry.name, entry.entry_point.value)
        if rule is None:
            import logging

            from dotflow_core.messages import warn_once

            warn_once(
                logging.getLogger("dotflow.providers"),
                "%s entry point %r = %r (from %s) is ignored: expected the names of environment "
                "variables joined by dots, e.g. 'SERVER_BASE_URL.SERVER_USER_TOKEN'",
                AUTO_ENTRY_POINT_GROUP,
                entry.name,
                entry.entry_point.value,
                entry.distribution or "?",
            )
            continue
        rules.append(rule)
    return tuple(rules)
