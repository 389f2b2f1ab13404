"""The HTTP client against requests-mock: headers, URLs, outcomes, retry timing, next id."""

from __future__ import annotations

import http.client
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from dotflow_server_api import ServerAPI, __version__
from dotflow_server_api.backoff import backoff_delay, http_date, parse_retry_after, retry_delay
from dotflow_server_api.delivery import Delivery
from dotflow_server_api.outbox import Entry, Outbox
from dotflow_server_api.payloads import create_task, update_task
from dotflow_server_api.settings import ApiSettings
from dotflow_server_api.transport import Outcome, Result, Transport
from fake_api import FakeAPI

from dotflow_core import ConfigurationError, Secret
from dotflow_core.testing import sample_task_record

BASE = "https://dotflow.example.com/api/v1"
TOKEN = "s3cr3t-token"


@pytest.fixture
def config(outbox_dir: Path) -> ApiSettings:
    return ApiSettings(base_url=BASE, token=Secret(TOKEN), outbox_dir=outbox_dir)


@pytest.fixture
def transport(config: ApiSettings) -> Transport:
    return Transport(config)


# -- one request ---------------------------------------------------------------


def test_headers_url_and_body(requests_mock: Any, transport: Transport) -> None:
    url = f"{BASE}/workflows/a%2Fb%20c/tasks"
    requests_mock.post(url, status_code=201, json={"id": 1})
    request = create_task(sample_task_record("a/b c", 1))
    result = transport.send(request.method, request.path, request.body)
    assert result.outcome is Outcome.DELIVERED and result.status == 201
    sent = requests_mock.last_request
    assert sent.url == url
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["User-Agent"] == f"dotflow-server-api/{__version__}"
    assert sent.json()["id"] == 1
    assert sent.timeout == (3.0, 10.0)
    assert sent.verify not in (False, None, "")  # on: True or the environment's CA bundle
    assert "Cookie" not in sent.headers


def test_the_base_url_is_normalised_once_and_paths_kept_as_encoded(
    requests_mock: Any, outbox_dir: Path
) -> None:
    config = ApiSettings(
        base_url="https://Bücher.example/api/v1", token=Secret(TOKEN), outbox_dir=outbox_dir
    )
    url = "https://xn--bcher-kva.example/api/v1/workflows/a%2Fb%20c/tasks/1"
    requests_mock.patch(url, json={})
    result = Transport(config).send("PATCH", "/workflows/a%2Fb%20c/tasks/1", b'{"id": 1}')
    assert result.outcome is Outcome.DELIVERED
    assert requests_mock.last_request.url == url
    assert requests_mock.last_request.headers["Content-Length"] == "9"


def test_cookies_the_server_sets_are_never_sent_back(
    requests_mock: Any, transport: Transport
) -> None:
    requests_mock.post(
        f"{BASE}/workflows", status_code=201, json={}, headers={"Set-Cookie": "session=abc; Path=/"}
    )
    requests_mock.get(f"{BASE}/workflows/w/tasks/next-id", json={"next_id": 1})
    transport.send("POST", "/workflows", b"{}")
    transport.send("GET", "/workflows/w/tasks/next-id")
    assert "Cookie" not in requests_mock.last_request.headers
    assert "Content-Length" not in requests_mock.last_request.headers  # a GET has no body


def test_the_ca_bundle_and_timeouts_are_used(requests_mock: Any, outbox_dir: Path) -> None:
    config = ApiSettings(
        base_url=BASE,
        token=Secret(TOKEN),
        outbox_dir=outbox_dir,
        connect_timeout=1.5,
        read_timeout=4.0,
        ca_bundle="/etc/ssl/company.pem",
    )
    requests_mock.patch(f"{BASE}/workflows/w", json={})
    Transport(config).send("PATCH", "/workflows/w", b"{}")
    assert requests_mock.last_request.verify == "/etc/ssl/company.pem"
    assert requests_mock.last_request.timeout == (1.5, 4.0)


def test_proxy_and_ca_bundle_come_from_the_environment_read_once(
    monkeypatch: pytest.MonkeyPatch, outbox_dir: Path
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with FakeAPI(token=None) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/from-env.pem")
        config = ApiSettings(
            base_url="http://dotflow.invalid/api", token=Secret(TOKEN), outbox_dir=outbox_dir
        )
        transport = Transport(config)
        monkeypatch.delenv("HTTP_PROXY")  # read when the transport was built, not per request
        transport.send("PATCH", "/workflows/w", b"{}")
        # A forward proxy gets the absolute URL in the request line.
        assert [request.line for request in proxy.requests] == [
            "PATCH http://dotflow.invalid/api/workflows/w"
        ]
        assert proxy.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert transport.verify == "/etc/ssl/from-env.pem"
    configured = ApiSettings(
        base_url=BASE, token=Secret(TOKEN), outbox_dir=outbox_dir, ca_bundle="/etc/ssl/mine.pem"
    )
    assert Transport(configured).verify == "/etc/ssl/mine.pem"  # the setting wins


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (401, Outcome.AUTH),
        (403, Outcome.AUTH),
        (408, Outcome.RETRY),
        (425, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
        (400, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (409, Outcome.REJECTED),  # a 409 without a next free id (the body here is "xxx...")
        (413, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (501, Outcome.REJECTED),
        (301, Outcome.REJECTED),
        (302, Outcome.REJECTED),
        (307, Outcome.REJECTED),
    ],
)
def test_each_status_is_classified(
    requests_mock: Any, transport: Transport, status: int, outcome: Outcome
) -> None:
    headers = {"Location": "https://elsewhere.example/x"} if 300 <= status < 400 else {}
    requests_mock.post(f"{BASE}/workflows", status_code=status, text="x" * 1000, headers=headers)
    result = transport.send("POST", "/workflows", b"{}")
    assert result.outcome is outcome
    assert result.status == status
    assert requests_mock.call_count == 1  # never follows a redirect, never retries itself
    assert len(result.detail) <= 200
    if headers:
        assert "redirect to https://elsewhere.example/x not followed" in result.detail


@pytest.mark.parametrize(
    ("body", "outcome", "next_id"),
    [
        ('{"detail": "task 3 was stored by another run", "next_id": 7}', Outcome.CONFLICT, 7),
        ('{"detail": "no id left", "next_id": null}', Outcome.REJECTED, None),
        ('{"next_id": true}', Outcome.REJECTED, None),
        ('{"next_id": 0}', Outcome.REJECTED, None),
        ('{"next_id": 9007199254740993}', Outcome.REJECTED, None),
        ("[7]", Outcome.REJECTED, None),
    ],
)
def test_a_409_naming_the_next_free_id_is_a_conflict(
    requests_mock: Any, transport: Transport, body: str, outcome: Outcome, next_id: int | None
) -> None:
    requests_mock.post(f"{BASE}/workflows/w/tasks", status_code=409, text=body)
    result = transport.send("POST", "/workflows/w/tasks", b"{}")
    assert (result.outcome, result.status, result.next_id) == (outcome, 409, next_id)


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ConnectionError("refused"),
        requests.exceptions.ConnectTimeout("connect timeout"),
        requests.exceptions.ReadTimeout("read timeout"),
        requests.exceptions.ChunkedEncodingError("broken body"),
    ],
)
def test_network_errors_are_retried(
    requests_mock: Any, transport: Transport, error: Exception
) -> None:
    requests_mock.post(f"{BASE}/workflows", exc=error)
    result = transport.send("POST", "/workflows", b"{}")
    assert result.outcome is Outcome.RETRY
    assert result.status is None
    assert type(error).__name__ in result.detail


def test_a_request_that_cannot_be_sent_is_rejected(
    requests_mock: Any, transport: Transport
) -> None:
    requests_mock.post(f"{BASE}/workflows", exc=requests.exceptions.InvalidURL("bad"))
    assert transport.send("POST", "/workflows", b"{}").outcome is Outcome.REJECTED


def test_the_retry_after_header_is_returned(requests_mock: Any, transport: Transport) -> None:
    requests_mock.post(f"{BASE}/workflows", status_code=429, headers={"Retry-After": "7"})
    assert transport.send("POST", "/workflows", b"{}").retry_after == "7"


def test_a_token_echoed_by_the_server_is_masked(requests_mock: Any, transport: Transport) -> None:
    requests_mock.post(f"{BASE}/workflows", status_code=400, text=f"bad token {TOKEN}!")
    result = transport.send("POST", "/workflows", b"{}")
    assert TOKEN not in result.detail
    assert "********" in result.detail


@pytest.mark.parametrize(
    ("token", "answer", "shown"),
    [
        (
            "ab",
            "bad token ab; about 'ab' (token=ab&x=1)",
            "bad token ********; about '********' (token=********&x=1)",
        ),
        ("7", "HTTP 401 for token 7 at 17:00", "HTTP 401 for token ******** at 17:00"),
        ("s3cr3t-to", "xs3cr3t-toy", "x********y"),
    ],
)
def test_a_short_token_is_masked_where_it_stands_alone(
    requests_mock: Any, outbox_dir: Path, token: str, answer: str, shown: str
) -> None:
    config = ApiSettings(base_url=BASE, token=Secret(token), outbox_dir=outbox_dir)
    requests_mock.post(f"{BASE}/workflows", status_code=400, text=answer)
    assert Transport(config).send("POST", "/workflows", b"{}").detail == shown


def test_http_client_debug_output_is_off_while_we_send(
    requests_mock: Any, transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http.client.HTTPConnection, "debuglevel", 1)
    seen: list[int] = []

    def answer(request: Any, context: Any) -> str:
        seen.append(http.client.HTTPConnection.debuglevel)
        return "{}"

    requests_mock.post(f"{BASE}/workflows", text=answer)
    transport.send("POST", "/workflows", b"{}")
    assert seen == [0]
    assert http.client.HTTPConnection.debuglevel == 1  # restored afterwards


def test_auth_never_shows_the_token(transport: Transport) -> None:
    assert TOKEN not in repr(transport._auth)
    assert TOKEN not in repr(transport.session.headers)


# -- backoff and Retry-After ------------------------------------------------------


def test_backoff_doubles_from_half_a_second_up_to_thirty() -> None:
    ceilings = [backoff_delay(n, rand=lambda: 1.0) for n in range(1, 10)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(3, rand=lambda: 0.25) == 0.5  # full jitter: uniform below the ceiling
    assert backoff_delay(1000, rand=lambda: 1.0) == 30.0


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = 1_800_000_000.0
    clock = lambda: now  # noqa: E731
    assert parse_retry_after("12", now=clock) == 12.0
    assert parse_retry_after("100000", now=clock) == 300.0  # capped
    future = datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=42)
    assert parse_retry_after(http_date(future), now=clock) == pytest.approx(42.0)
    past = datetime.fromtimestamp(now, timezone.utc) - timedelta(seconds=42)
    assert parse_retry_after(http_date(past), now=clock) == 0.0
    far = datetime.fromtimestamp(now, timezone.utc) + timedelta(days=3)
    assert parse_retry_after(http_date(far), now=clock) == 300.0
    for unreadable in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(unreadable, now=clock) is None


def test_retry_delay_prefers_the_server_and_falls_back_to_backoff() -> None:
    assert retry_delay(5, "3", rand=lambda: 1.0) == 3.0
    assert retry_delay(5, "garbage", rand=lambda: 1.0) == 8.0
    assert retry_delay(1, None, rand=lambda: 0.5) == 0.25


class ScriptedTransport:
    """A transport that answers from a script (then 201s) and records what it was asked."""

    def __init__(self, results: list[Result]) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def send(self, method: str, path: str, body: bytes | None, **kwargs: Any) -> Result:
        with self.lock:
            self.calls.append((method, path))
            if self.results:
                return self.results.pop(0)
        return Result(outcome=Outcome.DELIVERED, status=201)

    def close(self) -> None:
        pass


def test_the_backoff_gets_the_failure_count_and_the_retry_after_header(
    config: ApiSettings,
) -> None:
    failures = [Result(outcome=Outcome.RETRY, status=503, retry_after="9")] + [
        Result(outcome=Outcome.RETRY, detail="ConnectionError: refused")
    ] * 40
    transport = ScriptedTransport(failures)
    asked: list[tuple[int, str | None]] = []

    def delay(count: int, header: str | None) -> float:
        asked.append((count, header))
        return 0.0

    delivery = Delivery(config, transport_factory=lambda c: transport, delay=delay)  # type: ignore[arg-type,return-value]
    delivery.submit(create_task(sample_task_record("w", 1)))
    delivery.flush("w", timeout=10)
    stats = delivery.close(0)
    # Never dropped after N tries: 41 failures, then delivered.
    assert stats.delivered == 1 and stats.dropped == 0 and stats.spooled == 0
    assert len(transport.calls) == 42
    # One draw per failure: the probe's own backoff is the outage's pause (full jitter).
    assert len(asked) == 41
    assert [count for count, _ in asked[:5]] == [1, 2, 3, 4, 5]
    assert asked[0] == (1, "9") and asked[1] == (2, None)


def test_waits_follow_the_computed_delays(config: ApiSettings) -> None:
    transport = ScriptedTransport([Result(outcome=Outcome.RETRY, status=500)] * 2)
    delivery = Delivery(
        config,
        transport_factory=lambda c: transport,  # type: ignore[arg-type,return-value]
        delay=lambda count, header: 0.2,
    )
    started = time.monotonic()
    delivery.submit(create_task(sample_task_record("w", 1)))
    delivery.flush("w", timeout=10)
    assert 0.35 <= time.monotonic() - started < 2.0
    assert delivery.close(0).delivered == 1


# -- the next task id -----------------------------------------------------------

NEXT_ID_URL = f"{BASE}/workflows/a%2Fb/tasks/next-id"


@pytest.fixture
def provider(outbox_dir: Path) -> ServerAPI:
    provider = ServerAPI(base_url=BASE, token=TOKEN, outbox_dir=outbox_dir)
    yield provider
    provider.shutdown(0)


@pytest.fixture
def strict_provider(outbox_dir: Path) -> ServerAPI:
    provider = ServerAPI(base_url=BASE, token=TOKEN, outbox_dir=outbox_dir, strict=True)
    yield provider
    provider.shutdown(0)


def test_next_id_is_read_from_the_server(requests_mock: Any, provider: ServerAPI) -> None:
    requests_mock.get(NEXT_ID_URL, json={"next_id": 5, "last_id": 4})
    assert provider.get_next_task_id("a/b") == 5
    sent = requests_mock.last_request
    assert sent.url == NEXT_ID_URL
    assert sent.timeout == (2.0, 2.0)
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"


def test_next_id_is_retried_once(requests_mock: Any, provider: ServerAPI) -> None:
    requests_mock.get(NEXT_ID_URL, [{"status_code": 503}, {"json": {"next_id": 3}}])
    assert provider.get_next_task_id("a/b") == 3
    assert requests_mock.call_count == 2


BAD_ANSWERS: list[tuple[dict[str, Any], str]] = [
    ({"status_code": 404, "json": {"detail": "no"}}, "HTTP 404"),
    ({"status_code": 500}, "HTTP 500"),
    ({"status_code": 401}, "rejected the token"),
    ({"status_code": 201, "json": {"next_id": 3}}, "expected 200"),
    ({"exc": requests.exceptions.ConnectionError("refused")}, "ConnectionError"),
    ({"exc": requests.exceptions.ReadTimeout("slow")}, "ReadTimeout"),
    ({"text": "<html>oops</html>"}, "not JSON"),
    ({"json": [5]}, "no next_id"),
    ({"json": {"last_id": 4}}, "no next_id"),
    ({"json": {"next_id": True}}, "bool, not an integer"),
    ({"json": {"next_id": "5"}}, "str, not an integer"),
    ({"json": {"next_id": 5.0}}, "float, not an integer"),
    ({"json": {"next_id": 0}}, "outside"),
    ({"json": {"next_id": -3}}, "outside"),
    ({"json": {"next_id": 2**53 + 1}}, "outside"),
]


@pytest.mark.parametrize(("answer", "cause"), BAD_ANSWERS)
def test_an_unusable_next_id_warns_and_falls_back(
    requests_mock: Any,
    provider: ServerAPI,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
    cause: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="dotflow.server.api")
    requests_mock.get(NEXT_ID_URL, **answer)
    assert provider.get_next_task_id("a/b") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert cause in warnings[0]
    assert "falls back to INITIAL_TASK_ID (1)" in warnings[0] and "may collide" in warnings[0]
    assert requests_mock.call_count <= 2


@pytest.mark.parametrize(("answer", "cause"), BAD_ANSWERS)
def test_strict_mode_raises_instead(
    requests_mock: Any, strict_provider: ServerAPI, answer: dict[str, Any], cause: str
) -> None:
    requests_mock.get(NEXT_ID_URL, **answer)
    with pytest.raises(ConfigurationError, match="SERVER_STRICT") as raised:
        strict_provider.get_next_task_id("a/b")
    assert cause in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_spooled_tasks_count_for_the_next_id(
    requests_mock: Any, provider: ServerAPI, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(provider.config.outbox_dir, BASE, provider.config.fingerprint)
    entries = [
        Entry(request=update_task(sample_task_record("a/b", task_id)), first_enqueued_at=0.0)
        for task_id in (5, 7, 6)
    ]
    outbox.write("a/b", entries)
    outbox.write(
        "other",
        [Entry(request=create_task(sample_task_record("other", 99)), first_enqueued_at=0.0)],
    )
    requests_mock.get(NEXT_ID_URL, json={"next_id": 3})
    assert provider.get_next_task_id("a/b") == 8
    requests_mock.get(NEXT_ID_URL, json={"next_id": 12})
    assert provider.get_next_task_id("a/b") == 12
    caplog.set_level(logging.WARNING, logger="dotflow.server.api")
    requests_mock.get(NEXT_ID_URL, status_code=500)
    assert provider.get_next_task_id("a/b") == 8
    assert "continues after task 7" in caplog.text
