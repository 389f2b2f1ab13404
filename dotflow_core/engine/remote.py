"""What an executor's worker runs: one attempt of one step, packed for the trip.

The driver (:mod:`dotflow_core.engine.executors`) submits :func:`run_attempt`
with the step and its contexts. For an executor whose workers live in other
processes the driver pickles them itself, and the worker pickles what the step
returns, so that a value that cannot cross fails its task with an error that
names the step and the value's type, instead of surfacing as the executor's own
error (a process pool's bare ``TypeError``) or never arriving at all (Dask).
The executor then only carries bytes. Dask's workers use cloudpickle, as Dask
itself does; process pools use pickle.

A worker needs dotflow-core and the steps' modules importable; nothing else
of the engine is imported here.
"""

from __future__ import annotations

import importlib
import pickle
from typing import Any

import attrs

from dotflow_core.engine.action import Action
from dotflow_core.hooks.records import TaskError

#: Serializers a driver may name: None (in-process executor: nothing is copied).
PICKLE = "pickle"
CLOUDPICKLE = "cloudpickle"

#: The error type recorded for a value that cannot be sent back to the driver.
UNSENDABLE_VALUE = "UnsendableValueError"


@attrs.frozen
class StepByName:
    """A step that the worker imports: ``module.qualname`` is the action itself."""

    module: str
    qualname: str


@attrs.frozen
class StepByValue:
    """A step sent as its function or class and its options (rebuilt on the worker)."""

    target: Any
    options: dict[str, Any]


@attrs.frozen
class Outcome:
    """What an attempt sends back: the value (pickled when it crossed), or its failure."""

    value: Any = None
    failure: TaskError | None = None


def describe_type(value: object) -> str:
    """``module.Qualname`` of a value's type (``builtins.`` left out)."""
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def dumps(value: Any, serializer: str) -> bytes:
    """Pickle ``value``; with ``cloudpickle``, what plain pickle refuses goes by value."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        if serializer != CLOUDPICKLE:
            raise
        import cloudpickle  # a dependency of distributed, present wherever Dask runs

        return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def step_for_transport(action: Action, serializer: str) -> StepByName | StepByValue:
    """How a step travels: by name when its module holds it, else by value.

    By name, the worker imports it (the step's module must be installed there).
    By value for a step that no module attribute holds (``action(fn)`` kept in a
    variable), and for a ``__main__`` step sent with cloudpickle, which pickles
    what ``__main__`` defines by value (a worker's ``__main__`` is not the driver's).
    """
    module, qualname = action.target.__module__, action.target.__qualname__
    by_value = module == "__main__" and serializer == CLOUDPICKLE
    if not by_value and "<locals>" not in qualname:
        try:
            holder: Any = importlib.import_module(module)
            for part in qualname.split("."):
                holder = getattr(holder, part)
        except (ImportError, AttributeError):
            holder = None
        if holder is action:
            return StepByName(module, qualname)
    options = {
        "retry": action.retry,
        "timeout": action.timeout,
        "retry_delay": action.retry_delay,
        "backoff": action.backoff,
    }
    return StepByValue(action.target, options)


_resolved: dict[tuple[str, str], Action] = {}


def _action_of(step: Action | StepByName | StepByValue) -> Action:
    if isinstance(step, Action):
        return step
    if isinstance(step, StepByValue):
        return Action(step.target, **step.options)
    key = (step.module, step.qualname)
    if key not in _resolved:
        holder: Any = importlib.import_module(step.module)
        for part in step.qualname.split("."):
            holder = getattr(holder, part)
        _resolved[key] = holder
    return _resolved[key]


def run_attempt(payload: bytes | tuple[Any, ...], attempt: int, serializer: str | None) -> Outcome:
    """Run one attempt of a step on a worker and pack its outcome.

    :param payload: ``(step, initial_context, previous_context, task_id, workflow_id)``,
        pickled when ``serializer`` is set.
    :param attempt: the attempt's number, for its error record (and, for Dask, a
        distinct task key for every attempt).
    :param serializer: ``pickle``/``cloudpickle`` to pickle the value, None to return it as is.
    """
    fields: tuple[Any, ...] = pickle.loads(payload) if isinstance(payload, bytes) else payload
    step, initial, previous, task_id, workflow_id = fields
    try:
        action = _action_of(step)
        value = action.run(initial, previous, task_id, workflow_id)
    except BaseException as error:  # the step's failure is the task's, not the worker's
        return Outcome(failure=TaskError.from_exception(error, attempt))
    if serializer is None:
        return Outcome(value)
    try:
        return Outcome(dumps(value, serializer))
    except Exception as error:
        return Outcome(
            failure=TaskError(
                attempt=attempt,
                type=UNSENDABLE_VALUE,
                message=(
                    f"step {action.name!r} returned a {describe_type(value)} that cannot be "
                    f"sent back to the driver ({type(error).__name__}: {error}); return data "
                    f"that {serializer} can carry (numbers, strings, lists, dicts, dataframes)"
                ),
                traceback="",
            )
        )


def loads_value(outcome: Outcome, serializer: str | None) -> Any:
    """The value of a successful outcome, unpickled when it crossed."""
    if serializer is None:
        return outcome.value
    return pickle.loads(outcome.value)


__all__ = [
    "CLOUDPICKLE",
    "PICKLE",
    "UNSENDABLE_VALUE",
    "Outcome",
    "StepByName",
    "StepByValue",
    "dumps",
    "loads_value",
    "run_attempt",
    "step_for_transport",
]
