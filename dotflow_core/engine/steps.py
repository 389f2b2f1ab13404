"""Turning what ``task.add(step=...)`` receives into an :class:`Action`."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from dotflow_core.engine.action import Action
from dotflow_core.errors import InvalidStepError


def import_object(dotted: str, what: str) -> Any:
    """Import ``package.module.attribute`` or ``package.module:attribute`` (dotflow's form).

    The attribute may be nested (``mod.Class.method``, ``mod:Class.method``). With a
    colon the module is exactly what precedes it; with dots only, the longest
    importable prefix is the module.

    :raises InvalidStepError: the path is malformed or nothing importable is at it.
    """
    text = dotted.strip() if isinstance(dotted, str) else ""
    module_part, colon, attribute_part = text.partition(":")
    parts = [*module_part.split("."), *attribute_part.split(".")] if colon else text.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts) or ":" in attribute_part:
        raise InvalidStepError(
            f"{what} {dotted!r} is not an import path; expected 'module.function' or "
            f"'module:function', e.g. 'flow.extract' or 'flow:extract'"
        )
    splits = [len(module_part.split("."))] if colon else range(len(parts) - 1, 0, -1)
    for split in splits:
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if (
                not colon
                and error.name
                and (module_name == error.name or module_name.startswith(f"{error.name}."))
            ):
                continue  # this prefix is not a module; try a shorter one
            raise InvalidStepError(
                f"{what} {dotted!r}: importing {module_name!r} failed: {error}"
            ) from error
        except Exception as error:
            raise InvalidStepError(
                f"{what} {dotted!r}: importing {module_name!r} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            raise InvalidStepError(
                f"{what} {dotted!r}: module {module_name!r} has no attribute "
                f"{'.'.join(parts[split:])!r}"
            ) from None
        return obj
    raise InvalidStepError(f"{what} {dotted!r}: no module named {parts[0]!r}")


def callable_name(obj: object) -> str:
    """A function's or class's qualified name for messages; the ``repr`` of anything else."""
    return getattr(obj, "__qualname__", None) or repr(obj)


def resolve_step(step: Action | Callable[..., Any] | str) -> Action:
    """The action behind a step given as an action or a ``"module.func"`` path.

    :raises InvalidStepError: the step cannot be imported or lacks ``@action``.
    """
    obj = import_object(step, "step") if isinstance(step, str) else step
    if isinstance(obj, Action):
        if _is_plain_method(obj):
            owner = obj.target.__qualname__.rsplit(".", 1)[0]
            raise InvalidStepError(
                f"step {step if isinstance(step, str) else obj.name!r} is a method of class "
                f"{owner} (it takes self); a step is an @action function, or an @action class "
                f"whose @action methods run in order: mark {owner} with @action and pass it"
            )
        return obj
    label = step if isinstance(step, str) else callable_name(obj)
    raise InvalidStepError(
        f"step {label!r} is not marked with @action; decorate it: "
        f"'from dotflow_core import action' then '@action' above its definition"
    )


def _is_plain_method(step: Action) -> bool:
    """An ``@action`` function defined in a class that is not itself an action (``mod:Cls.m``)."""
    if step.is_class:
        return False
    qualname = getattr(step.target, "__qualname__", "")
    if "." not in qualname.replace("<locals>.", ""):
        return False
    try:
        first = next(iter(inspect.signature(step.target).parameters), None)
    except (TypeError, ValueError):
        return False
    return first == "self"


def resolve_callback(callback: Callable[..., Any] | str | None) -> Callable[..., Any] | None:
    """The callable behind a callback given as a callable, a ``"module.func"`` path or None."""
    if callback is None:
        return None
    obj = import_object(callback, "callback") if isinstance(callback, str) else callback
    if not callable(obj):
        raise InvalidStepError(f"callback {callback!r} is not callable")
    return obj
