"""``ServerAPI``: the ``api`` provider (managed mode).

Every hook only serialises its record and queues the request (see
:mod:`.delivery`); the one network call on the workflow's thread is
``get_next_task_id``, made once per resumed workflow. ``flush`` and
``shutdown`` wait at most their deadline and spool the rest to the outbox.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from dotflow_core.plugin import (
    INITIAL_TASK_ID,
    MAX_TASK_ID,
    ConfigurationError,
    Secret,
    Settings,
    TaskRecord,
    WorkflowRecord,
    hookimpl,
)
from dotflow_server_api import payloads
from dotflow_server_api.delivery import Delivery, Stats
from dotflow_server_api.settings import STRICT_ENV, ApiSettings, load_settings
from dotflow_server_api.transport import Outcome, Result, Transport

logger = logging.getLogger("dotflow.server.api")

#: Connect and read timeout of the synchronous next-id request (seconds).
NEXT_ID_TIMEOUT: Final = (2.0, 2.0)
#: The whole next-id lookup, its one retry included, gives up after this many seconds:
#: the timeouts above bound each connect and each socket read, not a server that
#: trickles its answer a byte at a time.
NEXT_ID_DEADLINE: Final = 2.5
#: Pause before the one retry, which is made only when the first attempt failed fast
#: enough to leave it at least :data:`NEXT_ID_RETRY_MIN` seconds.
NEXT_ID_RETRY_PAUSE: Final = 0.2
NEXT_ID_RETRY_MIN: Final = 1.0


class ServerAPI:
    """Reports every workflow and task event to a dotflow API server.

    Installed as the ``api`` provider (selected automatically when
    ``SERVER_BASE_URL`` and ``SERVER_USER_TOKEN`` are set), or used in code::

        DotFlow(providers=[ServerAPI(base_url="https://host/api/v1", token="...")])

    Arguments given here win over the settings received in ``configure``;
    ``None`` means "from the settings".
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | Secret | None = None,
        *,
        strict: bool | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        flush_timeout: float | None = None,
        max_queue: int | None = None,
        max_in_flight: int | None = None,
        ca_bundle: str | Path | None = None,
        outbox_dir: str | Path | None = None,
        delivery_factory: Callable[[ApiSettings], Delivery] | None = None,
    ) -> None:
        self._overrides: dict[str, Any] = {
            "base_url": base_url,
            "token": token if token is None or isinstance(token, Secret) else Secret(str(token)),
            "strict": strict,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "flush_timeout": flush_timeout,
            "max_queue": max_queue,
            "max_in_flight": max_in_flight,
            "ca_bundle": ca_bundle,
            "outbox_dir": outbox_dir,
        }
        self._delivery_factory = delivery_factory or Delivery
        self._lock = threading.Lock()
        self._config: ApiSettings | None = None
        self._delivery: Delivery | None = None
        #: Deliveries of earlier configurations, still drained by flush/shutdown.
        self._retired: list[Delivery] = []
        self._failed_hooks: set[str] = set()
        _PROVIDERS.add(self)

    def __repr__(self) -> str:
        url = self._config.base_url if self._config else self._overrides.get("base_url")
        return f"ServerAPI(base_url={url!r})"

    # -- configuration ---------------------------------------------------------

    @property
    def config(self) -> ApiSettings:
        """The checked settings (read from the environment if ``configure`` never ran)."""
        with self._lock:
            config = self._config
        if config is None:
            self.configure(Settings.load())
            assert self._config is not None
            config = self._config
        return config

    def delivery(self) -> Delivery:
        """The delivery queue for the current settings, created on first use (no threads yet)."""
        config = self.config
        with self._lock:
            if self._delivery is None:
                self._delivery = self._delivery_factory(config)
            return self._delivery

    def stats(self) -> Stats:
        """Event counts since the last ``shutdown`` (current settings)."""
        return self.delivery().stats

    @hookimpl
    def configure(self, settings: Settings) -> None:
        """Read and check the settings; raises ConfigurationError naming a bad one."""
        config = load_settings(settings, self._overrides)
        with self._lock:
            if config == self._config:
                return
            if self._delivery is not None:
                self._retired.append(self._delivery)
                self._delivery = None
            self._config = config

    # -- events: serialise and queue, nothing more -------------------------------

    @hookimpl
    def create_workflow(self, workflow: WorkflowRecord) -> None:
        self._submit("create_workflow", payloads.create_workflow, workflow)

    @hookimpl
    def update_workflow(self, workflow: WorkflowRecord) -> None:
        self._submit("update_workflow", payloads.update_workflow, workflow)

    @hookimpl
    def create_task(self, task: TaskRecord) -> None:
        self._submit("create_task", payloads.create_task, task)

    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        self._submit("update_task", payloads.update_task, task)

    def _submit(self, hook: str, build: Callable[[Any], payloads.Request], record: Any) -> None:
        try:
            self.delivery().submit(build(record))
        except Exception as error:  # never into the workflow; counted; logged once per hook
            with contextlib.suppress(Exception):  # no delivery at all: nothing to count in
                self.delivery().count_dropped(1)
            if hook not in self._failed_hooks:
                self._failed_hooks.add(hook)
                logger.error(
                    "%s: event not queued, counted as dropped: %s: %s (further failures of "
                    "this hook are not logged)",
                    hook,
                    type(error).__name__,
                    error,
                )

    # -- the one synchronous call ----------------------------------------------

    @hookimpl
    def get_next_task_id(self, workflow_id: str) -> int | None:
        """``max(server next_id, 1 + highest task id still queued or spooled)``.

        Falls back (with a WARNING) to the local knowledge or ``None`` when the
        server cannot answer; raises ConfigurationError instead in strict mode.
        """
        config = self.config
        delivery = self.delivery()
        local = self._local_highest_task_id(delivery, workflow_id)
        answer, cause = self._ask_next_id(delivery, workflow_id)
        if answer is not None:
            return max(answer, local + 1) if local is not None else answer
        if config.strict:
            raise ConfigurationError(
                f"{STRICT_ENV} is on and the next task id of workflow {workflow_id!r} could not "
                f"be read from {config.base_url}: {cause}"
            )
        if local is not None:
            logger.warning(
                "could not read the next task id of workflow %s from %s (%s); numbering "
                "continues after task %d, the highest one waiting in the outbox or queue, "
                "and may collide with the earlier run's task ids",
                workflow_id,
                config.base_url,
                cause,
                local,
            )
            return local + 1
        logger.warning(
            "could not read the next task id of workflow %s from %s (%s); numbering falls "
            "back to INITIAL_TASK_ID (%d) and may collide with the earlier run's task ids",
            workflow_id,
            config.base_url,
            cause,
            INITIAL_TASK_ID,
        )
        return None

    @staticmethod
    def _local_highest_task_id(delivery: Delivery, workflow_id: str) -> int | None:
        known = [delivery.highest_queued_task_id(workflow_id)]
        try:
            known.append(delivery.outbox.highest_task_id(workflow_id))
        except Exception as error:
            logger.warning("could not read the outbox %s: %s", delivery.outbox.directory, error)
        numbers = [number for number in known if number is not None]
        return max(numbers) if numbers else None

    @staticmethod
    def _ask_next_id(delivery: Delivery, workflow_id: str) -> tuple[int | None, str]:
        """The server's ``next_id``, or ``(None, cause)``.

        At most one retry, and all within :data:`NEXT_ID_DEADLINE`.
        """
        path = payloads.next_id_path(workflow_id)
        try:
            transport = delivery.transport()
        except Exception as error:
            return None, f"{type(error).__name__}: {error}"
        deadline = time.monotonic() + NEXT_ID_DEADLINE
        cause = ""
        for attempt in (1, 2):
            result = _get_within(transport, path, deadline - time.monotonic())
            if result.outcome is Outcome.DELIVERED and result.status != 200:
                return None, f"HTTP {result.status} (expected 200)"
            if result.outcome is Outcome.DELIVERED:
                return _parse_next_id(result.content)
            if result.outcome is Outcome.AUTH:
                return None, f"HTTP {result.status}: the server rejected the token"
            cause = result.describe()
            if result.outcome is not Outcome.RETRY or attempt == 2:
                break
            if deadline - time.monotonic() < NEXT_ID_RETRY_PAUSE + NEXT_ID_RETRY_MIN:
                break
            time.sleep(NEXT_ID_RETRY_PAUSE)
        return None, cause

    # -- lifecycle ---------------------------------------------------------------

    @hookimpl
    def flush(self, workflow_id: str, timeout: float | None) -> None:
        """Wait (bounded) for the workflow's requests; spool what is left."""
        with self._lock:
            deliveries = [*self._retired, *([self._delivery] if self._delivery else [])]
            config = self._config
        if not deliveries or config is None:
            return
        deadline = time.monotonic() + (config.flush_timeout if timeout is None else timeout)
        for delivery in deliveries:
            delivery.flush(workflow_id, max(deadline - time.monotonic(), 0.0))

    @hookimpl
    def shutdown(self, timeout: float | None) -> None:
        """Wait (bounded) for everything, spool the rest, log the counts; idempotent."""
        with self._lock:
            deliveries = [*self._retired, *([self._delivery] if self._delivery else [])]
            self._retired = []
            config = self._config
        if not deliveries or config is None:
            return
        deadline = time.monotonic() + (config.flush_timeout if timeout is None else timeout)
        for delivery in deliveries:
            delivery.close(max(deadline - time.monotonic(), 0.0))


def _get_within(transport: Transport, path: str, seconds: float) -> Result:
    """``GET path``, given up after ``seconds`` whatever the server does.

    The request runs on a daemon thread; one that overruns is left to finish (or
    time out) on its own, and the workflow goes on.
    """
    answers: list[Result] = []
    timeout = (min(NEXT_ID_TIMEOUT[0], seconds), min(NEXT_ID_TIMEOUT[1], seconds))
    thread = threading.Thread(
        target=lambda: answers.append(transport.send("GET", path, None, timeout=timeout)),
        name="dotflow-server-api-next-id",
        daemon=True,
    )
    thread.start()
    thread.join(max(seconds, 0.0))
    if answers:
        return answers[0]
    return Result(outcome=Outcome.RETRY, detail=f"no complete answer within {NEXT_ID_DEADLINE:g} s")


def _parse_next_id(content: bytes) -> tuple[int | None, str]:
    """Read ``{"next_id": N}``: N must be an int from 1 to 2**53 (a bool is not an int)."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, "the answer is not JSON"
    if not isinstance(data, dict) or "next_id" not in data:
        return None, "the answer has no next_id"
    value = data["next_id"]
    if type(value) is not int:
        return None, f"next_id is {type(value).__name__}, not an integer"
    if not INITIAL_TASK_ID <= value <= MAX_TASK_ID:
        return None, f"next_id {value} is outside {INITIAL_TASK_ID}..2**53"
    return value, ""


#: Every instance, so that a forked child gets fresh locks (its deliveries reset themselves).
_PROVIDERS: weakref.WeakSet[ServerAPI] = weakref.WeakSet()


def _fresh_locks_after_fork() -> None:
    for provider in list(_PROVIDERS):
        provider._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_after_fork)

#: The instance behind the ``api`` entry point (one queue per process).
api = ServerAPI()
