"""The contract kit itself: it passes a correct provider and catches broken ones."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

KIT_HEADER = """
import threading
from dotflow_core import hookimpl
from dotflow_core.testing import ProviderContract, RecordingProvider
"""


def run_kit(pytester: pytest.Pytester, provider_source: str, extra: str = "") -> pytest.RunResult:
    pytester.makepyfile(
        test_provider=KIT_HEADER
        + provider_source
        + f"""

class TestProvider(ProviderContract):
    def make_provider(self):
        return Provider()
{extra}
"""
    )
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--timeout=60")


def test_a_correct_provider_passes(pytester: pytest.Pytester) -> None:
    result = run_kit(
        pytester,
        """
class Provider(RecordingProvider):
    pass
""",
        extra="""
    def delivered_state(self, provider, workflow_id):
        tasks, status = {}, None
        for hook, record in provider.calls:
            if getattr(record, "workflow_id", None) != workflow_id:
                continue
            if hook.endswith("_task"):
                tasks[record.task_id] = record.status
            elif hook.endswith("_workflow"):
                status = record.status
        return {"status": status, "tasks": tasks}
""",
    )
    result.assert_outcomes(passed=10)


def test_delivery_is_skipped_with_a_reason_when_not_checkable(pytester: pytest.Pytester) -> None:
    result = run_kit(pytester, "class Provider(RecordingProvider):\n    pass\n")
    result.assert_outcomes(passed=9, skipped=1)


def test_a_delivered_state_of_the_wrong_shape_fails_with_the_expected_shape(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        "class Provider(RecordingProvider):\n    pass\n",
        extra="""
    def delivered_state(self, provider, workflow_id):
        return {}
""",
    )
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines(
        ['*delivered_state() returned {}; expected {"status": <WorkflowStatus>, "tasks"*']
    )


def test_a_provider_that_raises_fails_the_kit(pytester: pytest.Pytester) -> None:
    result = run_kit(
        pytester,
        """
class Provider:
    @hookimpl
    def update_task(self, task):
        raise RuntimeError("provider bug")
""",
    )
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 4
    result.stdout.fnmatch_lines(["*the provider raised inside hooks*provider bug*"])


def test_a_bad_next_task_id_fails_the_kit(pytester: pytest.Pytester) -> None:
    result = run_kit(
        pytester,
        """
class Provider:
    @hookimpl
    def get_next_task_id(self, workflow_id):
        return "7"
""",
    )
    result.stdout.fnmatch_lines(["*get_next_task_id answered '7'*"])
    assert result.parseoutcomes()["failed"] == 1


def test_a_provider_that_cannot_take_a_run_id_fails_the_kit(pytester: pytest.Pytester) -> None:
    """A provider written before run ids (one run per workflow id, numeric ids only)."""
    result = run_kit(
        pytester,
        """
class Provider:
    @hookimpl
    def get_next_task_id(self, workflow_id, run_id):
        int(run_id)  # assumes a number, gets a UUID
        return None
""",
    )
    result.stdout.fnmatch_lines(["*the provider raised inside hooks*get_next_task_id*ValueError*"])
    assert result.parseoutcomes()["failed"] == 2


def test_a_flush_that_ignores_its_timeout_fails_the_kit(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    result = run_kit(
        pytester,
        """
class Provider:
    never = threading.Event()

    @hookimpl
    def shutdown(self, timeout):
        if timeout == 1.0:
            self.never.wait(30)
""",
    )
    result.stdout.fnmatch_lines(["*blocked for more than 10 s*"])


def test_a_flush_that_overruns_its_timeout_fails_the_kit(pytester: pytest.Pytester) -> None:
    """Late but not hung: 1 s timeout, 2.5 s taken (the limit is timeout + 1 s)."""
    result = run_kit(
        pytester,
        """
import time

class Provider:
    @hookimpl
    def flush(self, workflow_id, timeout):
        if timeout == 1.0:
            time.sleep(timeout + 1.5)
""",
    )
    result.stdout.fnmatch_lines(["*flush(timeout=1) took 2.* s*"])
    assert result.parseoutcomes()["failed"] == 1


def test_a_wrong_signature_fails_every_test_with_a_clear_error(pytester: pytest.Pytester) -> None:
    result = run_kit(
        pytester,
        """
class Provider:
    @hookimpl
    def create_task(self, task, when):
        pass
""",
    )
    assert result.parseoutcomes()["errors"] == 10
    result.stdout.fnmatch_lines(["*provider 'provider-under-test' failed to load*when*"])
