"""The hook specifications every server provider may implement.

A provider implements any subset of these hooks, marked with
:data:`dotflow_core.hookimpl`; the hooks it leaves out cost nothing. Each
docstring below says when the hook fires, what it receives and what it may
return. The provider-authoring guide (``docs/providers.md``) has one section
per hook; a test keeps the two in step.

Hooks run in the process that started the workflow, also for tasks that ran
in worker processes (``mode="parallel"``), so one provider instance sees the
whole run. They may be called from more than one thread (background mode,
parallel groups, several workflows in one process), so a provider that keeps
state must guard it. An exception raised by a hook is logged (once per
provider and hook) and never breaks the workflow; only
:class:`dotflow_core.ConfigurationError` raised from ``configure`` or
``get_next_task_id`` stops a run, before any task starts.
"""

from __future__ import annotations

from dotflow_core.hooks.markers import hookspec
from dotflow_core.hooks.records import TaskRecord, WorkflowRecord
from dotflow_core.settings import Settings


@hookspec
def configure(settings: Settings) -> None:
    """Receive the provider's settings, before any other hook.

    Fires once each time a :class:`~dotflow_core.ProviderManager` activates the
    provider (``DotFlow(providers=...)``, ``dotflow start``), before the
    workflow is created. ``dotflow providers`` calls it too, on the active
    providers only, to name a setting ``dotflow start`` would refuse: read and
    check settings here, and open connections or start threads later (no other
    hook follows that call).

    :param settings: the environment and the ``[tool.dotflow]`` configuration;
        read your own keys with :meth:`Settings.lookup`, secrets with
        :meth:`Settings.secret`.
    :returns: nothing. Raise :class:`dotflow_core.ConfigurationError` with a
        one-line message naming the bad setting to reject the configuration:
        ``dotflow start`` then exits with code 2 before any task runs.
    """


@hookspec
def create_workflow(workflow: WorkflowRecord) -> None:
    """A workflow with a locally generated id was created.

    Fires once, from ``DotFlow()`` when no workflow id was supplied, before any
    ``create_task`` of that workflow. It does not fire for a workflow whose id
    the caller supplied (``DotFlow(workflow_id=...)``, ``WORKFLOW_ID``): that
    workflow already exists wherever the id came from.

    :param workflow: a frozen snapshot with status ``In progress``.
    :returns: nothing (a return value is ignored).
    """


@hookspec
def update_workflow(workflow: WorkflowRecord) -> None:
    """A workflow started or ended.

    Fires when ``start()`` begins (status ``In progress``, ``started_at`` and
    ``mode`` set) and when the run ends (status ``Completed`` or ``Failed``,
    with ``finished_at``, ``duration`` and the final counts), after the final
    ``update_task`` of every task that ran.

    :param workflow: a frozen snapshot taken at that moment.
    :returns: nothing (a return value is ignored).
    """


@hookspec
def create_task(task: TaskRecord) -> None:
    """A task was added to a workflow.

    Fires from ``workflow.task.add(...)``, once per task, in task-id order,
    after ``create_workflow`` and before any ``update_task`` of the same task.

    :param task: a frozen snapshot with status ``Not started``.
    :returns: nothing (a return value is ignored).
    """


@hookspec
def update_task(task: TaskRecord) -> None:
    """A task changed status.

    Fires on every status change, in order: ``In progress`` when an attempt
    starts, ``Retry`` when an attempt failed and another will follow,
    ``Completed`` or ``Failed`` (always the task's last event) when it ends.
    A task that never ran (an earlier task of its group failed without
    ``keep_going``) gets no update and stays ``Not started``.

    :param task: a frozen snapshot taken at that moment; its ``errors`` hold one
        entry per failed attempt and its contexts are copies of that moment.
    :returns: nothing (a return value is ignored).
    """


@hookspec(firstresult=True)
def get_next_task_id(workflow_id: str, run_id: str) -> int | None:
    """Say which id the first task of a resumed workflow's new run should get.

    Fires once, from ``DotFlow(workflow_id=...)`` when the caller supplied the
    workflow id (managed mode), before any task is added; never for a generated
    id. The first provider that answers with something other than ``None``
    wins (order: ``tryfirst`` implementations, then the most recently
    registered provider first, ``trylast`` ones last).

    Several runs may share a workflow id at once (a fleet of CI runners, two
    overlapping cron jobs): a provider whose destination can reserve ids
    should reserve them for ``run_id`` here, so that concurrent runs get
    disjoint ids, rather than answer "highest stored id + 1".

    :param workflow_id: the id the caller supplied.
    :param run_id: the new run (a UUID string), the ``run_id`` every record of
        this run will carry. An implementation that
        does not name it in its signature is called without it, as before.
    :returns: an ``int`` >= 1 (the next free task id), or ``None`` for "no
        opinion". When nobody answers, numbering starts at ``INITIAL_TASK_ID``.
        Raise :class:`dotflow_core.ConfigurationError` to stop the run instead
        (a strict provider that cannot reach its server).
    """


@hookspec
def flush(workflow_id: str, timeout: float | None) -> None:
    """A workflow finished: deliver what you still hold for it.

    Fires after the final ``update_workflow`` of a run, in every mode
    (sequential, background, parallel), also when the run was interrupted.
    Return once everything for ``workflow_id`` is delivered or safely stored,
    and never later than the deadline.

    :param workflow_id: the workflow that finished.
    :param timeout: seconds you may block; ``None`` means your own configured
        deadline. Never block without bound.
    :returns: nothing (a return value is ignored).
    """


@hookspec
def shutdown(timeout: float | None) -> None:
    """The process is ending: deliver or persist everything and release resources.

    Fires at interpreter exit and when ``dotflow start`` ends (normally, on
    error or on Ctrl-C), for every provider a manager activated. It may fire
    more than once for the same provider (one call per manager), so make it
    idempotent.

    :param timeout: seconds you may block; ``None`` means your own configured
        deadline. Never block without bound.
    :returns: nothing (a return value is ignored).
    :raises dotflow_core.UndeliveredEventsError: after delivering or persisting
        what it could, from a provider told to be strict about delivery whose
        events were dropped or left undelivered; ``dotflow start`` then exits 3.
    """


@hookspec
def run_link(workflow: WorkflowRecord) -> str | None:
    """Say where a person can look at a run that just ended (e.g. a dashboard page).

    Fires once from ``dotflow start`` when the run has ended (completed, failed
    or interrupted) and its events were flushed, just before ``shutdown``; the
    command prints each answer as the last lines of its output. Library code
    (``DotFlow.start()``) never calls it.

    :param workflow: a frozen snapshot of the run in its final state.
    :returns: an absolute URL (``http``/``https``) of the run's page, or ``None``
        when you have none; anything else is ignored. Do not block: answer from
        what you already know (e.g. a header the server sent).
    """
