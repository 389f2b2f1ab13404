"""The dashboard's pages in-process: sessions, redirects, isolation, headers, geometry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from api_helpers import AUTH_A, TOKEN_A, TOKEN_B, task_body, workflow_body
from dotflow_api.dashboard import chart, views
from dotflow_api.models import DashboardSession
from dotflow_api.tokens import TokenStore
from fastapi.testclient import TestClient
from sqlalchemy import update

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _sign_in(client: TestClient, token: str, next_path: str = "/") -> object:
    return client.post(
        "/ui/login",
        content=f"token={token}&next={next_path}",
        headers=FORM,
        follow_redirects=False,
    )


def test_pages_need_a_session_and_come_back_after_signing_in(client: TestClient) -> None:
    response = client.get("/ui/workflows/a%2Fb", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fworkflows%2Fa%252Fb"
    signed = _sign_in(client, TOKEN_A, "/ui/workflows/a%252Fb")
    assert signed.status_code == 303
    assert signed.headers["location"] == "/ui/workflows/a%2Fb"


def test_the_cookie_is_httponly_strict_and_holds_no_token(client: TestClient) -> None:
    response = _sign_in(client, TOKEN_A)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert TOKEN_A not in value and len(value) >= 40


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"]
)
def test_sign_in_never_redirects_off_the_server(client: TestClient, target: str) -> None:
    assert _sign_in(client, TOKEN_A, target).headers["location"] == "/"


def test_a_form_from_another_origin_is_refused(client: TestClient) -> None:
    response = client.post(
        "/ui/login",
        content=f"token={TOKEN_A}",
        headers={**FORM, "origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_wrong_and_empty_tokens_get_a_message(client: TestClient) -> None:
    wrong = _sign_in(client, "nope")
    assert wrong.status_code == 401 and "not accepted by this server" in wrong.text
    empty = _sign_in(client, "")
    assert empty.status_code == 400 and "Enter a token" in empty.text


def test_tenants_are_isolated(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body("alpha-only"), headers=AUTH_A)
    client.post("/workflows/alpha-only/tasks", json=task_body(1), headers=AUTH_A)
    _sign_in(client, TOKEN_B)
    assert "alpha-only" not in client.get("/").text
    assert client.get("/ui/workflows/alpha-only").status_code == 404
    assert client.get("/ui/workflows/alpha-only/tasks/1").status_code == 404
    _sign_in(client, TOKEN_A)
    assert "alpha-only" in client.get("/").text
    assert client.get("/ui/workflows/alpha-only/tasks/1").status_code == 200


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    _sign_in(client, TOKEN_A)
    response = client.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text and " style=" not in response.text


def test_sign_out_ends_the_session(client: TestClient) -> None:
    _sign_in(client, TOKEN_A)
    assert client.get("/", follow_redirects=False).status_code == 200
    out = client.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303 and "dotflow_session=" in out.headers["set-cookie"]
    assert client.get("/", follow_redirects=False).status_code == 303


def test_revoking_a_token_ends_its_sessions(client: TestClient) -> None:
    store = TokenStore(client.app.state.store.engine)  # type: ignore[attr-defined]
    token = store.create("laptop")
    _sign_in(client, token)
    assert client.get("/", follow_redirects=False).status_code == 200
    store.revoke("laptop")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_an_expired_session_signs_out(client: TestClient) -> None:
    _sign_in(client, TOKEN_A)
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        conn.execute(update(DashboardSession.__table__).values(expires_at=past))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_docs_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _task(task_id: int, start: float, end: float | None, group: str = "default", **extra: object):
    return {
        "task_id": task_id,
        "name": f"t{task_id}",
        "status": extra.pop("status", "Completed"),
        "group_name": group,
        "retry_count": extra.pop("retry_count", 0),
        "duration": None if end is None else end - start,
        "started_at": T0 + timedelta(seconds=start),
        "finished_at": None if end is None else T0 + timedelta(seconds=end),
    }


def test_timeline_places_bars_from_start_to_finish_in_group_lanes() -> None:
    tasks = [
        _task(1, 0, 2),
        _task(2, 2, 10, retry_count=1),
        _task(3, 1, 5, group="side", status="Failed"),
        {**_task(4, 0, None), "started_at": None, "status": "Not started"},
    ]
    line = views.timeline(tasks, now=T0 + timedelta(seconds=60))
    assert [lane.name for lane in line.lanes] == ["default", "side"]
    bars = {bar.task_id: bar for bar in line.bars}
    assert (bars[1].left, bars[1].width) == (0.0, 20.0)
    assert (bars[2].left, bars[2].width) == (20.0, 80.0)
    assert bars[3].lane == 1 and bars[3].css == "failed" and bars[3].left == 10.0
    assert bars[2].retries == 1 and "1 retry" in bars[2].label
    assert line.unplaced == 1 and line.span == 10.0
    assert line.bar_y(bars[1]) < line.bar_y(bars[2]) < line.bar_y(bars[3])


def test_a_running_task_reaches_now() -> None:
    line = views.timeline([_task(1, 0, 1), _task(2, 1, None)], now=T0 + timedelta(seconds=4))
    assert line.span == 4.0
    assert line.bars[1].width == 75.0


def test_duration_chart_is_oldest_first_with_failures_marked() -> None:
    runs = [
        {"duration": 4.0, "status": "Failed", "started_at": T0},
        {"duration": 2.0, "status": "Completed", "started_at": T0},
    ]
    drawn = chart.duration_chart(runs, href=lambda run: f"#{run['status']}")
    bars = drawn.bars
    assert [bar.failed for bar in bars] == [False, True] and drawn.failed == 1
    assert bars[1].height == chart.CHART_HEIGHT and bars[0].height == chart.CHART_HEIGHT / 2
    assert [bar.href for bar in bars] == ["#Completed", "#Failed"]
    assert bars[0].left < bars[1].left and drawn.longest == "4.00 s"


def test_a_chart_of_no_runs_or_unknown_durations_still_draws() -> None:
    assert chart.duration_chart([], href=lambda run: "#").bars == []
    unknown = chart.duration_chart([{"status": "In progress", "duration": None}], lambda r: "#")
    assert unknown.bars[0].height == chart.MIN_BAR_HEIGHT


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "\u2013"),
        (0.25, "0.25 s"),
        (12.04, "12.0 s"),
        (185, "3 min 05 s"),
        (7440, "2 h 04 min"),
    ],
)
def test_durations_read_naturally(seconds: float | None, text: str) -> None:
    assert views.format_duration(seconds) == text


def test_api_answers_name_the_dashboard_page_template(client: TestClient) -> None:
    answer = client.post("/workflows", json=workflow_body("linked"), headers=AUTH_A)
    template = answer.headers["dotflow-dashboard"]
    assert template == "http://testserver/ui/workflows/{workflow_id}/runs/{run_id}"
    assert "dotflow-dashboard" not in client.get("/ui/login").headers


def test_a_public_url_replaces_the_request_s_address(client: TestClient) -> None:
    from dotflow_api.app import create_app

    state = client.app.state  # type: ignore[attr-defined]
    public = create_app(state.store, state.tokens, public_url="https://dotflow.example.com/")
    with TestClient(public) as other:
        answer = other.get("/workflows", headers=AUTH_A)
    assert answer.headers["dotflow-dashboard"] == (
        "https://dotflow.example.com/ui/workflows/{workflow_id}/runs/{run_id}"
    )


def _report_run(client: TestClient, workflow_id: str, run_id: str, first_task: int) -> None:
    fields = {"run_id": run_id, "status": "Completed", "duration": 1.5}
    client.post("/workflows", json=workflow_body(workflow_id, **fields), headers=AUTH_A)
    body = task_body(first_task, status="Completed", run_id=run_id, name=f"step-of-{run_id}")
    answer = client.post(
        f"/workflows/{quote(workflow_id, safe='')}/tasks", json=body, headers=AUTH_A
    )
    assert answer.status_code == 201, answer.text


def test_a_workflow_s_runs_are_paginated_newest_first(client: TestClient) -> None:
    for number in range(1, 28):
        _report_run(client, "busy", f"run-{number:02d}", number)
    _sign_in(client, TOKEN_A)
    first = client.get("/ui/workflows/busy")
    assert first.status_code == 200 and "27 runs" in first.text
    assert first.text.count('<tr data-run="') == 25
    assert first.text.index('<tr data-run="run-27"') < first.text.index('<tr data-run="run-03"')
    assert 'data-run="run-02"' not in first.text and "Page 1 of 2" in first.text
    assert first.text.count('class="chart-bar"') == 25
    second = client.get("/ui/workflows/busy?page=2")
    assert second.text.count('<tr data-run="') == 2 and 'href="?page=1"' in second.text
    assert 'data-run="run-01"' in second.text and 'data-run="run-27"' not in second.text


def test_a_run_page_shows_only_that_run_s_tasks(client: TestClient) -> None:
    _report_run(client, "two/runs", "first", 1)
    _report_run(client, "two/runs", "second", 2)
    _sign_in(client, TOKEN_A)
    page = client.get("/ui/workflows/two%2Fruns/runs/first")
    assert page.status_code == 200
    assert "step-of-first" in page.text and "step-of-second" not in page.text
    task = client.get("/ui/workflows/two%2Fruns/tasks/2")
    assert 'href="/ui/workflows/two%2Fruns/runs/second"' in task.text  # the crumb to its run
    assert client.get("/ui/workflows/two%2Fruns/runs/third").status_code == 404
    assert client.get("/ui/workflows/two%2Fruns/runs/" + "x" * 65).status_code == 404
    _sign_in(client, TOKEN_B)
    assert client.get("/ui/workflows/two%2Fruns/runs/first").status_code == 404


def test_a_run_page_says_when_it_shows_only_the_first_tasks(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for task_id in (1, 2, 3):
        _report_run(client, "long", "big", task_id)
    _sign_in(client, TOKEN_A)
    assert 'id="tasks-cut"' not in client.get("/ui/workflows/long/runs/big").text
    monkeypatch.setattr("dotflow_api.dashboard.queries.MAX_TASKS_SHOWN", 2)
    page = client.get("/ui/workflows/long/runs/big").text
    assert "Showing the first 2 of the run's 3 stored tasks" in page
    assert page.count('<tr data-task="') == 2


def test_tasks_sent_without_a_run_are_shown_on_the_workflow_page(client: TestClient) -> None:
    client.post("/workflows", json=workflow_body("legacy"), headers=AUTH_A)
    client.post("/workflows/legacy/tasks", json=task_body(1, name="old.client"), headers=AUTH_A)
    _sign_in(client, TOKEN_A)
    page = client.get("/ui/workflows/legacy")
    assert "0 runs" in page.text and "Tasks sent without a run" in page.text
    assert "old.client" in page.text
