"""Run ``dotflow-api serve`` as a child process: for tests, demos and benchmarks.

    with ServerProcess.start(database_url="sqlite:///api.sqlite3", tokens=["t"]) as server:
        requests.get(f"{server.base_url}/healthz")

The server binds a free loopback port (or the one given) and the call returns
once it listens. :meth:`ServerProcess.restart` starts it again on the same port
and database, so clients that remember the base URL reconnect to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from dotflow_api.auth import TOKENS_ENV

STARTUP_TIMEOUT = 30.0


class ServerStartError(RuntimeError):
    """The server process exited or did not listen within the start-up timeout."""


class ServerProcess:
    """A running ``dotflow-api serve`` child process (see the module docstring)."""

    def __init__(
        self,
        database_url: str,
        tokens: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
        max_open_files: int | None = None,
    ) -> None:
        self.database_url = database_url
        self.tokens = list(tokens)
        self.host = host
        self.port = port
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="dotflow-api-"))
        self.extra_args = list(extra_args)
        #: The process's limit on open files (soft and hard, as ``ulimit -n``), if set.
        self.max_open_files = max_open_files
        self.stdout = self.workdir / "server.out"
        self.stderr = self.workdir / "server.err"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, database_url: str, tokens: Sequence[str], **options: object) -> ServerProcess:
        """Create and start a server; see :class:`ServerProcess` for the options."""
        server = cls(database_url, tokens, **options)  # type: ignore[arg-type]
        server.run()
        return server

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        """Start the process and wait until it listens (on ``self.port``, or a free one)."""
        port_file = self.workdir / "server.port"
        port_file.unlink(missing_ok=True)
        script = Path(sys.executable).with_name("dotflow-api")
        launcher = [str(script)] if script.exists() else [sys.executable, "-m", "dotflow_api"]
        command = [
            *launcher,
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--port-file",
            str(port_file),
            "--database",
            self.database_url,
            *self.extra_args,
        ]
        environment = {**os.environ, TOKENS_ENV: ",".join(self.tokens)}
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                env=environment,
                cwd=self.workdir,
                preexec_fn=None if self.max_open_files is None else self._limit_open_files,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise ServerStartError(
                    f"dotflow-api did not start (exit code {self.process.returncode}): "
                    f"{self.stderr.read_text(errors='replace').strip()[-500:]}"
                )
            time.sleep(0.02)
        self.port = int(port_file.read_text(encoding="ascii"))

    def _limit_open_files(self) -> None:
        import resource

        limit = int(self.max_open_files or 0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stop the process (SIGTERM by default; SIGKILL if it lingers) and return its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def restart(self) -> None:
        """Stop, then start again on the same port and database."""
        self.stop()
        self.run()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
