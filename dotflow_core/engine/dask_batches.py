"""Dask's executor used through its client: attempts go out and results come back in batches.

``client.get_executor()`` submits one task per call (one graph update for the
scheduler each) and wraps every future in a ``concurrent.futures`` future whose
result it fetches on its own (one gather per task: a request to the scheduler,
which asks the worker, often busy with its next task). Driving the client
itself, the engine submits every attempt that is ready at once in one
``client.map`` per priority, and fetches the values of the attempts that have
ended in one ``client.gather`` (when, see ``executors.GATHER_WINDOW``). Dask's own futures are
used as they are (they do not report ``running``: a timeout counts from
submission, as before). Told apart without importing Dask; any other executor,
or a Dask one without the client attribute this relies on, goes through
``submit`` as any executor does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dotflow_core.engine.remote import Outcome, run_attempt

logger = logging.getLogger("dotflow.engine")


def is_dask(executor: object) -> bool:
    """True for ``distributed.Client.get_executor()`` (told apart without importing Dask)."""
    return type(executor).__module__.startswith("distributed.")


#: The error of an attempt that the executor cancelled (not the driver: its own are dropped).
CANCELLED = "the executor cancelled this attempt"


class DaskBatches:
    """Submit and resolve attempts in batches on the client behind Dask's executor."""

    def __init__(self, executor: Any, client: Any) -> None:
        self.executor = executor
        self.client = client
        #: What ``get_executor(**options)`` was given (``retries``, ``workers``, ...).
        self.options: dict[str, Any] = dict(getattr(executor, "_kwargs", None) or {})
        self.options.pop("pure", None)  # every attempt is a task of its own: pure=False

    @classmethod
    def of(cls, executor: object) -> DaskBatches | None:
        """For Dask's ``ClientExecutor`` with its client at hand, else None."""
        if not is_dask(executor) or type(executor).__name__ != "ClientExecutor":
            return None
        client = getattr(executor, "_client", None)
        return None if client is None or not hasattr(client, "map") else cls(executor, client)

    def submit(
        self, attempts: Sequence[tuple[str, int, Any, int]], serializer: str | None
    ) -> list[Any]:
        """Submit ``(key, priority, payload, attempt)`` tuples; their futures, in order.

        One ``client.map`` per distinct priority (a chain's next task and the
        independent ones differ).
        """
        if getattr(self.executor, "_shutdown", False):
            raise RuntimeError("cannot schedule new futures after shutdown")
        futures: list[Any] = [None] * len(attempts)
        by_priority: dict[int, list[int]] = {}
        for index, (_, priority, _, _) in enumerate(attempts):
            by_priority.setdefault(priority, []).append(index)
        for priority, indices in by_priority.items():
            mapped = self.client.map(
                run_attempt,
                [attempts[i][2] for i in indices],
                [attempts[i][3] for i in indices],
                [serializer] * len(indices),
                key=[attempts[i][0] for i in indices],
                pure=False,
                priority=priority,
                **self.options,
            )
            for index, future in zip(indices, mapped, strict=True):
                futures[index] = future
        return futures

    def resolve(self, futures: Sequence[Any]) -> list[Outcome | BaseException]:
        """Each ended future's outcome, or the executor's error; the values in one gather."""
        resolved: list[Outcome | BaseException | None] = [None] * len(futures)
        finished = [i for i, future in enumerate(futures) if future.status == "finished"]
        if finished:
            try:
                gathered = self.client.gather([futures[i] for i in finished])
            except Exception:  # one of them cannot be fetched (a worker died since): each alone
                gathered = [self._one(futures[i]) for i in finished]
            for index, value in zip(finished, gathered, strict=True):
                resolved[index] = value
        return [
            value if value is not None else self._failed(future)
            for value, future in zip(resolved, futures, strict=True)
        ]

    def _one(self, future: Any) -> Outcome | BaseException:
        try:
            result: Outcome = future.result()
        except Exception as error:
            return error
        return result

    def _failed(self, future: Any) -> BaseException:
        if future.status == "cancelled":
            return RuntimeError(CANCELLED)
        error = future.exception()
        return error if error is not None else RuntimeError(f"the attempt ended {future.status}")

    def cancel(self, futures: Sequence[Any]) -> None:
        """Cancel queued and running attempts in one request (a running one may go on)."""
        if futures:
            try:
                self.client.cancel(list(futures))
            except Exception as error:  # the cluster is gone: nothing left to cancel
                logger.debug("cancelling %d Dask futures failed: %s", len(futures), error)
