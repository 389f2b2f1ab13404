"""``dotflow providers``: what is installed, what is active now and why, what is broken.

Every installed provider is imported and registered in a throwaway manager,
so that an import error or a hook signature that does not match the specs
shows up here, as text, instead of in the middle of a run. The active
providers also get their settings (the ``configure`` hook, which only reads and
checks them), so a setting ``dotflow start`` would refuse (an empty token
file, say) is named here too. This command never fails because of a broken
provider (exit 0); it exits 2 only when the configuration that decides the
selection cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dotflow_core import discovery
from dotflow_core.cli._common import EXIT_OK, EXIT_USAGE, error_line
from dotflow_core.cli.output import Output, route_library_logs
from dotflow_core.errors import ConfigurationError
from dotflow_core.messages import one_line
from dotflow_core.selection import (
    PROVIDER_ENV,
    Selection,
    auto_reason,
    select_providers,
    shown_value,
)
from dotflow_core.settings import Settings


def run(options: argparse.Namespace) -> int:
    """List providers as a table (or ``--json``) on stdout; returns the exit code."""
    route_library_logs(Output("text"), verbosity=0)
    rows: list[dict[str, Any]] = [
        {
            "name": entry.name,
            "distribution": entry.distribution,
            "version": entry.version,
            "entry_point": entry.entry_point.value,
            "active": False,
            "error": load_error(entry.name),
        }
        for entry in discovery.entry_points(discovery.ENTRY_POINT_GROUP)
    ]
    selection: Selection | None = None
    settings: Settings | None = None
    problem: str | None = None
    try:
        settings = Settings.load()
        selection = select_providers(settings, [row["name"] for row in rows])
    except ConfigurationError as error:
        problem = one_line(error)
        sys.stderr.write(error_line(problem))  # not repeated in the table
    names = selection.names if selection else ()
    for row in rows:
        row["active"] = row["name"] in names
    missing = [name for name in names if name not in {row["name"] for row in rows}]
    if missing:
        problem = (
            f"selected provider(s) {', '.join(map(repr, missing))} not installed; "
            f"'dotflow start' would exit with code 2"
        )
    elif settings is not None:
        checked = (load_error(row["name"], settings) for row in rows if row["active"])
        refused = [error for error in checked if error]
        if refused:
            problem = "; ".join(refused) + "; 'dotflow start' would exit with code 2"
    if options.json:
        document: dict[str, Any] = {
            "providers": rows,
            "selection": {
                "names": list(names),
                "source": selection.source if selection else None,
                "reason": _reason(selection, settings) if selection and settings else None,
                "notice": selection.notice if selection else None,
                "error": problem,
            },
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(_table(rows, selection, settings, problem if selection else None))
    return EXIT_USAGE if selection is None else EXIT_OK


def load_error(name: str, settings: Settings | None = None) -> str | None:
    """Why provider ``name`` cannot be activated, or None.

    An import or hook-signature error; with ``settings``, also the provider rejecting
    them in its ``configure`` hook (which only reads and checks them).
    """
    from dotflow_core import manager as manager_module

    # Only checked, never run: no shutdown call at exit.
    checker = manager_module.ProviderManager(shutdown_at_exit=False)
    try:
        checker.add(manager_module.load_provider(name), name=name)
        if settings is not None:
            checker.configure(settings)
    except ConfigurationError as error:
        return one_line(error)
    except Exception as error:  # a provider must never crash this listing
        return f"provider {name!r} failed to load: {type(error).__name__}: {error}"
    return None


def _reason(selection: Selection, settings: Settings) -> str:
    """Why this selection, in words."""
    chosen = ",".join(selection.names) or "none"
    if selection.source == "env":
        return f"{PROVIDER_ENV}={settings.environ.get(PROVIDER_ENV, '').strip()}"
    if selection.source == "config":
        return (
            f"provider = {shown_value(settings.config.get('provider'))} in {settings.config_path}"
        )
    if selection.source == "auto":
        return auto_reason(discovery.auto_rules(), selection, settings.environ)
    if selection.source == "default":
        return (
            f"nothing chosen (--provider, {PROVIDER_ENV}, config file) and 'default' is installed"
        )
    if selection.source == "none":
        return (
            f"nothing chosen (--provider, {PROVIDER_ENV}, config file) and 'default' is not "
            f"installed: events are reported nowhere"
        )
    return f"--provider {chosen}"


def _table(
    rows: list[dict[str, Any]],
    selection: Selection | None,
    settings: Settings | None,
    problem: str | None,
) -> str:
    lines: list[str] = []
    if rows:
        table = [("NAME", "DISTRIBUTION", "VERSION", "STATUS")]
        for row in rows:
            status = "active" if row["active"] else "ok"
            if row["error"]:
                status = f"error: {row['error']}"
            table.append((row["name"], row["distribution"] or "?", row["version"] or "?", status))
        widths = [max(len(line[column]) for line in table) for column in range(3)]
        lines.extend(
            "  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True))
            + "  "
            + line[3]
            for line in table
        )
    else:
        lines.append(
            f"no provider installed (entry-point group {discovery.ENTRY_POINT_GROUP}); "
            f"try: pip install dotflow-server-default"
        )
    lines.append("")
    if selection is not None and settings is not None:
        lines.append(f"active: {selection.describe()}: {_reason(selection, settings)}")
    if selection is not None and selection.notice:
        lines.append(f"notice: {selection.notice}")
    if problem:
        lines.append(f"problem: {problem}")
    return "\n".join(lines) + "\n"
