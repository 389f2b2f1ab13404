"""``ServerAPI``: the ``api`` provider (managed mode).

Every hook only wraps its record in a request and queues it (see
:mod:`.delivery`); bodies are encoded later, by the delivery workers, each
context value once (:mod:`.contexts`). The one network call on the workflow's thread is
``get_next_task_id``, made once per resumed workflow. ``flush`` and
``shutdown`` wait at most their deadline and spool the rest to the outbox.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotflow_core.plugin import (
    INITIAL_TASK_ID,
    ConfigurationError,
    Secret,
    Settings,
    TaskRecord,
    UndeliveredEventsError,
    WorkflowRecord,
    hookimpl,
)
from dotflow_server_api import payloads
from dotflow_server_api.contexts import ContextEncoder
from dotflow_server_api.intake import Intake
from dotflow_server_api.settings import (
    BASE_URL_ENV,
    STRICT_DELIVERY_ENV,
    STRICT_ENV,
    ApiSettings,
    load_settings,
)

if TYPE_CHECKING:  # imported when the first delivery is built (see .intake)
    from dotflow_server_api.delivery import Delivery, Stats

logger = logging.getLogger("dotflow.server.api")


def _new_delivery(config: ApiSettings) -> Delivery:
    from dotflow_server_api.delivery import Delivery

    return Delivery(config)


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
        strict_delivery: bool | None = None,
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
            "strict_delivery": strict_delivery,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "flush_timeout": flush_timeout,
            "max_queue": max_queue,
            "max_in_flight": max_in_flight,
            "ca_bundle": ca_bundle,
            "outbox_dir": outbox_dir,
        }
        self._delivery_factory = delivery_factory or _new_delivery
        self._lock = threading.Lock()
        self._config: ApiSettings | None = None
        self._delivery: Delivery | None = None
        #: Deliveries of earlier configurations, still drained by flush/shutdown.
        self._retired: list[Delivery] = []
        self._failed_hooks: set[str] = set()
        #: The first requests, until the delivery exists.
        self._intake = Intake(self._start_delivery)
        #: Encodes the contexts of task bodies, each value once (shared by every body).
        self.contexts = ContextEncoder()
        self._create_task = functools.partial(payloads.create_task, contexts=self.contexts)
        self._update_task = functools.partial(payloads.update_task, contexts=self.contexts)
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
        """The delivery queue for the current settings, created on first use.

        It takes over the requests held until then (see :mod:`.intake`).
        """
        config = self.config
        with self._lock:
            return self._current_delivery(config)

    def _current_delivery(self, config: ApiSettings) -> Delivery:
        """``delivery()`` with the lock held."""
        if self._delivery is None:
            delivery = self._delivery = self._delivery_factory(config)
            held, elapsed = self._intake.take()
            if held:
                delivery.first_event_was(elapsed)
            for request in held:
                try:
                    delivery.submit(request)
                except Exception as error:  # as in _submit
                    self._not_queued(request.kind, error, delivery)
        return self._delivery

    def _start_delivery(self) -> None:
        """The intake's starter thread: build the delivery once ``START_DELAY`` has passed."""
        try:
            self.delivery()
        except Exception as error:  # the workflow never sees it; its flush tries again
            logger.error("could not start delivery: %s: %s", type(error).__name__, error)

    def _take_held(self) -> None:
        """Lock held: requests still in the intake go to a delivery of their settings."""
        if self._config is not None and self._intake.holding:
            self._current_delivery(self._config)

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
            self._take_held()  # they go where they were meant to
            if self._delivery is not None:
                self._retired.append(self._delivery)
                self._delivery = None
            self._intake.close()
            self._intake = Intake(self._start_delivery)
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
        self._submit("create_task", self._create_task, task)

    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        self._submit("update_task", self._update_task, task)

    def _submit(self, hook: str, build: Callable[[Any], payloads.Request], record: Any) -> None:
        try:
            config = self.config
            request = build(record)
            with self._lock:
                if self._delivery is None and self._intake.hold(request):
                    return
                delivery = self._current_delivery(config)
            delivery.submit(request)
        except Exception as error:  # never into the workflow; counted; logged once per hook
            self._not_queued(hook, error)

    def _not_queued(self, hook: str, error: Exception, delivery: Delivery | None = None) -> None:
        """Count an event that could not be queued; log the first failure of each hook.

        :param delivery: the one to count it in (given when the lock is held).
        """
        with contextlib.suppress(Exception):  # no delivery at all: nothing to count in
            (delivery or self.delivery()).count_dropped(1)
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
    def get_next_task_id(self, workflow_id: str, run_id: str | None = None) -> int | None:
        """The first id reserved for ``run_id``, else ``max(the server's next_id, 1 +
        highest task id still queued or spooled)``.

        The outbox is read on another thread, and counts only if read within the
        same :data:`NEXT_ID_DEADLINE`; when it holds this workflow's events, they are
        delivered first (within that budget: an earlier run's reservation ends with
        its final status). Falls back (with a WARNING) to the local knowledge or
        ``None`` when the server cannot answer; raises ConfigurationError instead in
        strict mode, and for a workflow id the wire contract does not allow.
        """
        from dotflow_server_api.next_id import (  # only resumed workflows need it
            NEXT_ID_DEADLINE,
            ask_next_id,
            check_workflow_id,
            local_highest_task_id,
            settle_earlier_runs,
        )

        check_workflow_id(workflow_id)
        config = self.config
        delivery = self.delivery()
        deadline = time.monotonic() + NEXT_ID_DEADLINE
        local_known = local_highest_task_id(delivery, workflow_id, deadline)
        if run_id is not None:
            settle_earlier_runs(delivery, workflow_id, local_known, deadline)
        answer, cause, reserved = ask_next_id(delivery, workflow_id, run_id, deadline)
        if reserved:  # this run's own ids: spooled tasks of other runs are moved on 409
            return answer
        local = local_known()
        if answer is not None:
            return max(answer, local + 1) if local is not None else answer
        if cause.startswith(BASE_URL_ENV):  # a 404: the base URL is wrong, said once
            delivery.not_found(cause, log=not config.strict)
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

    @hookimpl
    def run_link(self, workflow: WorkflowRecord) -> str | None:
        """The run's dashboard page, from the template the server sent (``Dotflow-Dashboard``)."""
        with self._lock:
            config = self._config
        if config is None:
            return None
        from dotflow_server_api.links import expand_run_link
        from dotflow_server_api.transport import dashboard_template

        template = dashboard_template(config.base_url)
        return expand_run_link(template, workflow) if template else None

    # -- lifecycle ---------------------------------------------------------------

    @hookimpl
    def flush(self, workflow_id: str, timeout: float | None) -> None:
        """Wait (bounded) for the workflow's requests; spool what is left."""
        with self._lock:
            self._take_held()
            deliveries = [*self._retired, *([self._delivery] if self._delivery else [])]
            config = self._config
        if not deliveries or config is None:
            return
        deadline = time.monotonic() + (config.flush_timeout if timeout is None else timeout)
        for delivery in deliveries:
            delivery.flush(workflow_id, max(deadline - time.monotonic(), 0.0))
        # Sent or spooled: its bodies are built, so the values they held can go.
        self.contexts.forget(workflow_id)

    @hookimpl
    def shutdown(self, timeout: float | None) -> None:
        """Wait (bounded) for everything, spool the rest, log the counts; idempotent.

        :raises UndeliveredEventsError: in strict delivery mode, when events were
            dropped or left in the outbox (``dotflow start`` then exits 3).
        """
        with self._lock:
            self._take_held()
            deliveries = [*self._retired, *([self._delivery] if self._delivery else [])]
            self._retired = []
            config = self._config
        if not deliveries or config is None:
            return
        deadline = time.monotonic() + (config.flush_timeout if timeout is None else timeout)
        undelivered: list[tuple[Delivery, Stats]] = []
        for delivery in deliveries:
            stats = delivery.close(max(deadline - time.monotonic(), 0.0))
            if stats.undelivered and delivery.config.strict_delivery:
                undelivered.append((delivery, stats))
        if undelivered:
            spooled = sum(stats.spooled for _, stats in undelivered)
            dropped = sum(stats.dropped for _, stats in undelivered)
            raise UndeliveredEventsError(
                f"{STRICT_DELIVERY_ENV} is on and {spooled + dropped} event(s) were not "
                f"delivered to {config.base_url}: {spooled} left in the outbox "
                f"(dotflow outbox flush sends them), {dropped} dropped"
            )


#: Names that lived here before the next-id lookup moved to :mod:`.next_id`.
_MOVED = frozenset(
    {
        "NEXT_ID_TIMEOUT",
        "NEXT_ID_DEADLINE",
        "NEXT_ID_RETRY_PAUSE",
        "NEXT_ID_RETRY_MIN",
        "MAX_TASK_ID",
    }
)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from dotflow_server_api import next_id

        return getattr(next_id, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Every instance, so that a forked child gets fresh locks (its deliveries reset themselves).
_PROVIDERS: weakref.WeakSet[ServerAPI] = weakref.WeakSet()


def _fresh_locks_after_fork() -> None:
    for provider in list(_PROVIDERS):
        provider._lock = threading.Lock()
        # The parent delivers what it held; its starter thread does not exist here.
        provider._intake = Intake(provider._start_delivery)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_after_fork)

#: The instance behind the ``api`` entry point (one queue per process).
api = ServerAPI()
