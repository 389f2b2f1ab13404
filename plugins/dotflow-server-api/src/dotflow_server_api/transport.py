"""HTTP: the pooled session, one request, and what its outcome means for delivery.

``requests`` is imported here only, when the first :class:`Transport` is
built (by a delivery worker thread, or by ``get_next_task_id``), so that
importing the provider costs the workflow nothing.

The token is attached by an auth object at send time: it is never in the
session's headers, never logged, and ``http.client``'s debug output (which
prints headers) is forced off while our requests run.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Final

from dotflow_core.plugin import INITIAL_TASK_ID, MAX_TASK_ID, is_strict_int, one_line
from dotflow_server_api._version import __version__
from dotflow_server_api.settings import ApiSettings

if TYPE_CHECKING:
    import requests

USER_AGENT: Final = f"dotflow-server-api/{__version__}"
#: Statuses worth retrying: the server may well accept the same request later.
RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A run-scoped write touching another run's task: the body names the next free id.
CONFLICT_STATUS: Final = 409
AUTH_STATUSES: Final = frozenset({401, 403})
#: Longest piece of a response body quoted in a log line.
SNIPPET_LIMIT: Final = 200
MASK: Final = "********"
#: A token shorter than this is masked only where it stands alone (not inside a word):
#: masking every "ab" of a message would garble it.
SHORT_TOKEN: Final = 8


#: The header in which a server gives its run pages' URI template (``{workflow_id}``,
#: ``{run_id}``); see :func:`dashboard_template`.
DASHBOARD_HEADER: Final = "Dotflow-Dashboard"
#: The header in which a server offers its batch endpoint (see :mod:`.batching`).
BATCH_HEADER: Final = "Dotflow-Batch"
#: The last template each base URL sent (a dict's item assignment is atomic).
_dashboard_templates: dict[str, str] = {}


def dashboard_template(base_url: str) -> str | None:
    """The run-page URI template the server at ``base_url`` last sent, if any."""
    return _dashboard_templates.get(base_url)


class Outcome(enum.Enum):
    """What a request's result means for the event it carried."""

    #: 2xx: done.
    DELIVERED = "delivered"
    #: Connection error, timeout, 408/425/429/500/502/503/504: keep it and try again later.
    RETRY = "retry"
    #: 401/403: the token was rejected; sending more is pointless.
    AUTH = "auth"
    #: 409 with the next free task id (``{"next_id": N}``): the task id is another run's;
    #: the run's tasks are reported under free ids (see :mod:`.delivery.renumber`).
    CONFLICT = "conflict"
    #: Any other answer (other 4xx, 3xx, other 5xx) or a request that cannot be sent: drop it.
    REJECTED = "rejected"


class Result:
    """The outcome of one request, with what the logs and the retry logic need."""

    __slots__ = (
        "batch",
        "content",
        "detail",
        "maybe_applied",
        "next_id",
        "outcome",
        "retry_after",
        "status",
    )

    def __init__(
        self,
        *,
        outcome: Outcome,
        status: int | None = None,
        detail: str = "",
        retry_after: str | None = None,
        content: bytes = b"",
        next_id: int | None = None,
        batch: str | None = None,
        maybe_applied: bool | None = None,
    ) -> None:
        self.outcome = outcome
        #: The HTTP status, or None when no answer came.
        self.status = status
        #: One line for logs (exception type and message, or a body snippet); never the token.
        self.detail = detail
        #: The raw ``Retry-After`` header, if any.
        self.retry_after = retry_after
        #: The response body (kept only for successful answers).
        self.content = content
        #: For :attr:`Outcome.CONFLICT`: the next free task id the server named.
        self.next_id = next_id
        #: The raw ``Dotflow-Batch`` header, if the answer carried one.
        self.batch = batch
        #: For :attr:`Outcome.RETRY`: the server may have applied the request (it was sent,
        #: and no answer said it was not: a timeout or a broken answer, 500/502/504).
        self.maybe_applied = (
            outcome is Outcome.RETRY and status is not None and status not in NOT_APPLIED_STATUSES
            if maybe_applied is None
            else maybe_applied
        )

    def __repr__(self) -> str:
        return f"Result({self.outcome.value}, status={self.status}, detail={self.detail!r})"

    def describe(self) -> str:
        """``HTTP 503: <snippet>``, or the exception, for log lines."""
        if self.status is None:
            return self.detail or "no answer"
        return f"HTTP {self.status}: {self.detail}" if self.detail else f"HTTP {self.status}"


#: Retryable answers that say the request was not applied: too early, too many,
#: unavailable, and 502 (what a proxy answers when it cannot reach the server). A 500 or a
#: 504 (the proxy gave up waiting) may come after the server applied the request.
NOT_APPLIED_STATUSES: Final = frozenset({408, 425, 429, 502, 503})


def _never_connected(error: Exception) -> bool:
    """True when the request cannot have reached the server (no connection was made)."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    cause = error.args[0] if error.args else None
    return isinstance(cause, NewConnectionError) or isinstance(
        getattr(cause, "reason", None), NewConnectionError
    )


def classify_status(status: int, content: bytes = b"") -> tuple[Outcome, int | None]:
    """The outcome an HTTP status (and, for a 409, its body) means, with the next free id.

    A 409 whose JSON body names ``next_id`` (an int from 1 to 2**53) is a
    :attr:`Outcome.CONFLICT` carrying that id; any other 409 is a rejection.
    """
    if 200 <= status < 300:
        return Outcome.DELIVERED, None
    if status in AUTH_STATUSES:
        return Outcome.AUTH, None
    if status in RETRY_STATUSES:
        return Outcome.RETRY, None
    if status == CONFLICT_STATUS:
        next_id = conflict_next_id(content)
        if next_id is not None:
            return Outcome.CONFLICT, next_id
    return Outcome.REJECTED, None


def conflict_next_id(content: bytes) -> int | None:
    """The ``next_id`` of a 409's body ``{"detail": ..., "next_id": N}``, if it is usable."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("next_id") if isinstance(data, dict) else None
    return value if is_strict_int(value, INITIAL_TASK_ID, MAX_TASK_ID) else None


class _QuietHttpClient:
    """Forces ``http.client``'s debug level to 0 while any of our requests runs.

    At debug level > 0 ``http.client`` prints every header, the token
    included, to stdout. The previous level comes back when the last of our
    concurrent requests ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved = 0

    def __enter__(self) -> None:
        import http.client  # already loaded by requests; imported here to keep import cheap

        with self._lock:
            if self._active == 0:
                self._saved = http.client.HTTPConnection.debuglevel
            self._active += 1
            http.client.HTTPConnection.debuglevel = 0

    def __exit__(self, *exc: object) -> None:
        import http.client

        with self._lock:
            self._active -= 1
            if self._active == 0:
                http.client.HTTPConnection.debuglevel = self._saved

    def after_fork(self) -> None:
        """In a forked child: a fresh lock; give back a debug level a parent request hid."""
        self._lock = threading.Lock()
        if self._active:
            import http.client

            http.client.HTTPConnection.debuglevel = self._saved
        self._active = 0


quiet_http_client = _QuietHttpClient()


def _bearer_auth(token_value: Any) -> Any:
    import requests.auth

    class BearerAuth(requests.auth.AuthBase):
        """Adds ``Authorization: Bearer <token>`` to each request; shows nothing in repr."""

        def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
            request.headers["Authorization"] = f"Bearer {token_value.reveal()}"
            return request

        def __repr__(self) -> str:
            return f"BearerAuth({MASK})"

    return BearerAuth()


def _stays_on_origin(path: str) -> bool:
    """True when ``base URL + path`` keeps the base URL's scheme, host and port."""
    return (
        path.startswith("/")
        and not path.startswith("//")
        and "@" not in path
        and "\\" not in path
        and not any(ord(character) < 0x21 for character in path)
    )


class Transport:
    """A keep-alive ``requests.Session`` to one server, sending one request at a time per call.

    Safe to call from several threads at once: the urllib3 pool holds up to
    ``max_in_flight`` connections, and cookies are refused (nothing shared
    but the pool).

    The environment settings requests honours (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) are
    read once, here, rather than on every request as a default session does:
    every event goes to the same server, and that lookup was a fifth of each
    request's CPU time.
    """

    def __init__(self, config: ApiSettings, *, pool_size: int | None = None) -> None:
        from http.cookiejar import DefaultCookiePolicy

        import requests
        from requests.adapters import HTTPAdapter

        self.config = config
        self.base_url = config.base_url
        self._requests = requests
        self._auth = _bearer_auth(config.token)
        session = requests.Session()
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        #: The ``verify`` argument of every request: the configured CA bundle, else the
        #: one requests' environment variables name, else the default trust store.
        self.verify: str | bool = config.verify
        if self.verify is True:
            self.verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        size = pool_size or config.max_in_flight
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(
            {
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )
        self.session = session
        from dotflow_server_api.batching import BatchSupport  # it imports this module

        #: What this destination offers of batches, learned from every answer.
        self.batch = BatchSupport()
        self._proxies = dict(session.proxies)
        # requests normalises the base URL once (IDNA host, quoting); the paths that
        # follow it are percent-encoded already (see payloads).
        base = requests.PreparedRequest()
        base.prepare_url(self.base_url, None)
        self._url_prefix = (base.url or self.base_url).rstrip("/")

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        timeout: tuple[float, float] | None = None,
    ) -> Result:
        """Send one request; never raises. Redirects are not followed."""
        requests = self._requests
        timeout = timeout or (self.config.connect_timeout, self.config.read_timeout)
        if not _stays_on_origin(path):
            # Defence in depth (outbox lines are checked before they are queued): a path
            # that could move the request to another host never goes out with the token.
            return Result(
                outcome=Outcome.REJECTED,
                detail=f"refusing to send to a path that leaves {self.base_url}: {path[:80]!r}",
            )
        try:
            with quiet_http_client:
                response = self.session.send(
                    self._prepare(method, path, body),
                    timeout=timeout,
                    allow_redirects=False,
                    verify=self.verify,
                    proxies=self._proxies,
                )
                try:
                    content = response.content
                finally:
                    response.close()
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as error:
            # Nothing, or a broken answer, came back: the server may take it later. A
            # request the server applied before the answer broke is sent again; the
            # server treats a repeated create or update as the same write.
            return Result(
                outcome=Outcome.RETRY,
                detail=self._describe(error),
                maybe_applied=not _never_connected(error),
            )
        except Exception as error:  # an invalid URL or header, or a bug: retrying cannot help
            return Result(outcome=Outcome.REJECTED, detail=self._describe(error))
        outcome, next_id = classify_status(response.status_code, content)
        batch = response.headers.get(BATCH_HEADER)
        self.batch.learn(batch, response.status_code)
        if outcome is Outcome.DELIVERED:
            template = response.headers.get(DASHBOARD_HEADER)
            if template:
                _dashboard_templates[self.base_url] = template
            return Result(
                outcome=outcome, status=response.status_code, content=content, batch=batch
            )
        snippet = one_line(content[: SNIPPET_LIMIT * 4].decode("utf-8", "replace"), SNIPPET_LIMIT)
        if 300 <= response.status_code < 400:
            location = response.headers.get("Location")
            if location:
                snippet = f"redirect to {one_line(location, SNIPPET_LIMIT)} not followed"
        return Result(
            outcome=outcome,
            status=response.status_code,
            detail=self.redact(snippet),
            retry_after=response.headers.get("Retry-After"),
            next_id=next_id,
            batch=batch,
        )

    def _prepare(self, method: str, path: str, body: bytes | None) -> requests.PreparedRequest:
        """The request, built directly rather than by ``Session.request``.

        ``Session.request`` parses and re-quotes the URL, checks the body's type
        and merges the session's settings again for every event, which was a third
        of each request's CPU time; here all of that was done once, in ``__init__``.
        """
        prepared = self._requests.PreparedRequest()
        prepared.method = method
        prepared.url = self._url_prefix + path
        prepared.headers = self._requests.structures.CaseInsensitiveDict(self.session.headers)
        prepared.body = body
        prepared.prepare_content_length(body)
        prepared.prepare_cookies(self.session.cookies)  # always empty: its policy refuses all
        signed: requests.PreparedRequest = self._auth(prepared)
        return signed

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing must never raise
            self.session.close()

    def redact(self, text: str) -> str:
        """``text`` with the token masked, should it ever appear (e.g. echoed by a server)."""
        token = self.config.token.reveal()
        if not token:
            return text
        if len(token) >= SHORT_TOKEN:
            return text.replace(token, MASK)
        return re.sub(rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])", MASK, text)

    def _describe(self, error: BaseException) -> str:
        return self.redact(one_line(f"{type(error).__name__}: {error}", 300))
