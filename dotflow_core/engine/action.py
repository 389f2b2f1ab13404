"""``@action``: marks a function or class as a workflow step and carries its retry policy."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, overload

from dotflow_core.engine.context import Context
from dotflow_core.hooks.records import is_strict_int

#: The step parameters the engine fills in when a step's signature names them.
CONTEXT_PARAMETERS = ("initial_context", "previous_context")


class Action:
    """A step: the decorated function or class and how to run it.

    Calling an action calls the decorated function unchanged, so steps stay
    easy to unit-test. The engine runs it through :meth:`run`, which passes
    ``initial_context`` / ``previous_context`` only when the signature asks.

    :param retry: attempts in all (dotflow's meaning: ``retry=3`` runs at most 3 times;
        ``retry=0``, like ``1``, runs once).
    :param timeout: seconds one attempt may take; ``0`` means no limit.
    :param retry_delay: seconds to wait before the next attempt.
    :param backoff: double the delay after every failed attempt.
    """

    def __init__(
        self,
        target: Callable[..., Any],
        *,
        retry: int = 1,
        timeout: float = 0,
        retry_delay: float = 1,
        backoff: bool = False,
    ) -> None:
        if not callable(target):
            raise TypeError(f"@action decorates a function or a class, not {target!r}")
        _check_int("retry", retry, minimum=0)
        _check_number("timeout", timeout)
        _check_number("retry_delay", retry_delay)
        if not isinstance(backoff, bool):
            raise ValueError(f"@action(backoff={backoff!r}): backoff must be True or False")
        self.target = target
        self.retry = retry
        self.timeout = timeout
        self.retry_delay = retry_delay
        self.backoff = backoff
        self.is_class = inspect.isclass(target)
        self.is_async = inspect.iscoroutinefunction(target)
        self.wanted = _wanted_contexts(target)
        #: True for a synchronous function that takes no context: called as ``target()``.
        self.plain = not (self.is_class or self.is_async or self.wanted)
        #: The step's qualified name, e.g. ``flow.extract``.
        self.name: str = f"{target.__module__}.{target.__qualname__}"
        functools.update_wrapper(self, target)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.target(*args, **kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.target, instance)

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        """Let ``class Child(SomeActionClass)`` subclass the decorated class."""
        if not self.is_class:
            raise TypeError(f"cannot subclass the @action function {self.name}")
        return (self.target,)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<action {self.name} retry={self.retry} timeout={self.timeout}>"

    def run(
        self,
        initial_context: Context,
        previous_context: Context,
        task_id: int | None = None,
        workflow_id: str | None = None,
    ) -> Any:
        """Run one attempt and return the step's value.

        For an ``@action`` class: instantiate it, then run its ``@action``
        methods in definition order, each receiving the context the one before
        produced; the value is the list of their contexts (or the instance
        itself when it has no ``@action`` methods).
        """
        if self.plain:
            return self.target()
        arguments = self._arguments(self.wanted, initial_context, previous_context)
        if not self.is_class:
            return _call(self.target, self.is_async, (), arguments)
        instance = self.target(**arguments)
        methods = _action_methods(type(instance))
        if not methods:
            return instance
        results: list[Context] = []
        previous = previous_context
        for method in methods:
            method_arguments = self._arguments(method.wanted, initial_context, previous)
            value = _call(method.target, method.is_async, (instance,), method_arguments)
            previous = Context(value, task_id, workflow_id)
            results.append(previous)
        return results

    @staticmethod
    def _arguments(
        wanted: tuple[str, ...], initial_context: Context, previous_context: Context
    ) -> dict[str, Context]:
        if not wanted:
            return {}
        available = {"initial_context": initial_context, "previous_context": previous_context}
        return {name: available[name] for name in wanted}


@overload
def action(target: Callable[..., Any], /) -> Action: ...


@overload
def action(
    *, retry: int = 1, timeout: float = 0, retry_delay: float = 1, backoff: bool = False
) -> Callable[[Callable[..., Any]], Action]: ...


def action(
    target: Callable[..., Any] | None = None,
    /,
    *,
    retry: int = 1,
    timeout: float = 0,
    retry_delay: float = 1,
    backoff: bool = False,
) -> Action | Callable[[Callable[..., Any]], Action]:
    """Mark a function or class as a step: ``@action`` or ``@action(retry=3, timeout=10)``."""

    def decorate(decorated: Callable[..., Any]) -> Action:
        return Action(
            decorated, retry=retry, timeout=timeout, retry_delay=retry_delay, backoff=backoff
        )

    return decorate if target is None else decorate(target)


def _check_int(option: str, value: object, minimum: int) -> None:
    if not is_strict_int(value, minimum):
        raise ValueError(f"@action({option}={value!r}): {option} must be an int >= {minimum}")


def _check_number(option: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"@action({option}={value!r}): {option} must be a number of seconds >= 0")


def _wanted_contexts(function: Callable[..., Any]) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return ()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return CONTEXT_PARAMETERS
    return tuple(name for name in CONTEXT_PARAMETERS if name in parameters)


def _action_methods(cls: type) -> list[Action]:
    """The ``@action`` methods of a class in definition order, base classes first."""
    ordered: dict[str, Action] = {}
    for klass in reversed(cls.__mro__):
        for attribute, value in vars(klass).items():
            if isinstance(value, Action):
                ordered[attribute] = value
            elif attribute in ordered:
                del ordered[attribute]
    return list(ordered.values())


def _call(
    function: Callable[..., Any], is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not is_async:
        return function(*args, **kwargs)
    import asyncio  # only async steps pay for it (about 25 ms at start-up otherwise)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(function(*args, **kwargs))
    # Called from inside a running loop (e.g. a notebook): run on a loop of our own.
    outcome: dict[str, Any] = {}

    def run_in_thread() -> None:
        try:
            outcome["value"] = asyncio.run(function(*args, **kwargs))
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run_in_thread, name="dotflow-async-step")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
