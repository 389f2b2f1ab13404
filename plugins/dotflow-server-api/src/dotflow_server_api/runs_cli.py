"""``dotflow runs``: the runs the server recorded, and one run's tasks.

``dotflow runs [WORKFLOW_ID]`` (or ``dotflow runs list [WORKFLOW_ID]``) lists a
workflow's runs, newest first; WORKFLOW_ID defaults to the environment's
``WORKFLOW_ID``. ``dotflow runs show RUN_ID`` shows one run's tasks with their status,
retries, duration and the first line of each error. ``--json`` prints the same as
JSON. Settings as in managed mode (see :mod:`dotflow_server_api.runs_api`).

Exit codes: 0 shown; 1 the server could not answer (unknown workflow or run, server
unreachable, an error answer); 2 usage or configuration error (no workflow id, a bad
``SERVER_BASE_URL``, no token, a token the server refuses). Errors are one line on
stderr, ``dotflow: error: <message>``, as the core's commands print them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Final, TextIO

from dotflow_core.plugin import CommandParser, ConfigurationError, Settings, error_line, one_line
from dotflow_server_api.runs_api import EXIT_USAGE, MAX_PAGE, RunsClient, RunsError

#: Where the workflow id comes from when none is given (as for ``dotflow start``).
WORKFLOW_ID_ENV: Final = "WORKFLOW_ID"
#: The longest run id a server takes.
MAX_RUN_ID: Final = 64
DEFAULT_LIMIT: Final = 20


def _limit(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_PAGE}")
    return number


def _run_id(text: str) -> str:
    if not text.strip() or len(text) > MAX_RUN_ID:
        raise argparse.ArgumentTypeError(
            f"{one_line(text, 80)!r} is not a run id: 1 to {MAX_RUN_ID} characters "
            "(dotflow runs WORKFLOW_ID lists them)"
        )
    return text


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    listing = CommandParser(
        prog="dotflow runs",
        description="A workflow's runs on the server, newest first. "
        "'dotflow runs show RUN_ID' shows one run's tasks.",
    )
    listing.add_argument(
        "workflow_id",
        nargs="?",
        metavar="WORKFLOW_ID",
        help=f"the workflow (default: ${WORKFLOW_ID_ENV})",
    )
    listing.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        help=f"show at most this many runs, 1 to {MAX_PAGE} (default {DEFAULT_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = CommandParser(
        prog="dotflow runs show",
        description="One run's tasks: status, retries, duration, the first line of each error.",
    )
    show.add_argument("run_id", type=_run_id, metavar="RUN_ID", help="the run's id")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return listing, show


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dotflow runs [list] [WORKFLOW_ID]`` or ``dotflow runs show RUN_ID``."""
    args = list(sys.argv[1:] if argv is None else argv)
    listing, show = _parsers()
    command = args[0] if args and args[0] in ("list", "show") else "list"
    if args and args[0] in ("list", "show"):
        args = args[1:]
    try:
        arguments = (show if command == "show" else listing).parse_args(args)
    except SystemExit as stop:  # --help, usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        settings = Settings.load()
        if command == "show":
            return _show(settings, arguments.run_id, arguments.json, sys.stdout)
        return _list(settings, arguments.workflow_id, arguments.limit, arguments.json, sys.stdout)
    except ConfigurationError as error:
        sys.stderr.write(error_line(str(error)))
        return EXIT_USAGE
    except RunsError as error:
        sys.stderr.write(error_line(str(error)))
        return error.exit_code


def _client(settings: Settings) -> RunsClient:
    from dotflow_server_api.settings import load_settings

    return RunsClient(load_settings(settings))


def _list(
    settings: Settings, workflow_id: str | None, limit: int, as_json: bool, out: TextIO
) -> int:
    workflow_id = workflow_id or settings.environ.get(WORKFLOW_ID_ENV) or None
    if workflow_id is None:
        raise RunsError(
            f"no workflow id: give one (dotflow runs WORKFLOW_ID) or set {WORKFLOW_ID_ENV}",
            EXIT_USAGE,
        )
    with _client(settings) as client:
        page = client.runs(workflow_id, limit=limit)
    runs = page.get("items") or []
    if as_json:
        out.write(json.dumps({"workflow_id": workflow_id, **page}, indent=2) + "\n")
        return 0
    total = int(page.get("total") or 0)
    if not runs:
        print(
            f"No runs of workflow {workflow_id!r} recorded on {client.config.base_url}.", file=out
        )
        return 0
    shown = f"the {len(runs)} newest of {total}" if total > len(runs) else f"{total}"
    print(f"Runs of workflow {workflow_id!r} ({shown}, newest first):", file=out)
    rows = [
        [
            _text(run.get("run_id")),
            _text(run.get("status")),
            _when(run.get("started_at")),
            _seconds(run.get("duration")),
            _counts(run),
        ]
        for run in runs
    ]
    for line in _lines(
        ["RUN ID", "STATUS", "STARTED", "DURATION", "DONE/FAILED/TASKS"], rows, right={3}
    ):
        print(line, file=out)
    print("\nA run's tasks: dotflow runs show RUN_ID", file=out)
    return 0


def _show(settings: Settings, run_id: str, as_json: bool, out: TextIO) -> int:
    with _client(settings) as client:
        run = client.run(run_id)
        tasks = client.tasks(str(run["workflow_id"]), run_id)
    if as_json:
        slim = [
            {key: value for key, value in task.items() if "context" not in key} for task in tasks
        ]
        out.write(json.dumps({"run": run, "tasks": slim}, indent=2) + "\n")
        return 0
    print(
        f"Run {_text(run_id)} of workflow {run['workflow_id']!r}: {_text(run.get('status'))}, "
        f"{_seconds(run.get('duration'))}, started {_when(run.get('started_at'))}; "
        f"{run.get('completed_count', 0)} done, {run.get('failed_count', 0)} failed, "
        f"{run.get('task_count', 0)} tasks",
        file=out,
    )
    if not tasks:
        print("No tasks of this run are stored.", file=out)
        return 0
    rows = [
        [
            str(task.get("id")),
            _text(task.get("name"), 40),
            _text(task.get("status")),
            str(task.get("retry_count", 0)),
            _seconds(task.get("duration")),
        ]
        for task in tasks
    ]
    lines = _lines(["ID", "NAME", "STATUS", "RETRIES", "DURATION"], rows, right={0, 3, 4})
    indent = " " * (max(len(row[0]) for row in rows) + 2)
    print(lines[0], file=out)
    for task, line in zip(tasks, lines[1:], strict=True):
        print(line, file=out)
        for attempt, text in _errors(task):
            print(f"{indent}attempt {attempt}: {text}", file=out)
    return 0


def _counts(record: dict[str, Any]) -> str:
    """``done/failed/tasks`` of a run."""
    return "/".join(
        str(record.get(key, 0)) for key in ("completed_count", "failed_count", "task_count")
    )


def _errors(task: dict[str, Any]) -> list[tuple[str, str]]:
    """(attempt, ``Type: first line of the message``) of each failed attempt."""
    found = []
    for error in task.get("errors") or []:
        if isinstance(error, dict):
            message = next(
                (line for line in str(error.get("message", "")).splitlines() if line.strip()), ""
            )
            found.append(
                (
                    str(error.get("attempt", "?")),
                    _text(f"{error.get('type', 'Error')}: {message}", 160),
                )
            )
    return found


def _lines(header: list[str], rows: list[list[str]], *, right: set[int]) -> list[str]:
    """The header and rows as lines of columns as wide as their widest cell."""
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    return [
        "  ".join(
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()
        for cells in [header, *rows]
    ]


def _text(value: Any, limit: int = 80) -> str:
    """A value for a table cell: one line, control characters escaped, at most ``limit``."""
    flat = one_line("" if value is None else value, limit)
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in flat)


def _when(value: Any) -> str:
    """An ISO timestamp as ``2026-12-03 08:01:02`` (UTC, as the server sends it)."""
    if not isinstance(value, str) or len(value) < 19:
        return "-"
    return value[:19].replace("T", " ")


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.2f} s" if value < 60 else f"{value / 60:.1f} min"
