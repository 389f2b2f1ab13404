"""What the ``dotflow-api`` subcommands share: the error they raise and opening the database."""

from __future__ import annotations

from typing import Final

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dotflow_api.db import (
    DatabaseURLError,
    create_db_engine,
    create_schema,
    is_in_memory,
    safe_url,
)

PROG: Final = "dotflow-api"
DEFAULT_DATABASE: Final = "sqlite:///dotflow-api.sqlite3"
EXIT_BAD_INPUT: Final = 2
EXIT_CANNOT_RUN: Final = 1


class CommandError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def open_database(url: str) -> Engine:
    """An engine on ``url`` with the schema in place; ``CommandError`` if unusable."""
    try:
        if is_in_memory(url):
            raise CommandError(
                f"database URL {safe_url(url)!r} is an in-memory SQLite database: "
                "every write would be lost when the server stops; name a file, e.g. "
                f"{DEFAULT_DATABASE}"
            )
        engine = create_db_engine(url)
        create_schema(engine)
    except DatabaseURLError as exc:
        raise CommandError(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or type(exc).__name__
        raise CommandError(f"cannot open database {safe_url(url)!r}: {reason}") from None
    except (ImportError, ValueError, TypeError) as exc:
        # A driver refusing its options or missing a module only when it connects.
        raise CommandError(
            f"cannot open database {safe_url(url)!r}: {type(exc).__name__}: {exc}"
        ) from None
    return engine
