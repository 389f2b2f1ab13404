"""The ``dotflow-api`` command: ``serve`` runs the server, ``openapi`` prints its contract,
``tokens`` and ``prune`` administer its database (see :mod:`dotflow_api.admin`).

``serve --workers N`` runs N server processes on one listening socket and one
database: this process migrates the database, binds the socket and announces the URL
once, then supervises the workers (uvicorn's ``Multiprocess``: a worker that dies is
replaced; SIGTERM/SIGINT stops them all).

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for bad input or missing
configuration (one line on stderr naming the bad value), 1 when the server cannot
run (e.g. the port is taken). Tokens never appear in any message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, NoReturn

import uvicorn
from uvicorn.supervisors import Multiprocess

from dotflow_api import connections
from dotflow_api._version import __version__
from dotflow_api.admin import add_admin_commands
from dotflow_api.app import create_app, openapi_document
from dotflow_api.auth import TOKENS_ENV, TokenConfigError, TokenSet, load_tokens
from dotflow_api.cli_common import (
    DEFAULT_DATABASE,
    EXIT_BAD_INPUT,
    EXIT_CANNOT_RUN,
    PROG,
    CommandError,
    open_database,
)
from dotflow_api.db import create_db_engine, safe_url
from dotflow_api.limits import DEFAULT_MAX_BODY_BYTES
from dotflow_api.store import Store
from dotflow_api.tokens import TokenStore

logger = logging.getLogger("dotflow_api.cli")

#: Seconds uvicorn keeps a quiet keep-alive connection after a response.
KEEP_ALIVE_TIMEOUT: Final = 5
#: Seconds running requests get to finish on SIGTERM before connections are cut.
GRACEFUL_SHUTDOWN_TIMEOUT: Final = 10
#: Where ``serve --workers N`` hands its settings to the worker processes (JSON).
_WORKER_SETTINGS_ENV: Final = "DOTFLOW_API_WORKER_SETTINGS"
#: Connections the kernel queues before the server accepts them.
LISTEN_BACKLOG: Final = 2048


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are a single line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 0-65535 (0: any free)")
    return port


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(
            f"invalid worker count {text!r}: expected 1-64 (e.g. the number of cores)"
        )
    return count


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: expected 0.1-3600")
    return value


def _connections(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 16:
        raise argparse.ArgumentTypeError(f"invalid connection count {text!r}: expected >= 16")
    return value


def _byte_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"invalid byte count {text!r}: expected an integer >= 0")
    return count


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``dotflow-api``."""
    parser = _Parser(prog=PROG, description="The dotflow managed-mode API server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the API server",
        description=(
            f"Run the API server. Tokens come from {TOKENS_ENV} (comma-separated) "
            "and/or --tokens-file; at least one is required."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port to bind; 0 picks a free one (8000)"
    )
    serve.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        metavar="URL",
        help=f"SQLAlchemy database URL ({DEFAULT_DATABASE})",
    )
    serve.add_argument(
        "--tokens-file",
        type=Path,
        metavar="PATH",
        help="file with one token per line (blank lines and # comments ignored)",
    )
    serve.add_argument(
        "--port-file",
        type=Path,
        metavar="PATH",
        help="write the bound port number to PATH once listening",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_byte_count,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help=f"largest request body accepted, larger ones get 413 ({DEFAULT_MAX_BODY_BYTES})",
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="the server's URL as people reach it, for the dashboard links it sends "
        "(default: the address each request used)",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="server processes sharing the socket and the database (1)",
    )
    serve.add_argument(
        "--header-timeout",
        type=_seconds,
        default=connections.DEFAULT_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="close connections that send no complete request head within this "
        f"time ({connections.DEFAULT_HEADER_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-connections",
        type=_connections,
        default=None,
        metavar="N",
        help="open connections per process; past it, those waiting longest without "
        "a request are closed (default: what the open-file limit allows)",
    )
    serve.add_argument(
        "--no-batch",
        action="store_true",
        help="do not offer the batch endpoint (POST /workflows/{workflow_id}/events "
        "answers 404) nor send the Dotflow-Batch header: clients send one request per "
        "event, as to a seed-contract server",
    )
    serve.add_argument(
        "--timing-log",
        type=Path,
        metavar="PATH",
        help="append one JSON line per request to PATH (start, seconds, status, method, "
        "path), for load measurements",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level on stderr (info)",
    )
    serve.add_argument(
        "--no-access-log", action="store_true", help="do not log every request on stderr"
    )
    serve.set_defaults(handler=_serve)

    openapi = commands.add_parser("openapi", help="print the OpenAPI document as JSON")
    openapi.set_defaults(handler=_openapi)
    add_admin_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dotflow-api`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(handler(args))
    except CommandError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code


# -- openapi ----------------------------------------------------------------------


def _openapi(args: argparse.Namespace) -> int:
    sys.stdout.write(json.dumps(openapi_document(), indent=2) + "\n")
    return 0


# -- serve ------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    tokens = _load_tokens(args)
    sock = _bind(args.host, args.port)
    try:
        app = _build_app(args, tokens)
    except BaseException:
        sock.close()
        raise
    port = int(sock.getsockname()[1])
    url = f"http://{_host_for_url(args.host)}:{port}"
    # uvicorn handles SIGTERM/SIGINT while it runs, then re-raises the signal it got
    # under these handlers: either way the process exits cleanly with status 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)

    if args.workers > 1:
        return _serve_workers(args, sock, url=url, port=port)
    server = _AnnouncingServer(
        _uvicorn_config(args, app), url=url, port=port, port_file=args.port_file
    )
    server.run(sockets=[sock])
    sock.close()
    if server.announce_error is not None:
        raise CommandError(server.announce_error, EXIT_CANNOT_RUN)
    logger.info("stopped")
    return 0


def _uvicorn_config(args: argparse.Namespace, app: Any, **options: Any) -> uvicorn.Config:
    """uvicorn's settings: our connection guard, timeouts and the socket's backlog."""
    config = uvicorn.Config(
        app,
        log_config=_uvicorn_log_config(args.log_level),
        access_log=not args.no_access_log,
        lifespan="off",
        server_header=False,
        http=connections.GuardedH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT,
        backlog=connections.accept_batch(),
        **options,
    )
    connections.configure(
        config,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections or connections.default_max_connections(),
    )
    return config


def _serve_workers(args: argparse.Namespace, sock: socket.socket, *, url: str, port: int) -> int:
    """Run ``args.workers`` worker processes on ``sock`` until SIGTERM/SIGINT."""
    os.environ[_WORKER_SETTINGS_ENV] = json.dumps(
        {
            "database": args.database,
            "max_body_bytes": args.max_body_bytes,
            "tokens_file": None if args.tokens_file is None else str(args.tokens_file),
            "log_level": args.log_level,
            "public_url": _public_url(args),
            "batch": not args.no_batch,
            "timing_log": None if args.timing_log is None else str(args.timing_log),
        }
    )
    config = _uvicorn_config(args, f"{__name__}:worker_app", factory=True, workers=args.workers)
    error = announce(url, port, args.port_file)
    if error is not None:
        sock.close()
        raise CommandError(error, EXIT_CANNOT_RUN)
    logger.info("%d worker processes", args.workers)
    Multiprocess(config, sockets=[sock]).run()
    sock.close()
    logger.info("stopped")
    return 0


def worker_app() -> Any:
    """The application of one ``serve --workers N`` worker (uvicorn calls it in the
    worker process; the parent already migrated the database)."""
    settings = json.loads(os.environ[_WORKER_SETTINGS_ENV])
    _configure_logging(settings["log_level"])
    tokens_file = settings["tokens_file"]
    tokens = load_tokens(None if tokens_file is None else Path(tokens_file))
    engine = create_db_engine(settings["database"])
    return create_app(
        Store(engine),
        tokens,
        max_body_bytes=settings["max_body_bytes"],
        public_url=settings["public_url"],
        batch=settings["batch"],
        timing_log=None if settings["timing_log"] is None else Path(settings["timing_log"]),
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _load_tokens(args: argparse.Namespace) -> TokenSet:
    """The configured tokens (maybe none); ``CommandError`` if unreadable."""
    try:
        return load_tokens(args.tokens_file)
    except TokenConfigError as exc:
        raise CommandError(str(exc)) from None


def _build_app(args: argparse.Namespace, tokens: TokenSet) -> Any:
    """Database and application from the arguments; ``CommandError`` if invalid."""
    public_url = _public_url(args)
    _check_timing_log(args.timing_log)
    engine = open_database(args.database)
    stored = TokenStore(engine).count()
    if not tokens and not stored:
        engine.dispose()
        raise CommandError(
            f"no API tokens configured: set {TOKENS_ENV} (comma-separated tokens), "
            "pass --tokens-file PATH (one token per line), or create one in the database "
            "with: dotflow-api tokens create NAME"
        )
    logger.info(
        "database %s, %d configured token(s), %d stored token(s), body limit %d bytes%s",
        safe_url(engine.url),
        len(tokens),
        stored,
        args.max_body_bytes,
        ", batch endpoint off" if args.no_batch else "",
    )
    return create_app(
        Store(engine),
        tokens,
        max_body_bytes=args.max_body_bytes,
        public_url=public_url,
        batch=not args.no_batch,
        timing_log=args.timing_log,
    )


def _check_timing_log(path: Path | None) -> None:
    """``CommandError`` unless ``path`` (if given) can be opened for appending."""
    if path is None:
        return
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise CommandError(
            f"cannot open --timing-log '{path}': {exc.strerror or exc}; "
            "expected a writable file path"
        ) from None


def _public_url(args: argparse.Namespace) -> str | None:
    url: str | None = args.public_url
    if url is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise CommandError(
            f"invalid --public-url {url!r}: expected an http(s) URL such as "
            "https://dotflow.example.com"
        )
    return url


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port chosen by the OS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CommandError(
            f"invalid host {host!r}: {reason}; expected an IP address or a resolvable host "
            "name, e.g. 127.0.0.1, 0.0.0.0, ::1 or localhost"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise CommandError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_CANNOT_RUN
        ) from None
    sock.set_inheritable(False)
    return sock


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` to ``path`` atomically: readers see no file or the whole number."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{port}\n")
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that announces its URL (stdout, port file) once it accepts."""

    def __init__(self, config: Any, *, url: str, port: int, port_file: Path | None) -> None:
        super().__init__(config)
        self.url = url
        self.port = port
        self.port_file = port_file
        self.announce_error: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        for sock in sockets or ():  # asyncio re-listened with the (small) accept batch
            sock.listen(LISTEN_BACKLOG)
        self.announce_error = announce(self.url, self.port, self.port_file)
        if self.announce_error is not None:
            self.should_exit = True


def announce(url: str, port: int, port_file: Path | None) -> str | None:
    """Write the port file and print the listening line; the error message, if any."""
    if port_file is not None:
        try:
            write_port_file(port_file, port)
        except OSError as exc:
            return f"cannot write port file '{port_file}': {exc.strerror or exc}"
    logger.info("listening on %s", url)
    sys.stdout.write(f"dotflow-api listening on {url}\n")
    sys.stdout.flush()
    return None


def _configure_logging(level: str) -> None:
    """Send the server's own logs to stderr (stdout carries only the listening line)."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if level != "debug":  # Alembic narrates every step; dotflow_api.migrate sums it up
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, all of it on stderr."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {
                "handlers": ["stderr"],
                "level": level.upper(),
                "propagate": False,
            },
        },
    }
