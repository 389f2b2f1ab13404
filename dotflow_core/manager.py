"""The provider manager: discovery, selection, registration and error isolation.

Installed providers are found through the ``dotflow.server`` entry-point
group (entry-point name = provider name). Only the selected ones are imported,
so start-up stays fast however many are installed. A provider that raises
inside a hook never breaks the workflow: the error is logged once per provider
and hook, and the hook call goes on with the next provider.

The engine receives a manager (``DotFlow(providers=manager)``) and only calls
its hooks; building one from the environment is :meth:`ProviderManager.from_environment`.
Discovery and selection are imported only when a manager is built from names.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from dotflow_core.dispatch import EVENT_HOOKS, WITH_RECORD, EventCaller, event_callers
from dotflow_core.errors import (
    ConfigurationError,
    ProviderLoadError,
    UndeliveredEventsError,
    UnknownProviderError,
)
from dotflow_core.hooks import specs
from dotflow_core.hooks.markers import PROJECT_NAME
from dotflow_core.hooks.records import (
    INITIAL_TASK_ID,
    MAX_TASK_ID,
    TaskRecord,
    WorkflowRecord,
    is_strict_int,
)
from dotflow_core.messages import one_line
from dotflow_core.settings import FLAG_CHOICES, Settings, parse_flag

if TYPE_CHECKING:
    from dotflow_core.selection import Selection

logger = logging.getLogger("dotflow.providers")

#: A true value (1, true, yes, on) prints every hook call to stderr (hook, providers,
#: arguments, result, time).
TRACE_ENV = "DOTFLOW_TRACE_HOOKS"
#: Hooks whose ConfigurationError stops the run instead of being isolated.
_CONFIGURATION_HOOKS = frozenset({"configure", "get_next_task_id"})
#: Longest link a ``run_link`` answer may be.
MAX_LINK_LENGTH = 2048


def tracing_requested() -> bool:
    """Whether ``DOTFLOW_TRACE_HOOKS`` asks for hook tracing; a value that is no flag warns."""
    return _tracing(os.environ.get(TRACE_ENV, ""))


@functools.lru_cache(maxsize=4)
def _tracing(raw: str) -> bool:  # cached: one warning per process for a bad value
    if not raw.strip():
        return False
    wanted = parse_flag(raw)
    if wanted is None:
        logger.warning("%s=%r: expected %s; hook tracing stays off", TRACE_ENV, raw, FLAG_CHOICES)
        return False
    return wanted


@attrs.frozen
class HookFailure:
    """One exception a provider raised inside a hook (kept for tests and diagnostics)."""

    provider: str
    hook: str
    error: BaseException


def load_provider(name: str) -> Any:
    """Import the provider registered under ``name`` and return its plugin object.

    :raises UnknownProviderError: no installed distribution offers ``name``.
    :raises ProviderLoadError: importing it failed.
    """
    from dotflow_core.discovery import installed_providers

    installed = installed_providers()
    if name not in installed:
        raise UnknownProviderError(name, list(installed))
    entry = installed[name]
    if entry.also_offered_by:
        offering = ", ".join(str(dist) for dist in (entry.distribution, *entry.also_offered_by))
        raise ProviderLoadError(
            name, f"more than one distribution offers it ({offering}); uninstall all but one"
        )
    try:
        return entry.entry_point.load()
    except Exception as error:
        raise ProviderLoadError(name, f"{type(error).__name__}: {error}") from error


class ProviderManager:
    """The active providers of a workflow, and the one way the engine calls them.

    ``manager.hook.<name>(...)`` calls a hook on every active provider.
    Providers are added by name (an installed entry point) or as objects
    carrying ``@hookimpl`` functions (a module, a class instance). An
    exception a provider raises in a hook is logged once and kept in
    ``failures`` (:class:`HookFailure`: provider, hook, error); the call goes on.
    """

    def __init__(self, *, shutdown_at_exit: bool = True) -> None:
        """:param shutdown_at_exit: give every provider added here a ``shutdown`` call at
        interpreter exit; False for a manager that only checks providers (never runs them)."""
        self._shutdown_at_exit = shutdown_at_exit
        self._plugins = pluggy.PluginManager(PROJECT_NAME)
        self._plugins.add_hookspecs(specs)
        self.hook = self._plugins.hook
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()
        #: The guarded stand-in registered with pluggy for each plugin, by ``id(plugin)``.
        self._proxies: dict[int, _GuardedPlugin] = {}
        #: Which rule chose the providers, for a manager built by :meth:`from_environment`.
        self.selection: Selection | None = None
        #: Names of the hooks at least one active provider implements.
        self.listening: frozenset[str] = frozenset()
        #: How the engine calls each event hook some provider implements: one function
        #: taking the record (:mod:`dotflow_core.dispatch`). Updated in place as providers
        #: are added, so that the engine may hold on to this very dict.
        self.event_callers: dict[str, EventCaller] = {}
        #: Every exception a provider raised inside a hook, in order.
        self.failures: list[HookFailure] = []
        self._traced = tracing_requested()
        if self._traced:
            self._plugins.add_hookcall_monitoring(*_stderr_tracer())

    @classmethod
    def from_providers(
        cls, providers: Iterable[str | object], settings: Settings | None = None
    ) -> ProviderManager:
        """A manager with the given providers (names and/or plugin objects), configured.

        :raises ConfigurationError: a name is unknown, a provider fails to load,
            or a provider rejects its settings.
        """
        manager = cls()
        armed_before = set(_EXIT_PLUGINS)
        try:
            for provider in providers:
                if isinstance(provider, str):
                    manager.add_installed(provider)
                else:
                    manager.add(provider)
            manager.configure(settings if settings is not None else Settings.load())
        except BaseException:
            # The run is refused: providers added here never heard of it, so they get
            # no shutdown at exit either (unless another manager still uses them).
            for plugin_id in manager._proxies:
                if plugin_id not in armed_before:
                    _EXIT_PLUGINS.pop(plugin_id, None)
            raise
        return manager

    @classmethod
    def from_environment(
        cls, settings: Settings | None = None, *, flag: str | None = None
    ) -> ProviderManager:
        """A manager with the providers the selection rules choose (:mod:`dotflow_core.selection`).

        What ``DotFlow(providers=None)`` and ``dotflow start`` use: ``flag`` is an
        explicit choice (``--provider``), then ``DOTFLOW_PROVIDER``, the config file,
        a provider's auto-selection, ``default``. The rule that applied is kept in
        :attr:`selection`.

        :raises ConfigurationError: see :meth:`from_providers`, and a bad selection.
        """
        from dotflow_core.discovery import installed_providers
        from dotflow_core.selection import select_providers

        settings = settings if settings is not None else Settings.load()
        selection = select_providers(settings, installed_providers(), flag=flag)
        manager = cls.from_providers(selection.names, settings)
        manager.selection = selection
        return manager

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the active providers, in registration order."""
        return tuple(
            name for name, plugin in self._plugins.list_name_plugin() if plugin is not None
        )

    def add_installed(self, name: str) -> str:
        """Import the installed provider ``name`` and activate it under that name."""
        return self.add(load_provider(name), name=name)

    def add(self, plugin: object, name: str | None = None) -> str:
        """Activate a plugin object carrying ``@hookimpl`` functions.

        :returns: the name it was registered under.
        :raises ProviderLoadError: ``plugin`` is a class or implements no hook, a hook
            signature does not match its spec, or it implements a hook that does not exist.
        """
        name = name or self._name_for(plugin)
        if isinstance(plugin, type):
            raise ProviderLoadError(
                name, f"it is a class; pass an instance, e.g. {plugin.__name__}()"
            )
        proxy = self._guarded_plugin(plugin, name)
        try:
            self._plugins.register(proxy, name=name)
        except (pluggy.PluginValidationError, ValueError) as error:
            raise ProviderLoadError(name, _plugin_error(error, plugin)) from error
        if not self._plugins.get_hookcallers(proxy):
            self._plugins.unregister(proxy)
            raise ProviderLoadError(
                name, "it implements no hook: mark its hook functions with @hookimpl"
            )
        try:
            self._plugins.check_pending()
        except pluggy.PluginValidationError as error:
            self._plugins.unregister(proxy)
            raise ProviderLoadError(name, _plugin_error(error, plugin)) from error
        self._proxies[id(plugin)] = proxy
        self.listening = frozenset(
            caller.name
            for caller in vars(self.hook).values()
            if isinstance(caller, pluggy.HookCaller) and caller.get_hookimpls()
        )
        callers = event_callers(self._plugins, traced=self._traced)
        self.event_callers.clear()
        self.event_callers.update(callers)
        if self._shutdown_at_exit and any(
            impl.plugin is proxy for impl in self.hook.shutdown.get_hookimpls()
        ):  # a plugin without a shutdown hook has nothing to hear at exit
            _EXIT_PLUGINS.setdefault(id(plugin), (plugin, name))
            _SHUT_DOWN.discard(id(plugin))
        return name

    def configure(self, settings: Settings) -> None:
        """Give every active provider its settings (the ``configure`` hook)."""
        self.hook.configure(settings=settings)

    def next_task_id(self, workflow_id: str, run_id: str) -> int:
        """The id of the first new task of run ``run_id`` of an externally identified workflow.

        Asks the providers (``get_next_task_id``); falls back to
        ``INITIAL_TASK_ID`` when none answers or the answer is unusable.
        """
        answer = self.hook.get_next_task_id(workflow_id=workflow_id, run_id=run_id)
        if answer is None:
            return INITIAL_TASK_ID
        if is_strict_int(answer, INITIAL_TASK_ID, MAX_TASK_ID):
            return answer
        logger.warning(
            "get_next_task_id answered %.80r for workflow %s; expected an int from %d to %d; "
            "numbering starts at %d and may collide with earlier task ids",
            answer,
            workflow_id,
            INITIAL_TASK_ID,
            MAX_TASK_ID,
            INITIAL_TASK_ID,
        )
        return INITIAL_TASK_ID

    def run_links(self, workflow: WorkflowRecord) -> list[str]:
        """Where the providers say the ended run can be seen (the ``run_link`` hook).

        Only absolute ``http(s)`` URLs without spaces or control characters count;
        duplicates are dropped, the providers' order is kept.
        """
        links: list[str] = []
        for answer in self.hook.run_link(workflow=workflow):
            if (
                isinstance(answer, str)
                and answer.startswith(("http://", "https://"))
                and len(answer) <= MAX_LINK_LENGTH
                and answer.isprintable()
                and " " not in answer
                and answer not in links
            ):
                links.append(answer)
        return links

    def flush(self, workflow_id: str, timeout: float | None = None) -> None:
        """Ask every provider to deliver what it holds for ``workflow_id``."""
        self.hook.flush(workflow_id=workflow_id, timeout=timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """Ask every provider to deliver or persist everything and release resources."""
        self.hook.shutdown(timeout=timeout)

    def _name_for(self, plugin: object) -> str:
        base = getattr(plugin, "__name__", None) or type(plugin).__name__
        name, suffix = base, 2
        while self._plugins.has_plugin(name):
            name, suffix = f"{base}-{suffix}", suffix + 1
        return name

    def _guarded_plugin(self, plugin: object, provider: str) -> _GuardedPlugin:
        """A stand-in for ``plugin`` whose hook functions log their exceptions, not raise them.

        pluggy registers the stand-in and keeps its own call loop, ordering and
        monitoring; nothing of pluggy's is changed. Wrappers (``wrapper=True``,
        ``hookwrapper=True``) are passed on as they are.
        """
        functions: dict[str, Callable[..., Any]] = {}
        for attribute in dir(plugin):
            options = self._plugins.parse_hookimpl_opts(plugin, attribute)
            if options is None:
                continue
            function = getattr(plugin, attribute)
            if not (options.get("wrapper") or options.get("hookwrapper")):
                hook = options.get("specname") or attribute
                function = self._guarded(function, provider, hook, id(plugin))
                setattr(function, f"{PROJECT_NAME}_impl", dict(options))
            functions[attribute] = function
        return _GuardedPlugin(plugin, functions)

    def _guarded(
        self, function: Callable[..., Any], provider: str, hook: str, plugin_id: int
    ) -> Callable[..., Any]:
        passthrough: tuple[type[BaseException], ...] = (
            (ConfigurationError,) if hook in _CONFIGURATION_HOOKS else ()
        )
        is_shutdown = hook == "shutdown"

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # A plugin whose last hook was shutdown gets no second one at exit.
            if is_shutdown:
                _SHUT_DOWN.add(plugin_id)
            elif _SHUT_DOWN:
                _SHUT_DOWN.discard(plugin_id)
            try:
                return function(*args, **kwargs)
            except passthrough:
                raise
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # SystemExit, CancelledError too: never the run's end
                self._isolate(provider, hook, error)
                return None

        if hook in EVENT_HOOKS:
            setattr(guarded, WITH_RECORD, self._guarded_event(function, provider, hook, plugin_id))
        return guarded

    def _guarded_event(
        self, function: Callable[..., Any], provider: str, hook: str, plugin_id: int
    ) -> Callable[[Any], Any]:
        """The guard of an event hook called with just its record (:mod:`dotflow_core.dispatch`).

        The same as the general guard, without the argument tuple and dict it
        builds: two thirds of a guarded call's cost, paid several times per task.
        """

        def guarded_event(record: Any) -> Any:
            if _SHUT_DOWN:
                _SHUT_DOWN.discard(plugin_id)
            try:
                return function(record)
            except KeyboardInterrupt:
                raise
            except BaseException as error:
                self._isolate(provider, hook, error)
                return None

        return guarded_event

    def _isolate(self, provider: str, hook: str, error: BaseException) -> None:
        """Keep and log an exception a provider's hook raised, instead of raising it."""
        if isinstance(error, UndeliveredEventsError):  # a verdict, not a bug: no traceback
            self._record_undelivered(provider, hook, error)
        else:
            self._record_failure(provider, hook, error)

    def _record_undelivered(self, provider: str, hook: str, error: UndeliveredEventsError) -> None:
        with self._lock:
            self.failures.append(HookFailure(provider, hook, error))
        logger.error("provider %r: %s", provider, one_line(error))

    @property
    def undelivered(self) -> bool:
        """True when a provider reported undelivered events (strict delivery; see errors)."""
        with self._lock:
            return any(
                isinstance(failure.error, UndeliveredEventsError) for failure in self.failures
            )

    def _record_failure(self, provider: str, hook: str, error: BaseException) -> None:
        with self._lock:
            self.failures.append(HookFailure(provider, hook, error))
            first = (provider, hook) not in self._logged
            self._logged.add((provider, hook))
        if first:
            logger.error(
                "provider %r raised in hook %r: %s: %s (the workflow goes on; further "
                "errors of this provider in this hook are counted, not logged)",
                provider,
                hook,
                type(error).__name__,
                one_line(error),
                exc_info=error,
            )


class _GuardedPlugin:
    """What pluggy registers for a provider: its hook functions, guarded, as attributes."""

    def __init__(self, plugin: object, functions: Mapping[str, Callable[..., Any]]) -> None:
        self.__dict__.update(functions)
        self._dotflow_plugin = plugin

    def __repr__(self) -> str:
        return repr(self._dotflow_plugin)


def _plugin_error(error: BaseException, plugin: object) -> str:
    """pluggy's validation message on one line, without the plugin's memory-address repr."""
    text = one_line(error)
    return text.replace(f"plugin {plugin!r}", "this provider").replace(repr(plugin), "it")


#: Every plugin any manager activated in this process, so that each gets one
#: ``shutdown`` call at interpreter exit, even after its workflow was collected.
_EXIT_PLUGINS: dict[int, tuple[object, str]] = {}
#: Plugins (by id) whose last hook call was ``shutdown`` (``dotflow start`` ends with
#: one): the exit hook leaves them alone; any later hook call takes them off.
_SHUT_DOWN: set[int] = set()


@atexit.register
def _shutdown_at_exit() -> None:
    waiting = [entry for entry in _EXIT_PLUGINS.values() if id(entry[0]) not in _SHUT_DOWN]
    _EXIT_PLUGINS.clear()
    if not waiting:  # the usual end of ``dotflow start``: no manager to build
        return
    manager = ProviderManager(shutdown_at_exit=False)
    for plugin, name in waiting:
        manager.add(plugin, name=None if manager._plugins.has_plugin(name) else name)
    manager.shutdown(timeout=None)


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, TaskRecord):
        return f"task({value.workflow_id}#{value.task_id} {value.status.value})"
    if isinstance(value, WorkflowRecord):
        return f"workflow({value.workflow_id} {value.status.value})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _stderr_tracer() -> tuple[Callable[..., None], Callable[..., None]]:
    """Before/after callbacks for pluggy's hook-call monitoring that print to stderr."""
    started = threading.local()

    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        stack = getattr(started, "stack", None)
        if stack is None:
            stack = started.stack = []
        stack.append(time.perf_counter())

    def after(
        outcome: pluggy.Result[Any],
        hook_name: str,
        impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, Any],
    ) -> None:
        elapsed_ms = (time.perf_counter() - started.stack.pop()) * 1000
        providers = ",".join(impl.plugin_name for impl in impls) or "-"
        arguments = ", ".join(f"{key}={_short(value)}" for key, value in kwargs.items())
        if outcome.exception is not None:
            result = f"raised {type(outcome.exception).__name__}"
        else:
            result = _short(outcome.get_result())
        sys.stderr.write(
            f"dotflow-trace {hook_name}({arguments}) providers=[{providers}] "
            f"-> {result} ({elapsed_ms:.3f} ms)\n"
        )

    return before, after
