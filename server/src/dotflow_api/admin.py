"""``dotflow-api tokens create|list|revoke`` and ``prune``: the database, from the command line.

They work on the database the server uses (``--database``, the same default as
``serve``), so a running server honours a created token at once and refuses a revoked
one on its next request. Exit codes as everywhere in ``dotflow-api``: 0 done, 2 bad
input (one line on stderr), 1 the database cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from dotflow_api.cli_common import DEFAULT_DATABASE, EXIT_CANNOT_RUN, CommandError, open_database
from dotflow_api.db import safe_url
from dotflow_api.models import utcnow
from dotflow_api.retention import DEFAULT_BATCH_SIZE, parse_age, prune
from dotflow_api.tokens import NAME_RULE, TokenNameError, TokenStore


def add_admin_commands(commands: Any) -> None:
    """Add ``tokens`` (and its subcommands) to the ``dotflow-api`` parser."""
    tokens = commands.add_parser(
        "tokens",
        help="create, list or revoke tokens stored in the database",
        description=(
            "Tokens stored in the database, hashed. They work next to DOTFLOW_API_TOKENS "
            "and --tokens-file, which these commands neither list nor change."
        ),
    )
    actions = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help="create a token and print it (the only time it is shown)"
    )
    create.add_argument("name", metavar="NAME", help=f"the token's name: {NAME_RULE}")
    listing = actions.add_parser("list", help="names, creation and last use (never the tokens)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    revoke = actions.add_parser("revoke", help="delete a token: requests with it get 401")
    revoke.add_argument("name", metavar="NAME", help="the name given to tokens create")
    for action, handler in ((create, _create), (listing, _list), (revoke, _revoke)):
        _database_option(action)
        action.set_defaults(handler=handler)
    _add_prune(commands)


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _batch_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 100000")
    return int(text)


def _add_prune(commands: Any) -> None:
    pruning = commands.add_parser(
        "prune",
        help="delete runs (and their tasks) nothing changed for a while",
        description=(
            "Delete the runs the server last changed before the given age, with their "
            "tasks; then tasks sent without a run, and workflows left empty, of that age."
        ),
    )
    pruning.add_argument(
        "--older-than",
        type=_age,
        required=True,
        metavar="AGE",
        help="e.g. 30d, 12h or 90m (days, hours, minutes)",
    )
    pruning.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows deleted per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    _database_option(pruning)
    pruning.set_defaults(handler=_prune)


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        metavar="URL",
        help=f"the server's SQLAlchemy database URL ({DEFAULT_DATABASE})",
    )


def _store(args: argparse.Namespace) -> TokenStore:
    return TokenStore(open_database(args.database))


def _database_failure(args: argparse.Namespace, exc: SQLAlchemyError) -> CommandError:
    reason = getattr(exc, "orig", None) or type(exc).__name__
    return CommandError(
        f"cannot use database {safe_url(args.database)!r}: {reason}", EXIT_CANNOT_RUN
    )


def _create(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        token = store.create(args.name)
    except TokenNameError as exc:
        raise CommandError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _database_failure(args, exc) from None
    finally:
        store.engine.dispose()
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"Created token {args.name!r}. It is shown only this once and cannot be recovered: "
        "keep it now (a runner reads it from SERVER_USER_TOKEN).\n"
    )
    return 0


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        tokens = store.list_tokens()
    except SQLAlchemyError as exc:
        raise _database_failure(args, exc) from None
    finally:
        store.engine.dispose()
    if args.json:
        rows = [
            {
                "name": token.name,
                "created_at": token.created_at.isoformat(),
                "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
            }
            for token in tokens
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not tokens:
        sys.stdout.write(
            "No tokens in the database (dotflow-api tokens create NAME makes one; "
            "DOTFLOW_API_TOKENS and --tokens-file tokens are not listed).\n"
        )
        return 0
    width = max(len("NAME"), *(len(token.name) for token in tokens))
    sys.stdout.write(f"{'NAME':<{width}}  {'CREATED':<23}  LAST USED\n")
    for token in tokens:
        sys.stdout.write(
            f"{token.name:<{width}}  {_when(token.created_at):<23}  {_when(token.last_used_at)}\n"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        store.revoke(args.name)
    except TokenNameError as exc:
        raise CommandError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _database_failure(args, exc) from None
    finally:
        store.engine.dispose()
    sys.stdout.write(f"Revoked token {args.name!r}: requests carrying it now get 401.\n")
    return 0


def _prune(args: argparse.Namespace) -> int:
    engine = open_database(args.database)
    cutoff = utcnow() - args.older_than
    try:
        pruned = prune(engine, cutoff, batch_size=args.batch_size)
    except SQLAlchemyError as exc:
        raise _database_failure(args, exc) from None
    finally:
        engine.dispose()
    sys.stdout.write(
        f"Deleted {pruned.runs} run(s), {pruned.tasks} task(s) and {pruned.workflows} "
        f"workflow(s) last changed before {_when(cutoff)}.\n"
    )
    return 0
