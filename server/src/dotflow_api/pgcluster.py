"""A throwaway PostgreSQL server for tests and benchmarks (``initdb`` + ``pg_ctl``).

    with PostgresCluster.start() as cluster:
        url = cluster.create_database("dotflow_test")

It needs PostgreSQL's server programs (``initdb``, ``pg_ctl``: the ``postgresql``
package of your distribution); :func:`find_bindir` says where they are, or None.
The cluster listens on 127.0.0.1 on a free port, trusts local connections (it lives
in a private directory and is stopped afterwards) and is fsync-free, since its data is
thrown away. PostgreSQL refuses to run as root: under root it runs as the ``postgres``
user, which the distribution's package creates, in a directory of its own under the
system's temporary directory (which that user can reach), removed when it stops.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

_SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are missing or the cluster did not start."""


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when not installed."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """A running private PostgreSQL cluster; :meth:`stop` (or ``with``) stops it and
    deletes its directory."""

    def __init__(self, directory: Path, port: int, bindir: Path, run_as: list[str]) -> None:
        self.directory = directory
        self.port = port
        self.bindir = bindir
        self._run_as = run_as

    @classmethod
    def start(cls, *, max_connections: int = 300) -> PostgresCluster:
        """Create and start a cluster in a new temporary directory."""
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL is not installed (no initdb found); install the 'postgresql' package"
            )
        run_as: list[str] = []
        directory = Path(tempfile.mkdtemp(prefix="dotflow-pg-"))
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailable("running as root without 'runuser' to drop to postgres")
            run_as = [runuser, "-u", _SUPERUSER, "--"]
            shutil.chown(directory, user=_SUPERUSER)
        data = directory / "data"
        cluster = cls(directory, _free_port(), bindir, run_as)
        try:
            cluster._initdb_and_start(data, max_connections)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cluster

    def _initdb_and_start(self, data: Path, max_connections: int) -> None:
        directory, cluster = self.directory, self
        cluster._run(
            "initdb", "-D", str(data), "-U", _SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        options = (
            f"-p {cluster.port} -k {directory} -c listen_addresses=127.0.0.1 "
            f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections={max_connections}"
        )
        cluster._run(
            "pg_ctl", "-D", str(data), "-l", str(directory / "server.log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def _run(self, program: str, *args: str) -> None:
        command = [*self._run_as, str(self.bindir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{program} failed ({result.returncode}): {(result.stderr or result.stdout)[-800:]}"
            )

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of ``database`` on this cluster."""
        return f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (letters, digits, ``_``); returns its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: use letters, digits and _")
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=_SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed); delete its files."""
        try:
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
