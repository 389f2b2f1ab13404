"""The engine's event hooks, called the way pluggy would, without its per-call machinery.

The four event hooks (``create_workflow``, ``update_workflow``,
``create_task``, ``update_task``) fire several times per task, so pluggy's
generic call path (keyword arguments checked against the spec, the
implementations copied, the call loop with its result list) is most of an
event's cost. :func:`event_callers` builds, for each event hook some provider
implements, one function taking the record:

- when no implementation is a wrapper (``wrapper=True``, ``hookwrapper=True``),
  none takes keyword parameters with defaults, and the manager traces no hook
  call, it calls the implementations' functions itself, in pluggy's order
  (last registered first, ``tryfirst``/``trylast`` respected: the reverse of
  ``get_hookimpls()``), each with only the arguments it asks for
  (``HookImpl.argnames``). The functions are the manager's guarded ones (for
  an implementation taking the record, the guard's ``WITH_RECORD`` variant,
  which takes exactly the record), so error isolation is unchanged: an
  exception they let through (a ``KeyboardInterrupt``) stops the call there,
  as in pluggy;
- otherwise it goes through pluggy's own hook caller.

The manager rebuilds the callers whenever its providers change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import pluggy

#: The event hooks and the one argument each takes.
EVENT_HOOKS: Final = {
    "create_workflow": "workflow",
    "update_workflow": "workflow",
    "create_task": "task",
    "update_task": "task",
}

EventCaller = Callable[[Any], object]

#: The attribute of a guarded event-hook function holding its one-argument variant.
WITH_RECORD: Final = "dotflow_with_record"


def event_callers(plugins: pluggy.PluginManager, *, traced: bool) -> dict[str, EventCaller]:
    """A caller for each event hook that at least one registered plugin implements.

    :param traced: hook calls are monitored (``add_hookcall_monitoring``): every
        event then goes through pluggy, so the monitor sees it.
    """
    callers: dict[str, EventCaller] = {}
    for hook_name, argname in EVENT_HOOKS.items():
        hook: pluggy.HookCaller = getattr(plugins.hook, hook_name)
        impls = hook.get_hookimpls()
        if not impls:
            continue
        if traced or not all(_plain(impl, argname) for impl in impls):
            callers[hook_name] = _through_pluggy(hook, argname)
        else:
            callers[hook_name] = _direct(impls)
    return callers


def _plain(impl: pluggy.HookImpl, argname: str) -> bool:
    """An implementation the direct path calls exactly as pluggy would."""
    return (
        not impl.wrapper
        and not impl.hookwrapper
        and not impl.kwargnames
        and impl.argnames in ((), (argname,))
    )


def _direct(impls: Sequence[pluggy.HookImpl]) -> EventCaller:
    in_order = list(reversed(impls))  # pluggy's _multicall walks them in reverse
    if len(in_order) == 1 and in_order[0].argnames:
        return _with_record(in_order[0])
    calls: tuple[tuple[Callable[..., object], bool], ...] = tuple(
        (_with_record(impl) if impl.argnames else impl.function, bool(impl.argnames))
        for impl in in_order
    )

    def call_each(record: Any) -> None:
        for function, takes_record in calls:
            if takes_record:
                function(record)
            else:
                function()

    return call_each


def _with_record(impl: pluggy.HookImpl) -> EventCaller:
    """The function to call with the record: the guard's one-argument variant when it has one."""
    function: EventCaller = getattr(impl.function, WITH_RECORD, impl.function)
    return function


def _through_pluggy(hook: pluggy.HookCaller, argname: str) -> EventCaller:
    def call(record: Any) -> object:
        return hook(**{argname: record})

    return call
