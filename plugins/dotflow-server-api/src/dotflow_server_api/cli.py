"""``dotflow outbox``: what is waiting in the outbox, and sending it now.

Contributed to the ``dotflow`` command through the ``dotflow.commands``
entry-point group; the core imports this module only when ``dotflow outbox``
runs.

Exit codes: 0 all good (or all sent); 1 something could not be sent (events
remain, were rejected by the server, or entries of the outbox are stuck:
poisoned lines, unreadable files); 2 usage or configuration error. Errors are
one line on stderr, ``dotflow: error: <message>``, as the core's commands
print them.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dotflow_core.plugin import CommandParser, ConfigurationError, Settings, error_line
from dotflow_server_api.contract import printable

if TYPE_CHECKING:
    from dotflow_server_api.outbox_summary import FileSummary, Problem

EXIT_OK = 0
EXIT_REMAINING = 1
EXIT_USAGE = 2  # a usage or configuration error
DEFAULT_FLUSH_TIMEOUT = 30.0


def _seconds(text: str) -> float:
    """``--timeout``: a finite number of seconds >= 0."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a finite number of seconds >= 0, e.g. 30 or 2.5"
        )
    return number


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="dotflow outbox",
        description=(
            "Events the 'api' provider could not deliver before a run ended wait in the "
            "outbox and are sent first by the next run to the same server and token. "
            "Without a command: list them."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("list", help="show what is waiting (the default)")
    flush = commands.add_parser(
        "flush",
        help="send what is waiting for SERVER_BASE_URL and SERVER_USER_TOKEN now",
    )
    flush.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_FLUSH_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long and keep the rest in the outbox: a number >= 0 "
        f"(default {DEFAULT_FLUSH_TIMEOUT:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dotflow outbox [list|flush]``; returns the exit code."""
    try:
        arguments = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:  # --help, usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        settings = Settings.load()
        if arguments.command == "flush":
            return _flush(settings, arguments.timeout, sys.stdout)
        return _list(settings, sys.stdout)
    except ConfigurationError as error:
        sys.stderr.write(error_line(str(error)))
        return EXIT_USAGE


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _list(settings: Settings, out: TextIO) -> int:
    from dotflow_server_api.outbox_summary import survey
    from dotflow_server_api.settings import outbox_root

    root = outbox_root(settings)
    found = survey(root)
    if not found.waiting and not found.problems:
        print(f"The outbox is empty ({root}).", file=out)
        return EXIT_OK
    print(f"Outbox: {root}", file=out)
    _print_waiting(found.waiting, out)
    _print_problems(found.problems, out)
    return EXIT_OK


def _print_waiting(waiting: list[FileSummary], out: TextIO) -> None:
    now = time.time()
    current = None
    for summary in waiting:
        destination = (summary.base_url, summary.fingerprint)
        if destination != current:
            current = destination
            print(f"\n{summary.base_url}  (token fingerprint {summary.fingerprint})", file=out)
            print(f"  {'WORKFLOW':<38} {'EVENTS':>6} {'OLDEST':>7}  FILE", file=out)
        oldest = _age(now - summary.oldest) if summary.oldest is not None else "-"
        claimed = f"  (being sent by pid {summary.claimed_by})" if summary.claimed_by else ""
        workflow = printable(summary.workflow_id, 36)
        print(
            f"  {workflow:<38} {summary.events:>6} {oldest:>7}  {summary.path}{claimed}", file=out
        )
    if waiting:
        total = sum(summary.events for summary in waiting)
        files = len({summary.path for summary in waiting})
        print(f"\n{total} event(s) in {files} file(s). Send them: dotflow outbox flush", file=out)


def _print_problems(problems: list[Problem], out: TextIO) -> None:
    if not problems:
        return
    print(
        f"\nStuck (never sent; {len(problems)} entr{'y' if len(problems) == 1 else 'ies'}):",
        file=out,
    )
    for problem in problems:
        lines = f" ({problem.lines} line(s))" if problem.lines else ""
        print(f"  {problem.path}{lines}: {problem.reason}", file=out)


def _flush(settings: Settings, timeout: float, out: TextIO) -> int:
    from dotflow_server_api.delivery import Delivery
    from dotflow_server_api.outbox_summary import survey
    from dotflow_server_api.settings import load_settings

    config = load_settings(settings)
    _log_to_stderr_if_unconfigured()
    delivery = Delivery(config)
    code = EXIT_OK
    if delivery.replay():
        stats = delivery.close(timeout)
        print(
            f"{stats.delivered} event(s) sent to {config.base_url}, {stats.spooled} still "
            f"waiting, {stats.dropped} rejected by the server.",
            file=out,
        )
        code = EXIT_REMAINING if stats.spooled or stats.dropped else EXIT_OK
    else:
        stats = delivery.close(0)
        print(f"Nothing waits in the outbox for {config.base_url} and this token.", file=out)
    problems = [
        problem
        for problem in survey(config.outbox_dir).problems
        if (problem.base_url, problem.fingerprint) == (config.base_url, config.fingerprint)
    ]
    if problems:
        _print_problems(problems, out)
        code = EXIT_REMAINING
    _mention_other_tokens(config.outbox_dir, config.base_url, config.fingerprint, out)
    return code


def _mention_other_tokens(root: Path, base_url: str, fingerprint: str, out: TextIO) -> None:
    """Say so when events for this server wait under another token (a rotated one, say).

    They are sent only with the token that spooled them: replaying them under this
    one could file one identity's workflows under another's.
    """
    from dotflow_server_api.outbox_summary import summarize

    others = [
        summary
        for summary in summarize(root)
        if summary.base_url == base_url and summary.fingerprint != fingerprint
    ]
    if others:
        fingerprints = ", ".join(sorted({summary.fingerprint for summary in others}))
        print(
            f"{sum(summary.events for summary in others)} event(s) for {base_url} wait under "
            f"another token (fingerprint {fingerprints}): a run with that token sends them "
            "(dotflow outbox lists them).",
            file=out,
        )


def _log_to_stderr_if_unconfigured() -> None:
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("dotflow.server.api")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
