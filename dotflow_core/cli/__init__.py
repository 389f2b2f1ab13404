"""The ``dotflow`` command: run workflows from the shell and manage providers.

Only this package prints; the library logs. The module top imports nothing
heavy (no pluggy, no engine, no provider): ``dotflow --help`` and
``dotflow --version`` read package metadata only, and each command imports
what it needs when it runs. Subcommands contributed by other distributions
(entry-point group ``dotflow.commands``) are imported only when invoked.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from dotflow_core import discovery
from dotflow_core._version import __version__
from dotflow_core.cli import process
from dotflow_core.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TASK_FAILED,
    EXIT_TERMINATED,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
    LOG_FORMATS,
    PROG,
    START_MODES,
    CliError,
    error_line,
    interrupted_exit_code,
)

BUILTIN_COMMANDS = ("start", "providers")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dotflow`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    first = arguments[0] if arguments else ""
    builtin = first in BUILTIN_COMMANDS
    _MainParser.json_errors = _asks_for_json(arguments) and builtin
    _MainParser.help_for = f"{PROG} {first}" if builtin else None
    try:
        if first and not first.startswith("-") and not builtin:
            command = discovery.contributed_commands().get(first)
            if command is not None:
                return _run_contributed(command, arguments[1:])
        # A built-in command needs no other command's name: skip reading the metadata.
        parser = build_parser(contributed=not builtin)
        try:
            options = parser.parse_args(arguments)
        except SystemExit as stop:  # --help, --version, usage errors
            return stop.code if isinstance(stop.code, int) else EXIT_USAGE
        if options.handler is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        exit_code = int(options.handler(options))
    except KeyboardInterrupt as interrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return interrupted_exit_code(interrupt)
    return exit_code


def console_main() -> int:
    """The ``dotflow`` executable: :func:`main` in a process it owns (see :mod:`.process`)."""
    with process.owned():
        return main()


def build_parser(*, contributed: bool = True) -> argparse.ArgumentParser:
    """The argument parser; contributed commands appear in ``--help`` (read from metadata).

    ``contributed=False`` leaves them out, for a command line that starts with a
    built-in command.
    """
    parser = _MainParser(
        prog=PROG,
        description="Run dotflow workflows and manage the server providers they report to.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options. Docs: docs/cli.md.",
    )
    parser.add_argument(
        "-V",
        "-v",
        "--version",
        action=_VersionAction,
        help="show the versions of dotflow-core and of every installed provider, then exit",
    )
    parser.set_defaults(handler=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_start(commands)
    _add_providers(commands)
    for name, command in sorted(discovery.contributed_commands().items() if contributed else ()):
        commands.add_parser(
            name,
            help=f"(from {command.distribution or 'an unknown distribution'})",
            add_help=False,
        )
    return parser


def _add_start(commands: Any) -> None:
    start = commands.add_parser(
        "start",
        help="run a workflow made of one or more steps",
        description=(
            "Run the given steps (or the workflow a factory builds) as one workflow, report "
            "every event to the selected providers and show progress on stderr. Exit code: 0 "
            "all tasks completed, 1 a task failed, 2 usage or configuration error (nothing "
            "ran), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
        ),
    )
    source = start.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-s",
        "--step",
        action=_StepAction,
        metavar="MODULE.FUNC",
        help="an @action step ('module.func' or 'module:func'), imported from the current "
        "directory or sys.path; repeat to add more tasks, run in order",
    )
    source.add_argument(
        "-w",
        "--workflow",
        metavar="MODULE:FACTORY",
        help="a function returning a configured DotFlow (not started), run with this "
        "command's providers, mode and exit codes; instead of --step",
    )
    start.add_argument(
        "-g",
        "--group",
        action=_GroupAction,
        dest="groups",
        default=[],
        metavar="NAME",
        help="the steps after it belong to group NAME: groups run concurrently, the steps "
        "of a group in order (default group: 'default')",
    )
    start.add_argument(
        "-n",
        "--name",
        metavar="NAME",
        help="the workflow's name for people and providers (default: the host name)",
    )
    start.add_argument(
        "-p",
        "--provider",
        metavar="NAME[,NAME]",
        help="providers to report to ('none' for no provider); overrides DOTFLOW_PROVIDER, "
        "the config file and the automatic choice",
    )
    start.add_argument(
        "-m",
        "--mode",
        choices=START_MODES,
        default=START_MODES[0],
        help="execution mode (default: %(default)s)",
    )
    start.add_argument(
        "--executor",
        metavar="SPEC",
        help="parallel mode: run the tasks on an executor: dask://HOST:PORT (a Dask "
        "scheduler), dask[:N] (a local Dask cluster for the run), processes[:N] or "
        "threads[:N]; overrides DOTFLOW_EXECUTOR and the config file's executor",
    )
    start.add_argument(
        "-i",
        "--initial-context",
        metavar="JSON|TEXT|@FILE",
        help="the value every step receives as initial_context: JSON, plain text (a string), "
        "or @path to a file holding either (at most 64 MiB)",
    )
    start.add_argument(
        "-c",
        "--callback",
        metavar="MODULE.FUNC",
        help="a function ('module.func' or 'module:func') called as callback(task=task) "
        "after each task ends",
    )
    start.add_argument(
        "--workflow-id",
        metavar="ID",
        help="resume or report under an existing workflow id (default: $WORKFLOW_ID, "
        "else a new UUID)",
    )
    start.add_argument(
        "--keep-going",
        action="store_true",
        help="run the remaining steps after one fails",
    )
    start.add_argument(
        "-q", "--quiet", action="store_true", help="no per-task progress; the summary still shows"
    )
    start.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show library logs at INFO (-v) or DEBUG (-vv) level, and tracebacks (of failed "
        "tasks too)",
    )
    start.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=LOG_FORMATS[0],
        help="text lines, or one JSON object per event (default: %(default)s)",
    )
    start.set_defaults(handler=_lazy("start", "run"))


def _add_providers(commands: Any) -> None:
    providers = commands.add_parser(
        "providers",
        help="list installed providers and the active selection; scaffold a new one",
        description=(
            "List every installed provider (entry-point group dotflow.server), which ones "
            "are active now and why, and any that fail to load."
        ),
    )
    providers.add_argument(
        "--json", action="store_true", help="print a machine-readable JSON document"
    )
    providers.set_defaults(handler=_lazy("providers", "run"))
    actions = providers.add_subparsers(title="actions", metavar="ACTION")
    new = actions.add_parser(
        "new",
        help="scaffold a provider package in ./dotflow-server-NAME/",
        description=(
            "Create ./dotflow-server-NAME/: a pyproject.toml with the entry point, a module "
            "implementing every hook (doing nothing yet), a README and contract tests."
        ),
    )
    new.add_argument("name", metavar="NAME", help="the provider name: lowercase, e.g. 'audit'")
    new.set_defaults(handler=_lazy("scaffold", "run"))


class _StepAction(argparse.Action):
    """``--step PATH``: appends ``(group, PATH)``; the group is the last ``--group`` before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:  # fmt: skip
        groups = getattr(namespace, "groups", None) or []
        steps = [
            *(getattr(namespace, self.dest, None) or []),
            (groups[-1] if groups else "default", values),
        ]
        setattr(namespace, self.dest, steps)


class _GroupAction(argparse.Action):
    """``--group NAME``: the steps that follow belong to NAME."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:  # fmt: skip
        name = str(values).strip()
        if not name:
            parser.error(f"argument -g/--group: {values!r} is not a group name; use e.g. 'reports'")
        namespace.groups = [*(getattr(namespace, "groups", None) or []), name]


def _lazy(module: str, function: str) -> Any:
    """A handler that imports ``dotflow_core.cli.<module>`` only when the command runs."""

    def handler(options: argparse.Namespace) -> int:
        import importlib

        target = importlib.import_module(f"dotflow_core.cli.{module}")
        return int(getattr(target, function)(options))

    return handler


class CommandParser(argparse.ArgumentParser):
    """argparse whose usage errors are the CLI's one error line, and exit code 2.

    Public for commands contributed through ``dotflow.commands``, so that theirs
    read like the built-in ones: ``dotflow: error: <prog>: <problem>; see
    '<prog> --help'``. Subcommand parsers are of this class too (argparse builds
    them with the parent's class). ``json_errors``: the line is an ``error``
    event, for a command line that asks for ``--log-format json``.
    """

    #: Errors as JSON ``error`` events (the core's own parser, for ``--log-format json``).
    json_errors = False
    #: The built-in command a top-level error is about (``dotflow start``): its
    #: ``--help`` is the one to read.
    help_for: str | None = None

    def error(self, message: str) -> NoReturn:
        from dotflow_core.cli.output import JSON, TEXT, Output

        about = self.help_for if self.prog == PROG and self.help_for else self.prog
        text = f"{self.prog}: {message}; see '{about} --help'"
        Output(JSON if self.json_errors else TEXT).error(text, EXIT_USAGE)
        raise SystemExit(EXIT_USAGE)


class _MainParser(CommandParser):
    """The core's own parser: :func:`main` sets ``json_errors`` and ``help_for`` here,
    for one command line, leaving :class:`CommandParser` as contributed commands see it."""


def _asks_for_json(arguments: Sequence[str]) -> bool:
    """Whether the command line asks for ``--log-format json`` (read before parsing it)."""
    return any(
        argument == "--log-format=json" or (argument == "--log-format" and value == "json")
        for argument, value in itertools.pairwise([*arguments, ""])
    )


class _VersionAction(argparse.Action):
    """``--version``: versions from package metadata; nothing is imported."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        lines = [f"dotflow-core {__version__} (Python {sys.version.split()[0]})"]
        docs = _documentation_url()
        if docs:
            lines.append(f"docs: {docs}")
        other = _other_dotflow()
        if other:
            lines.append(
                f"note: {other} is installed here too; both install a 'dotflow' command, so "
                f"one replaces the other's and uninstalling either breaks the other: keep "
                f"them in separate virtualenvs"
            )
        for title, entries in (
            ("providers", discovery.entry_points(discovery.ENTRY_POINT_GROUP)),
            ("commands", list(discovery.contributed_commands().values())),
        ):
            if entries:
                lines.append(f"{title}:")
                width = max(len(entry.name) for entry in entries)
                lines.extend(
                    f"  {entry.name:<{width}}  {entry.distribution or '?'} {entry.version or '?'}"
                    for entry in entries
                )
        sys.stdout.write("\n".join(lines) + "\n")
        parser.exit(EXIT_OK)


def _documentation_url() -> str | None:
    """The ``Documentation`` URL of dotflow-core's package metadata (None when not installed)."""
    from importlib import metadata

    try:
        urls = metadata.metadata("dotflow-core").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = str(entry).partition(",")
        if label.strip().lower() == "documentation":
            return url.strip()
    return None


def _other_dotflow() -> str | None:
    """``dotflow 1.0.1`` when the ``dotflow`` distribution shares this environment, else None."""
    from importlib import metadata

    try:
        return f"dotflow {metadata.version('dotflow')}"
    except metadata.PackageNotFoundError:
        return None


def _run_contributed(command: discovery.InstalledEntryPoint, argv: list[str]) -> int:
    """Import a ``dotflow.commands`` entry point and hand it the remaining arguments."""
    try:
        function = command.entry_point.load()
    except Exception as error:
        sys.stderr.write(
            error_line(
                f"command {command.name!r} (from {command.distribution or '?'}) failed to load: "
                f"{type(error).__name__}: {error}"
            )
        )
        return EXIT_USAGE
    if not callable(function):
        sys.stderr.write(
            error_line(
                f"command {command.name!r} ({command.entry_point.value}) is not a function "
                f"taking argv"
            )
        )
        return EXIT_USAGE
    process.startup_finished()
    result = function(argv)
    if result is None:
        return EXIT_OK
    if isinstance(result, bool) or not isinstance(result, int):
        sys.stderr.write(
            error_line(f"command {command.name!r} returned {result!r}; expected an int exit code")
        )
        return EXIT_TASK_FAILED
    return result


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TASK_FAILED",
    "EXIT_TERMINATED",
    "EXIT_UNDELIVERED",
    "EXIT_USAGE",
    "CliError",
    "CommandParser",
    "console_main",
    "error_line",
    "interrupted_exit_code",
    "main",
]
