"""``dotflow start``: run steps as one workflow, report to the selected providers.

Everything that can be wrong with the command line, the configuration or the
providers is checked before the workflow exists (exit 2, one line, no event
reported). Once the manager exists, every way out calls its ``shutdown``
exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotflow_core.cli import (
    EXIT_OK,
    EXIT_TASK_FAILED,
    EXIT_USAGE,
    CliError,
    interrupted_exit_code,
    process,
)
from dotflow_core.cli.output import Output, ProgressReporter, route_library_logs
from dotflow_core.discovery import installed_providers
from dotflow_core.engine.action import Action
from dotflow_core.engine.steps import resolve_callback, resolve_step
from dotflow_core.engine.workflow import DotFlow, check_workflow_id
from dotflow_core.errors import ConfigurationError
from dotflow_core.hooks.records import TaskStatus, WorkflowStatus
from dotflow_core.manager import ProviderManager
from dotflow_core.selection import Selection, select_providers
from dotflow_core.settings import Settings

if TYPE_CHECKING:
    from dotflow_core.engine.executor_specs import ExecutorSpec, OwnedExecutor

#: The name the progress reporter is registered under on the run's manager.
REPORTER_NAME = "dotflow-cli"
#: Seconds providers get to deliver what they hold after Ctrl-C.
INTERRUPT_SHUTDOWN_TIMEOUT = 5.0


def run(options: argparse.Namespace) -> int:
    """Run the command; returns the exit code (see :mod:`dotflow_core.cli`)."""
    output = Output(options.log_format, quiet=options.quiet, tracebacks=options.verbose > 0)
    route_library_logs(output, options.verbose)
    try:
        settings = Settings.load()
        initial_context = parse_initial_context(options.initial_context)
        selection = select_providers(settings, installed_providers(), flag=options.provider)
        process.startup_finished()  # user code from here on
        steps = resolve_steps(options.step)
        callback = resolve_callback(options.callback) if options.callback else None
        spec = executor_spec(settings, options)
        manager = ProviderManager.from_providers(selection.names, settings)
    except (ConfigurationError, CliError) as error:
        output.error(str(error), EXIT_USAGE)
        return EXIT_USAGE
    if spec is None:
        return _run_with(manager, selection, output, options, steps, callback, initial_context)
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
        return _run_with(
            manager, selection, output, options, steps, callback, initial_context, owned
        )


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
    steps: list[Action],
    callback: Any,
    initial_context: Any,
    owned: OwnedExecutor | None = None,
) -> int:
    described = selection.describe()
    manager.add(
        ProgressReporter(output, selection.names, selection.source, described), name=REPORTER_NAME
    )
    shut_down = False
    try:
        try:
            workflow_id = options.workflow_id
            if workflow_id is not None:
                workflow_id = check_workflow_id(workflow_id, "--workflow-id")
            workflow = DotFlow(workflow_id=workflow_id, providers=manager)
            for step in steps:
                workflow.task.add(step=step, callback=callback, initial_context=initial_context)
        except ConfigurationError as error:
            output.error(str(error), EXIT_USAGE)
            return EXIT_USAGE
        except KeyboardInterrupt:
            shut_down = True  # set first: a second Ctrl-C must not start an unbounded one
            manager.shutdown(timeout=INTERRUPT_SHUTDOWN_TIMEOUT)
            raise
        clock = time.perf_counter()
        interruption: KeyboardInterrupt | None = None
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
            manager.shutdown(timeout=INTERRUPT_SHUTDOWN_TIMEOUT)
        statuses = [task.status for task in workflow.result_task()]
        interrupted = interruption is not None
        if interruption is not None:
            exit_code = interrupted_exit_code(interruption)
        elif TaskStatus.FAILED in statuses or workflow.status is WorkflowStatus.FAILED:
            exit_code = EXIT_TASK_FAILED
        else:
            exit_code = EXIT_OK
        if not shut_down:
            manager.shutdown(timeout=None)
            shut_down = True
        output.summary(
            workflow_id=workflow.workflow_id,
            status=workflow.status,
            interrupted=interrupted,
            mode=options.mode,
            providers=selection.names,
            source=selection.source,
            described=described,
            statuses=statuses,
            duration=workflow.duration
            if workflow.duration is not None
            else time.perf_counter() - clock,
            exit_code=exit_code,
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


def parse_initial_context(value: str | None) -> Any:
    """The ``--initial-context`` value: JSON text, or ``@path`` to a JSON file.

    :raises CliError: the file cannot be read or the text is not JSON.
    """
    if value is None:
        return None
    origin = "--initial-context"
    text = value
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        origin = f"--initial-context {value}"
        if not value[1:]:
            raise CliError(f"{origin}: no file name after '@'; use @path/to/context.json")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise CliError(f"{origin}: cannot read {str(path)!r}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise CliError(f"{origin}: {str(path)!r} is not UTF-8 text: {error.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"{origin}: invalid JSON at line {error.lineno} column {error.colno} "
            f"(offset {error.pos}): {error.msg}; pass JSON such as '{{\"rows\": 10}}' or "
            f"'\"text\"', or @file"
        ) from None


def resolve_steps(paths: list[str]) -> list[Action]:
    """Import every ``--step`` (the current directory first on ``sys.path``) before anything runs.

    :raises InvalidStepError: a step cannot be imported or lacks ``@action``.
    """
    here = os.getcwd()
    if not sys.path or sys.path[0] not in (here, ""):
        sys.path.insert(0, here)
    return [resolve_step(path) for path in paths]
