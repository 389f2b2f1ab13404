"""Executors named by a string: ``dask://HOST:PORT``, ``dask``, ``processes``, ``threads``.

What ``dotflow start --executor``, ``DOTFLOW_EXECUTOR``, the config file's
``executor`` key and ``start(executor="...")`` accept. A spec names an executor
that the run creates and closes itself:

- ``dask://HOST:PORT``: a client of the Dask scheduler at ``tcp://HOST:PORT``;
- ``dask`` or ``dask:N``: a local Dask cluster of N worker processes (default 2),
  one thread each, started for the run;
- ``processes`` or ``processes:N``: a ``ProcessPoolExecutor`` (N workers, default
  the number of CPUs);
- ``threads`` or ``threads:N``: a ``ThreadPoolExecutor``.

Dask is optional (``pip install "dotflow-core[dask]"``): naming it without the
``distributed`` package installed is a :class:`ConfigurationError` that says so.
"""

from __future__ import annotations

import importlib.util
import logging
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import attrs

from dotflow_core.errors import ConfigurationError
from dotflow_core.settings import Settings

logger = logging.getLogger("dotflow.engine")

#: The environment variable naming the executor of ``dotflow start --mode parallel``.
EXECUTOR_ENV = "DOTFLOW_EXECUTOR"
#: The config file key (``[tool.dotflow]`` / ``dotflow.toml``) that does the same.
EXECUTOR_KEY = "executor"
#: What to install for the ``dask`` executors.
DASK_INSTALL = 'pip install "dotflow-core[dask]"'
#: The valid specs, for error messages.
SPEC_CHOICES = "dask://HOST:PORT, dask[:WORKERS], processes[:WORKERS] or threads[:WORKERS]"
#: Seconds to wait for a Dask scheduler to answer before giving up.
CONNECT_TIMEOUT = 10.0
#: Worker processes of ``dask`` without a count.
DEFAULT_DASK_WORKERS = 2

DASK_REMOTE = "dask-remote"
DASK_LOCAL = "dask"
PROCESSES = "processes"
THREADS = "threads"
_KINDS = (DASK_LOCAL, PROCESSES, THREADS)


@attrs.frozen
class ExecutorSpec:
    """A parsed executor spec, and where it came from (for error messages)."""

    kind: str
    text: str
    origin: str
    address: str | None = None
    workers: int | None = None

    @property
    def needs_dask(self) -> bool:
        return self.kind in (DASK_LOCAL, DASK_REMOTE)


def parse_executor_spec(text: object, origin: str) -> ExecutorSpec:
    """Parse a spec (see the module docstring).

    :param origin: where it was given (``--executor``, ``DOTFLOW_EXECUTOR``, a config key).
    :raises ConfigurationError: it is none of the valid specs.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"{origin}={text!r}: expected {SPEC_CHOICES}")
    spec = text.strip()
    if spec.startswith("dask://"):
        return ExecutorSpec(DASK_REMOTE, spec, origin, address=_address(spec, origin))
    kind, _, count = spec.partition(":")
    if kind not in _KINDS:
        raise ConfigurationError(f"{origin}={text!r}: expected {SPEC_CHOICES}")
    workers = None
    if count or spec.endswith(":"):
        if not count.isdigit() or int(count) < 1:
            raise ConfigurationError(
                f"{origin}={text!r}: the worker count after ':' must be an integer >= 1, "
                f"e.g. {kind}:4"
            )
        workers = int(count)
    return ExecutorSpec(kind, spec, origin, workers=workers)


def _address(spec: str, origin: str) -> str:
    host, _, port = spec.removeprefix("dask://").rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"{origin}={spec!r}: expected dask://HOST:PORT with a port from 1 to 65535, "
            f"e.g. dask://127.0.0.1:8786"
        )
    return f"tcp://{host}:{port}"


def configured_executor(settings: Settings, flag: str | None = None) -> ExecutorSpec | None:
    """The spec from ``flag``, else ``DOTFLOW_EXECUTOR``, else the config file; None: none set."""
    if flag is not None:
        return parse_executor_spec(flag, "--executor")
    value = settings.lookup(EXECUTOR_KEY, env=EXECUTOR_ENV)
    if value is None:
        return None
    return parse_executor_spec(value, settings.origin(EXECUTOR_KEY, env=EXECUTOR_ENV))


def check_available(spec: ExecutorSpec) -> None:
    """:raises ConfigurationError: the spec needs Dask and ``distributed`` is not installed."""
    if spec.needs_dask and importlib.util.find_spec("distributed") is None:
        raise ConfigurationError(
            f"{spec.origin}={spec.text!r} needs Dask, which is not installed: {DASK_INSTALL}"
        )


class OwnedExecutor:
    """An executor a spec made: used for one run, then closed (see :meth:`close`).

    A context manager: ``with OwnedExecutor.open(spec) as owned: ... owned.executor``.
    """

    def __init__(self, spec: ExecutorSpec, executor: Executor, closers: list[Any]) -> None:
        self.spec = spec
        self.executor = executor
        self._closers = closers
        self._closed = False

    @classmethod
    def open(cls, spec: ExecutorSpec) -> OwnedExecutor:
        """Create the executor (connect to the scheduler, start the local cluster).

        :raises ConfigurationError: Dask is missing, or its scheduler cannot be reached.
        """
        check_available(spec)
        if spec.kind == PROCESSES:
            pool: Executor = ProcessPoolExecutor(max_workers=spec.workers)
            return cls(spec, pool, [])
        if spec.kind == THREADS:
            return cls(spec, ThreadPoolExecutor(max_workers=spec.workers), [])
        return cls._open_dask(spec)

    @classmethod
    def _open_dask(cls, spec: ExecutorSpec) -> OwnedExecutor:
        import distributed

        closers: list[Any] = []
        try:
            if spec.kind == DASK_REMOTE:
                client = distributed.Client(spec.address, timeout=CONNECT_TIMEOUT)
            else:
                cluster = distributed.LocalCluster(
                    n_workers=spec.workers or DEFAULT_DASK_WORKERS,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                closers.append(cluster)
                client = distributed.Client(cluster)
        except (OSError, TimeoutError) as error:
            for closer in closers:
                closer.close()
            raise ConfigurationError(
                f"{spec.origin}={spec.text!r}: cannot reach the Dask scheduler at "
                f"{spec.address}: {error}"
            ) from None
        closers.insert(0, client)
        return cls(spec, client.get_executor(pure=False), closers)

    def close(self) -> None:
        """Cancel what is still queued and stop the workers; no wait for running attempts.

        By the time a run has ended, anything still running was given up on (a timed-out
        attempt, or an interrupted run), so process workers are terminated and a Dask
        cluster started for the run is closed; a remote cluster's workers finish such an
        attempt on their own. Threads cannot be stopped.
        """
        if self._closed:
            return
        self._closed = True
        executor = self.executor
        if isinstance(executor, ProcessPoolExecutor):
            kill = getattr(executor, "kill_workers", None)  # Python 3.14+
            if kill is not None:
                kill()
            else:
                for process in list((getattr(executor, "_processes", None) or {}).values()):
                    process.kill()
            # With its workers gone the pool's manager thread ends at once: wait for it, or
            # its closing races the interpreter's wake-up call to it at exit.
            executor.shutdown(wait=True, cancel_futures=True)
        elif isinstance(executor, ThreadPoolExecutor):
            executor.shutdown(wait=False, cancel_futures=True)
        else:  # Dask's: cancels what it still holds
            executor.shutdown(wait=False)
        for closer in self._closers:
            try:
                closer.close()
            except Exception as error:  # closing must not hide the run's outcome
                logger.warning("closing %s failed: %s", type(closer).__name__, error)

    def __enter__(self) -> OwnedExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
