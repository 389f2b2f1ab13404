"""The ``default`` dotflow server provider: the reference implementation.

It accepts every hook and reports nothing anywhere (it logs each event at
DEBUG on the ``dotflow.server.default`` logger), so a workflow runs the same
with it as with no provider at all. Read it first when writing a provider:
each hook's docstring says what a real provider would do at that point.

It is installed as the entry point ``default`` in the ``dotflow.server``
group, and selected when nothing else is (see ``dotflow providers``).
"""

from __future__ import annotations

import logging

from dotflow_core.plugin import INITIAL_TASK_ID, Settings, TaskRecord, WorkflowRecord, hookimpl

__version__ = "0.1.0"
__all__ = ["DefaultProvider", "provider"]

logger = logging.getLogger("dotflow.server.default")


class DefaultProvider:
    """Accepts every hook and keeps nothing; stateless, so safe from any thread."""

    @hookimpl
    def configure(self, settings: Settings) -> None:
        """Read and check your settings here, before anything else fires.

        A real provider reads its keys with ``settings.lookup("base_url",
        env="MY_URL", section="my")`` and secrets with ``settings.secret(...)``,
        and raises ``ConfigurationError`` naming the bad setting to stop the
        run before any task starts. This one needs no settings.
        """
        logger.debug("configure: nothing to configure (config file: %s)", settings.config_path)

    @hookimpl
    def create_workflow(self, workflow: WorkflowRecord) -> None:
        """Register the new workflow where you report (a server, a database, a file)."""
        logger.debug("create_workflow %s", workflow.workflow_id)

    @hookimpl
    def update_workflow(self, workflow: WorkflowRecord) -> None:
        """Record the workflow's start, and at the end its final status, duration and counts."""
        logger.debug("update_workflow %s: %s", workflow.workflow_id, workflow.status)

    @hookimpl
    def create_task(self, task: TaskRecord) -> None:
        """Register the task (status ``Not started``) under its workflow."""
        logger.debug("create_task %s#%d %s", task.workflow_id, task.task_id, task.name)

    @hookimpl
    def update_task(self, task: TaskRecord) -> None:
        """Record the task's new status; queue it rather than block if delivery is slow."""
        logger.debug(
            "update_task %s#%d %s: %s", task.workflow_id, task.task_id, task.name, task.status
        )

    @hookimpl(trylast=True)
    def get_next_task_id(self, workflow_id: str) -> int | None:
        """Answer the next free task id of a resumed workflow, or None for "no opinion".

        A real provider asks its server how many tasks the workflow already has.
        This one knows nothing, so it answers ``INITIAL_TASK_ID`` and, being
        ``trylast``, only when no other active provider answered first.
        """
        logger.debug("get_next_task_id %s: %d (no history kept)", workflow_id, INITIAL_TASK_ID)
        return INITIAL_TASK_ID

    @hookimpl
    def flush(self, workflow_id: str, timeout: float | None) -> None:
        """Deliver everything still queued for this workflow, within ``timeout`` seconds."""
        logger.debug("flush %s: nothing queued", workflow_id)

    @hookimpl
    def shutdown(self, timeout: float | None) -> None:
        """Deliver or persist what is left and release resources; may be called twice."""
        logger.debug("shutdown: nothing to release")


#: The plugin object the ``default`` entry point names.
provider = DefaultProvider()
