"""The dashboard in a real headless Chromium against a real ``dotflow-api serve``.

One server and one browser serve the whole module; every test starts signed out (no
cookies) and ends by checking that the browser requested nothing from any other host.
Screenshots of the main pages are written on every run to a temporary directory, and
to ``server/screenshots/`` (shown in server/README.md) with ``DOTFLOW_SCREENSHOTS=update``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from api_helpers import TOKEN_A, TOKEN_B
from browser import foreign_requests, quit_chromium, requested_urls, screenshot, start_chromium
from dashboard_data import NIGHTLY_STEPS, T0, Step, report_workflow, run_id_of, task_body
from dotflow_api.process import ServerProcess

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
#: The live-run test's own tenant, so its workflow shows in no other test's list.
TOKEN_C = "token-charlie-5647382910"
WAIT = 15.0
#: The nightly workflow's latest run (failed, with retries); eight earlier nights precede it.
NIGHTLY_RUN = run_id_of("nightly-etl", 9)
RUN_PAGE = f"/ui/workflows/nightly-etl/runs/{NIGHTLY_RUN}"
#: The earlier nights' durations (seconds), oldest first; the fifth one failed.
HISTORY = (6.1, 6.8, 5.9, 7.4, 3.0, 6.6, 7.0, 6.4)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("dashboard")
    database = f"sqlite:///{workdir / 'api.sqlite3'}"
    with ServerProcess.start(database, [TOKEN_A, TOKEN_B, TOKEN_C], workdir=workdir) as process:
        _seed(process.base_url)
        yield process


def _seed(base_url: str) -> None:
    for number, seconds in enumerate(HISTORY, 1):
        first = 100 + number * 10  # every run numbers its tasks apart
        failed = number == 5
        steps = [
            Step(first + 1, "etl.extract", 0.0, 1.4),
            Step(first + 2, "etl.transform", 1.4, seconds - 1.0),
            Step(
                first + 3, "etl.load", seconds - 1.0, seconds, "Failed" if failed else "Completed"
            ),
        ]
        started = T0 - timedelta(days=len(HISTORY) + 1 - number)
        report_workflow(
            base_url,
            TOKEN_A,
            "nightly-etl",
            steps,
            started=started,
            run_id=run_id_of("nightly-etl", number),
        )
    report_workflow(base_url, TOKEN_A, "nightly-etl", NIGHTLY_STEPS, run_id=NIGHTLY_RUN)
    for number in range(1, 31):
        failed = number % 7 == 0
        steps = [
            Step(1, "sync.pull", 0.0, 0.5 + number / 10),
            Step(2, "sync.push", 0.5 + number / 10, 1.0 + number / 5, status="Failed")
            if failed
            else Step(2, "sync.push", 0.5 + number / 10, 1.0 + number / 5),
        ]
        report_workflow(
            base_url,
            TOKEN_A,
            f"hourly-sync-{number:02d}",
            steps,
            started=T0 - timedelta(hours=number),
        )
    report_workflow(base_url, TOKEN_B, "bravo-private-flow", [Step(1, "b.only", 0.0, 1.0)])


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    session = start_chromium()
    yield session
    quit_chromium(session)


@pytest.fixture
def browser(chromium: Any, server: ServerProcess) -> Iterator[Any]:
    """The browser, signed out, at a blank page; afterwards: no request left the server."""
    chromium.get(f"{server.base_url}/healthz")
    chromium.delete_all_cookies()
    chromium.set_window_size(1280, 900)
    requested_urls(chromium)  # drain the logs
    chromium.get_log("browser")
    yield chromium
    urls = requested_urls(chromium)
    assert foreign_requests(urls, server.base_url) == []


def _wait(browser: Any, condition: Any, timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def _by(css: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, css)


def sign_in(browser: Any, server: ServerProcess, token: str, path: str = "/") -> None:
    browser.get(server.base_url + path)
    field = browser.find_element(*_by("input#token"))
    field.send_keys(token)
    browser.find_element(*_by("form button[type=submit]")).click()
    _wait(browser, lambda b: "/ui/login" not in b.current_url or b.find_elements(*_by(".alert")))


def _texts(browser: Any, css: str) -> list[str]:
    return [element.text for element in browser.find_elements(*_by(css))]


def test_sign_in_opens_a_session_that_holds_no_token(browser: Any, server: ServerProcess) -> None:
    browser.get(server.base_url + "/")
    assert "/ui/login" in browser.current_url
    label = browser.find_element(*_by("label[for=token]"))
    assert label.text == "API token"
    sign_in(browser, server, TOKEN_A)
    assert browser.current_url == server.base_url + "/"
    assert "nightly-etl" in _texts(browser, "#workflows tbody td a")
    cookies = {cookie["name"]: cookie for cookie in browser.get_cookies()}
    session = cookies["dotflow_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert TOKEN_A not in session["value"]
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script sees it


def test_wrong_token_gets_a_clear_message(browser: Any, server: ServerProcess) -> None:
    sign_in(browser, server, "not-a-token-of-this-server")
    assert "/ui/login" in browser.current_url
    alert = browser.find_element(*_by("[role=alert]"))
    assert "not accepted by this server" in alert.text
    assert browser.find_element(*_by("input#token")).get_attribute("aria-invalid") == "true"
    assert browser.get_cookies() == []


def test_sign_out_ends_the_session_on_the_server(browser: Any, server: ServerProcess) -> None:
    sign_in(browser, server, TOKEN_A)
    stolen = browser.get_cookie("dotflow_session")
    browser.find_element(*_by("form.signout button")).click()
    _wait(browser, lambda b: "/ui/login" in b.current_url)
    assert "You are signed out" in browser.find_element(*_by("[role=status]")).text
    browser.get(server.base_url + "/")
    assert "/ui/login" in browser.current_url
    # The old cookie, replayed, no longer opens anything: the session is gone server-side.
    browser.add_cookie({"name": stolen["name"], "value": stolen["value"], "path": "/"})
    browser.get(server.base_url + "/")
    assert "/ui/login" in browser.current_url


def test_tenants_see_only_their_own_workflows(browser: Any, server: ServerProcess) -> None:
    sign_in(browser, server, TOKEN_B)
    assert _texts(browser, "#workflows tbody td a") == ["bravo-private-flow"]
    for path in ("/ui/workflows/nightly-etl", RUN_PAGE, "/ui/workflows/nightly-etl/tasks/3"):
        browser.get(server.base_url + path)
        assert browser.find_element(*_by("h1")).text == "Not found", path
    browser.get(server.base_url + "/?q=nightly")
    assert "0 workflows match" in browser.find_element(*_by(".count")).text


def test_workflows_list_filters_searches_and_pages(browser: Any, server: ServerProcess) -> None:
    from selenium.webdriver.support.ui import Select

    sign_in(browser, server, TOKEN_A)
    assert "31 workflows" in browser.find_element(*_by(".count")).text
    assert len(_texts(browser, "#workflows tbody tr")) == 25
    assert "Page 1 of 2" in browser.find_element(*_by(".pager")).text
    Select(browser.find_element(*_by("select#status"))).select_by_visible_text("Failed")
    browser.find_element(*_by("form.filters button")).click()
    _wait(browser, lambda b: "status=Failed" in b.current_url)
    ids = _texts(browser, "#workflows tbody td a")
    assert sorted(ids) == sorted(
        ["nightly-etl", "hourly-sync-07", "hourly-sync-14", "hourly-sync-21", "hourly-sync-28"]
    )
    assert set(_texts(browser, "#workflows .badge")) == {"Failed"}
    field = browser.find_element(*_by("input#q"))
    field.clear()
    field.send_keys("SYNC-2")
    browser.find_element(*_by("form.filters button")).click()
    _wait(browser, lambda b: "q=SYNC-2" in b.current_url)
    assert sorted(_texts(browser, "#workflows tbody td a")) == ["hourly-sync-21", "hourly-sync-28"]
    browser.get(server.base_url + "/?page=2")
    assert len(_texts(browser, "#workflows tbody tr")) == 6
    browser.find_element(*_by(".pager a[rel=prev]")).click()
    _wait(browser, lambda b: "page=1" in b.current_url)


def _attr(browser: Any, css: str, name: str) -> str | None:
    """An attribute (or ``textContent``) of the first match, read in one step: a page
    that refreshes itself replaces its elements between two WebDriver calls."""
    return browser.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]);"
        "return e === null ? null : (arguments[1] === 'textContent' ? e.textContent.trim()"
        " : e.getAttribute(arguments[1]));",
        css,
        name,
    )


def _bar(browser: Any, task_id: int) -> Any:
    return browser.find_element(*_by(f".gantt a[data-task='{task_id}'] rect"))


def test_run_timeline_shows_failed_and_retried_tasks_in_lanes(
    browser: Any, server: ServerProcess
) -> None:
    sign_in(browser, server, TOKEN_A, RUN_PAGE)
    assert browser.find_element(*_by("#run-status")).text == "Failed"
    assert NIGHTLY_RUN in browser.find_element(*_by("h1")).text
    assert "st-failed" in _bar(browser, 3).get_attribute("class")
    assert "st-completed" in _bar(browser, 2).get_attribute("class")
    assert "retried" in _bar(browser, 2).get_attribute("class")
    assert "retried" in _bar(browser, 3).get_attribute("class")
    assert "retried" not in _bar(browser, 1).get_attribute("class")
    assert _texts(browser, ".gantt .lane-label") == ["group default", "group reports"]
    # Bars run from start to finish: task 2 starts where task 1 ends, on the next row.
    one, two, three = (_bar(browser, task_id).rect for task_id in (1, 2, 3))
    assert abs(one["x"] + one["width"] - two["x"]) < 2 and one["y"] < two["y"] < three["y"]
    assert two["width"] > one["width"] * 2  # 3.2 s against 1.4 s
    assert _bar(browser, 4).rect["y"] > three["y"]  # the reports group's own lane
    label = browser.find_element(*_by(".gantt a[data-task='2']")).get_attribute("aria-label")
    assert label == "Task 2 etl.transform: Completed, 3.20 s, 2 retries"
    rows = {
        row.get_attribute("data-task"): row.text
        for row in browser.find_elements(*_by("#tasks tbody tr"))
    }
    assert rows["3"].split() == ["3", "etl.load", "default", "Failed", "2", "3.30", "s"]
    assert sorted(rows) == ["1", "2", "3", "4", "5"]  # this run's tasks, not the earlier ones'
    assert len(browser.find_elements(*_by(".gantt a[data-task]"))) == 5


def test_task_page_lists_each_failed_attempt_with_a_collapsible_traceback(
    browser: Any, server: ServerProcess
) -> None:
    sign_in(browser, server, TOKEN_A, RUN_PAGE)
    browser.find_element(*_by("#tasks a[href$='/tasks/3']")).click()
    _wait(browser, lambda b: b.current_url.endswith("/tasks/3"))
    crumbs = browser.find_elements(*_by(".crumbs a"))
    assert crumbs[-1].get_attribute("href") == server.base_url + RUN_PAGE
    errors = browser.find_elements(*_by("ol.errors > li"))
    assert len(errors) == 3
    assert errors[2].find_element(*_by("p")).text == (
        "Attempt 3: PermissionError: role etl_writer cannot INSERT into orders_daily"
    )
    traceback = errors[2].find_element(*_by("pre.traceback"))
    assert not traceback.is_displayed()
    errors[2].find_element(*_by("summary")).click()
    assert traceback.is_displayed()
    assert "Traceback (most recent call last)" in traceback.text
    assert '"rows": 118204' in browser.find_element(*_by("pre.context:nth-of-type(2)")).text or (
        "118204" in " ".join(_texts(browser, "pre.context"))
    )


def test_a_run_in_progress_refreshes_until_it_ends(browser: Any, server: ServerProcess) -> None:
    start = T0 + timedelta(days=1)
    steps = [Step(1, "live.first", 0.0, 1.0), Step(2, "live.second", 1.0, None, "In progress")]
    run_id = report_workflow(server.base_url, TOKEN_C, "live-run", steps, started=start)
    sign_in(browser, server, TOKEN_C, f"/ui/workflows/live-run/runs/{run_id}")
    assert _attr(browser, "#run-status", "textContent") == "In progress"
    assert _attr(browser, "main", "data-live") == "true"
    assert _attr(browser, ".live", "role") == "status"
    assert "st-progress" in (_attr(browser, ".gantt a[data-task='2'] rect", "class") or "")
    marker = browser.execute_script("window.__same_document = true; return 1")
    assert marker == 1

    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {TOKEN_C}"
    tasks = f"{server.base_url}/workflows/live-run/tasks"

    def report(step: Step) -> None:
        body = {**task_body(step, start), "run_id": run_id}
        api.post(tasks, json=body, timeout=30).raise_for_status()

    # The run goes on: task 2 ends, task 3 starts; the page shows it without a reload.
    report(Step(2, "live.second", 1.0, 2.5, "Completed"))
    report(Step(3, "live.third", 2.5, None, "In progress"))
    _wait(browser, lambda b: _attr(b, ".gantt a[data-task='3']", "data-status") == "In progress")
    assert "st-completed" in (_attr(browser, ".gantt a[data-task='2'] rect", "class") or "")
    assert _attr(browser, "#run-status", "textContent") == "In progress"

    report(Step(3, "live.third", 2.5, 3.0, "Completed"))
    api.patch(
        f"{server.base_url}/workflows/live-run",
        json={
            "status": "Completed",
            "duration": 3.0,
            "completed_count": 3,
            "task_count": 3,
            "run_id": run_id,
        },
        timeout=30,
    ).raise_for_status()
    _wait(browser, lambda b: _attr(b, "#run-status", "textContent") == "Completed")
    assert browser.execute_script("return window.__same_document === true")  # no reload
    assert "st-completed" in (_attr(browser, ".gantt a[data-task='3'] rect", "class") or "")
    assert _attr(browser, "main", "data-live") == "false"
    assert _attr(browser, ".live", "role") is None


def test_the_workflow_page_lists_its_runs_with_a_duration_chart(
    browser: Any, server: ServerProcess
) -> None:
    sign_in(browser, server, TOKEN_A, "/ui/workflows/nightly-etl")
    rows = browser.find_elements(*_by("#runs tbody tr"))
    listed = [row.get_attribute("data-run") for row in rows]
    history = [run_id_of("nightly-etl", number) for number in range(1, len(HISTORY) + 1)]
    assert listed == [NIGHTLY_RUN, *history[::-1]]  # newest first
    assert "9 runs" in browser.find_element(*_by(".runs .count")).text
    assert rows[0].text.split()[1:2] == ["Failed"]
    assert "6.40 s" in rows[1].text and "Completed" in rows[1].text
    assert "Failed" in rows[len(HISTORY) + 1 - 5].text  # the fifth night
    # The chart: one bar per run, oldest to newest, as tall as the run was long.
    bars = browser.find_elements(*_by(".chart a.chart-bar"))
    assert [bar.get_attribute("data-run") for bar in bars] == [*history, NIGHTLY_RUN]
    failed = [
        bar.get_attribute("data-run") for bar in bars if bar.get_attribute("data-failed") == "true"
    ]
    assert failed == [history[4], NIGHTLY_RUN]
    assert len(browser.find_elements(*_by(".chart .mark"))) == 2  # failures marked, not only red
    heights = [bar.find_element(*_by("rect")).rect["height"] for bar in bars]
    durations = [*HISTORY, 7.9]
    longest = max(durations)
    for height, seconds in zip(heights, durations, strict=True):
        assert abs(height / heights[durations.index(longest)] - seconds / longest) < 0.03
    lefts = [bar.find_element(*_by("rect")).rect["x"] for bar in bars]
    assert lefts == sorted(lefts)
    # A bar and a row each lead to their run's page.
    bars[4].click()
    _wait(browser, lambda b: b.current_url.endswith(f"/runs/{history[4]}"))
    assert browser.find_element(*_by("#run-status")).text == "Failed"
    assert sorted(_texts(browser, "#tasks tbody td.num a")) == ["151", "152", "153"]
    browser.back()
    browser.find_element(*_by(f"#runs tr[data-run='{NIGHTLY_RUN}'] a")).click()
    _wait(browser, lambda b: b.current_url == server.base_url + RUN_PAGE)


def test_no_page_requests_anything_from_another_host(browser: Any, server: ServerProcess) -> None:
    sign_in(browser, server, TOKEN_A, "/ui/workflows/nightly-etl")
    browser.get(server.base_url + RUN_PAGE)
    browser.get(server.base_url + "/ui/workflows/nightly-etl/tasks/3")
    browser.get(server.base_url + "/docs")
    _wait(browser, lambda b: b.find_elements(*_by(".swagger-ui .info .title")))
    assert "dotflow-api" in browser.find_element(*_by(".swagger-ui .info .title")).text
    urls = requested_urls(browser)
    paths = {url.removeprefix(server.base_url) for url in urls}
    assert {"/ui/static/dashboard.css", "/ui/static/dashboard.js", "/openapi.json"} <= paths
    assert "/docs/static/swagger-ui-bundle.js" in paths
    assert foreign_requests(urls, server.base_url) == []
    console = browser.get_log("browser")
    # Nothing failed to load, nothing was blocked by the pages' Content-Security-Policy.
    assert [
        entry["message"] for entry in console if entry["level"] == "SEVERE"
    ] == []  # e.g. nothing blocked by the pages' Content-Security-Policy


def test_keyboard_only_sign_in_and_a_narrow_screen(browser: Any, server: ServerProcess) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(390, 844)  # a phone
    browser.get(server.base_url + "/")
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "token"  # autofocus
    active.send_keys(TOKEN_A, Keys.ENTER)
    _wait(browser, lambda b: b.current_url == server.base_url + "/")
    for path in ("/", "/ui/workflows/nightly-etl", RUN_PAGE, "/ui/workflows/nightly-etl/tasks/3"):
        browser.get(server.base_url + path)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, path
    browser.get(server.base_url + "/")
    body = browser.find_element(*_by("body"))
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"


def test_screenshots_of_the_main_pages(browser: Any, server: ServerProcess, tmp_path: Path) -> None:
    targets = [tmp_path]
    if os.environ.get("DOTFLOW_SCREENSHOTS") == "update":
        targets.append(SCREENSHOTS)
    browser.get(server.base_url + "/")
    shots = {"login.png": None}
    for directory in targets:
        screenshot(browser, directory / "login.png")
    sign_in(browser, server, TOKEN_A)
    pages = {
        "workflows.png": "/",
        "workflow.png": "/ui/workflows/nightly-etl",
        "run.png": RUN_PAGE,
        "task.png": "/ui/workflows/nightly-etl/tasks/3",
    }
    for name, path in pages.items():
        browser.set_window_size(1440, 900)
        browser.get(server.base_url + path)
        if name == "task.png":
            browser.find_elements(*_by("ol.errors summary"))[-1].click()
        for directory in targets:
            shots[name] = screenshot(browser, directory / name)
    for name in ("login.png", *pages):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name
