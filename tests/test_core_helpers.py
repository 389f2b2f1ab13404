"""The shared helpers of dotflow_core.plugin: DaemonCall and one_line, as providers use them."""

from __future__ import annotations

import threading

import pytest

from dotflow_core.plugin import DaemonCall, one_line


def test_a_daemon_call_gives_its_value_once_finished() -> None:
    release = threading.Event()
    call = DaemonCall(lambda: release.wait() and 42, name="dotflow-test-call")
    assert call.thread.daemon and call.thread.name == "dotflow-test-call"
    assert call.wait(0) is False  # still blocked: the deadline has passed
    with pytest.raises(RuntimeError, match="dotflow-test-call has not finished"):
        call.result()
    release.set()
    assert call.wait(None) is True
    assert call.result() == 42


def test_none_is_a_value_and_errors_reach_the_caller() -> None:
    nothing = DaemonCall(lambda: None, name="none")
    assert nothing.wait(None) and nothing.result() is None

    def fail() -> None:
        raise KeyError("gone")

    failing = DaemonCall(fail, name="fail")
    assert failing.wait(None)
    with pytest.raises(KeyError, match="gone"):
        failing.result()

    def leave() -> None:
        raise SystemExit(3)

    leaving = DaemonCall(leave, name="exit")  # as a step calling sys.exit(3)
    assert leaving.wait(None)
    with pytest.raises(SystemExit) as stopped:
        leaving.result()
    assert stopped.value.code == 3


def test_a_negative_deadline_does_not_wait() -> None:
    release = threading.Event()
    call = DaemonCall(release.wait, name="late")
    assert call.wait(-5.0) is False
    release.set()
    assert call.wait(None) and call.result() is True


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("a\n  b\tc ", None, "a b c"),
        ("x" * 10, 10, "x" * 10),
        ("x" * 11, 10, "x" * 7 + "..."),
        (ValueError("bad\nvalue"), None, "bad value"),
    ],
)
def test_one_line(text: object, limit: int | None, expected: str) -> None:
    assert one_line(text, limit) == expected
