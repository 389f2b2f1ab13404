"""``dotflow start``: run steps (or a workflow factory) as one workflow, report to providers.

Everything that can be wrong with the command line, the configuration or the
providers is checked before the workflow exists (exit 2, one line, no event
reported). Once the manager exists, every way out calls its ``shutdown``
exactly once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dotflow_core.cli import process
from dotflow_core.cli._common import (
    EXIT_OK,
    EXIT_TASK_FAILED,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
    CliError,
    interrupted_exit_code,
)
from dotflow_core.cli.inputs import parse_initial_context, resolve_factory, resolve_steps
from dotflow_core.cli.output import Output, ProgressReporter, route_library_logs
from dotflow_core.discovery import installed_providers
from dotflow_core.engine.action import Action
from dotflow_core.engine.steps import callable_name, resolve_callback
from dotflow_core.engine.workflow import DotFlow, check_workflow_id, providers_for_new_workflows
from dotflow_core.errors import ConfigurationError
from dotflow_core.hooks.records import TaskStatus, WorkflowStatus
from dotflow_core.manager import ProviderManager
from dotflow_core.selection import Selection, select_providers
from dotflow_core.serialize import capped_repr
from dotflow_core.settings import Settings

if TYPE_CHECKING:
    from dotflow_core.engine.executor_specs import ExecutorSpec, OwnedExecutor

#: The name the progress reporter is registered under on the run's manager.
REPORTER_NAME = "dotflow-cli"
#: Seconds providers get to deliver what they hold after Ctrl-C.
INTERRUPT_SHUTDOWN_TIMEOUT = 5.0
#: Options that describe the tasks of a ``--step`` run; a factory describes its own.
_STEP_ONLY = (
    ("initial_context", "--initial-context"),
    ("callback", "--callback"),
    ("name", "--name"),
    ("workflow_id", "--workflow-id"),
)


def run(options: argparse.Namespace) -> int:
    """Run the command; returns the exit code (see :mod:`dotflow_core.cli`)."""
    output = Output(options.log_format, quiet=options.quiet, tracebacks=options.verbose > 0)
    route_library_logs(output, options.verbose)
    try:
        check_options(options)
        settings = Settings.load()
        initial_context = parse_initial_context(options.initial_context)
        selection = select_providers(settings, installed_providers(), flag=options.provider)
        process.startup_finished()  # user code from here on
        factory = resolve_factory(options.workflow) if options.workflow else None
        steps = resolve_steps(options.step or [])
        callback = resolve_callback(options.callback) if options.callback else None
        spec = executor_spec(settings, options)
        manager = ProviderManager.from_providers(selection.names, settings)
        manager.selection = selection
    except (ConfigurationError, CliError) as error:
        output.error(str(error), EXIT_USAGE)
        return EXIT_USAGE
    build = (
        (lambda: _from_factory(factory, options.workflow, manager))
        if factory is not None
        else (lambda: _from_steps(options, manager, steps, callback, initial_context))
    )
    if spec is None:
        return _run_with(manager, selection, output, options, build)
    from dotflow_core.engine.executor_specs import OwnedExecutor

    try:
        owned = OwnedExecutor.open(spec)
    except ConfigurationError as error:
        output.error(str(error), EXIT_USAGE)
        manager.shutdown(timeout=None)
        return EXIT_USAGE
    except KeyboardInterrupt:
        manager.shutdown(timeout=INTERRUPT_SHUTDOWN_TIMEOUT)
        raise
    with owned:
        return _run_with(manager, selection, output, options, build, owned)


def check_options(options: argparse.Namespace) -> None:
    """Combinations argparse cannot refuse by itself.

    :raises CliError: a factory with step options (as dotflow refuses them), or a
        ``--group`` that no ``--step`` follows.
    """
    if options.workflow:
        for attribute, flag in _STEP_ONLY:
            if getattr(options, attribute, None) is not None:
                raise CliError(
                    f"{flag} applies to --step runs; a --workflow factory sets it on its "
                    f"DotFlow itself (or use WORKFLOW_ID for the id)"
                )
        if options.groups:
            raise CliError("--group applies to --step runs; a --workflow factory groups its tasks")
        return
    used = {group for group, _ in options.step or []}
    for group in options.groups:
        if group not in used:
            raise CliError(
                f"--group {group!r}: no --step follows it; put the group's steps after it"
            )


def _from_steps(
    options: argparse.Namespace,
    manager: ProviderManager,
    steps: list[tuple[str, Action]],
    callback: Any,
    initial_context: Any,
) -> DotFlow:
    workflow_id = options.workflow_id
    if workflow_id is not None:
        workflow_id = check_workflow_id(workflow_id, "--workflow-id")
    workflow = DotFlow(workflow_id=workflow_id, providers=manager, name=options.name)
    for group, step in steps:
        workflow.task.add(
            step=step, callback=callback, initial_context=initial_context, group_name=group
        )
    return workflow


def _from_factory(factory: Callable[[], Any], path: str, manager: ProviderManager) -> DotFlow:
    """Call the ``--workflow`` factory; a ``DotFlow(providers=None)`` in it gets the CLI's.

    :raises CliError: it raised, returned something else than an unstarted DotFlow,
        or gave its workflow providers of its own (they would miss the CLI's progress
        and selection: leave ``providers`` out).
    """
    with providers_for_new_workflows(manager):
        try:
            workflow = factory()
        except ConfigurationError:
            raise
        except Exception as error:
            raise CliError(
                f"--workflow {path}: {callable_name(factory)}() raised "
                f"{type(error).__name__}: {error}"
            ) from error
    if not isinstance(workflow, DotFlow):
        raise CliError(
            f"--workflow {path}: {callable_name(factory)}() returned {capped_repr(workflow, 80)}; "
            f"expected a DotFlow, configured and not started"
        )
    if workflow.providers is not manager:
        raise CliError(
            f"--workflow {path}: the factory's DotFlow has providers of its own; leave "
            f"providers= out so that --provider, DOTFLOW_PROVIDER and the config file apply"
        )
    if workflow.mode is not None:
        raise CliError(f"--workflow {path}: the factory started its workflow; return it unstarted")
    return workflow


def executor_spec(settings: Settings, options: argparse.Namespace) -> ExecutorSpec | None:
    """The executor of a parallel run: ``--executor``, else ``DOTFLOW_EXECUTOR``, else the
    config file; None for the built-in worker processes (and for the other modes).

    :raises CliError: ``--executor`` with a mode other than parallel.
    :raises ConfigurationError: a bad spec, or Dask named and not installed.
    """
    if options.mode != "parallel":
        if options.executor is not None:
            raise CliError(
                f"--executor {options.executor}: executors run tasks in parallel mode only; "
                f"add --mode parallel"
            )
        return None  # DOTFLOW_EXECUTOR and the config file say where parallel runs go
    from dotflow_core.engine.executor_specs import check_available, configured_executor

    spec = configured_executor(settings, options.executor)
    if spec is not None:
        check_available(spec)
    return spec


def _run_with(
    manager: ProviderManager,
    selection: Selection,
    output: Output,
    options: argparse.Namespace,
    build: Callable[[], DotFlow],
    owned: OwnedExecutor | None = None,
) -> int:
    described = selection.describe()
    manager.add(
        ProgressReporter(output, selection.names, selection.source, described), name=REPORTER_NAME
    )
    shut_down = False
    try:
        try:
            workflow = build()
        except (ConfigurationError, CliError) as error:
            output.error(str(error), EXIT_USAGE)
            return EXIT_USAGE
        except KeyboardInterrupt:
            shut_down = True  # set first: a second Ctrl-C must not start an unbounded one
            manager.shutdown(timeout=INTERRUPT_SHUTDOWN_TIMEOUT)
            raise
        clock = time.perf_counter()
        interruption: KeyboardInterrupt | None = None
        links: list[str] = []
        try:
            workflow.start(
                mode=options.mode,
                keep_going=options.keep_going,
                executor=owned.executor if owned else None,
            )
            if options.mode == "background":
                workflow.wait()
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (process.Terminated)
            interruption = interrupt
            # Background mode: Ctrl-C lands here, not in the run's thread; end the run
            # the same way (running tasks and the workflow reported Failed, flushed).
            workflow.cancel(reason=interrupt)
            shut_down = True
            links = manager.run_links(workflow.snapshot())
            manager.shutdown(timeout=INTERRUPT_SHUTDOWN_TIMEOUT)
        tasks = workflow.result_task()
        statuses = [task.status for task in tasks]
        interrupted = interruption is not None
        if not shut_down:
            links = manager.run_links(workflow.snapshot())
            manager.shutdown(timeout=None)
            shut_down = True
        exit_code = _exit_code(interruption, statuses, workflow.status, manager.undelivered)
        output.summary(
            workflow_id=workflow.workflow_id,
            status=workflow.status,
            interrupted=interrupted,
            mode=options.mode,
            providers=selection.names,
            source=selection.source,
            described=described,
            statuses=statuses,
            failures=[
                (task.task_id, task.name, task.errors[-1] if task.errors else None)
                for task in tasks
                if task.status is TaskStatus.FAILED
            ],
            duration=workflow.duration
            if workflow.duration is not None
            else time.perf_counter() - clock,
            exit_code=exit_code,
            links=links,
        )
        if interrupted and (options.mode == "background" or owned is not None):
            # The run's thread (or an executor's) may still be inside a step that cannot be
            # interrupted and would keep the process alive; providers have had their
            # bounded shutdown, and the executor is closed first (its workers stopped).
            if owned is not None:
                owned.close()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exit_code)
        return exit_code
    finally:
        if not shut_down:
            manager.shutdown(timeout=None)


def _exit_code(
    interruption: KeyboardInterrupt | None,
    statuses: list[TaskStatus],
    status: WorkflowStatus | None,
    undelivered: bool,
) -> int:
    """130/143 interrupted, 1 a task or the workflow failed, 3 events undelivered (strict), 0."""
    if interruption is not None:
        return interrupted_exit_code(interruption)
    if TaskStatus.FAILED in statuses or status is WorkflowStatus.FAILED:
        return EXIT_TASK_FAILED
    return EXIT_UNDELIVERED if undelivered else EXIT_OK
