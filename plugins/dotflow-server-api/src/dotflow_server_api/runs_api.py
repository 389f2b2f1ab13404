"""The reads behind ``dotflow runs``: a workflow's runs, one run, a run's tasks.

The same settings, session and token handling as managed mode (``SERVER_BASE_URL``,
``SERVER_USER_TOKEN`` or ``_FILE``, the CA bundle and timeouts), through
:class:`~dotflow_server_api.transport.Transport`. Every failure is a
:class:`RunsError`: one line naming what was wrong, and the command's exit code.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlencode

from dotflow_server_api.payloads import segment, workflow_path
from dotflow_server_api.settings import TOKEN_ENV, ApiSettings
from dotflow_server_api.transport import Outcome, Result, Transport

#: Exit code of a lookup the server could not answer: unknown id, server unreachable.
EXIT_FAILED: Final = 1
#: Exit code of a usage or configuration error (a rejected token among them).
EXIT_USAGE: Final = 2
#: The server's largest page (``limit``).
MAX_PAGE: Final = 1000
#: At most this many tasks of one run are read (pages of ``MAX_PAGE``).
MAX_TASKS: Final = 100_000


class RunsError(Exception):
    """A failure to print as one line; ``exit_code`` is what the command returns."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunsClient:
    """GET requests to one server with one token; close it when done."""

    def __init__(self, config: ApiSettings) -> None:
        self.config = config
        self._transport = Transport(config, pool_size=1)

    def __enter__(self) -> RunsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._transport.close()

    def runs(self, workflow_id: str, *, limit: int) -> dict[str, Any]:
        """A page of the workflow's runs, newest first (``items``, ``total``)."""
        return self._get(
            f"{workflow_path(workflow_id)}/runs?{urlencode({'limit': limit})}",
            f"workflow {workflow_id!r}",
        )

    def run(self, run_id: str) -> dict[str, Any]:
        """The token's run ``run_id``, whichever workflow holds it."""
        return self._get(f"/runs/{segment(run_id)}", f"run {run_id!r}")

    def tasks(self, workflow_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's tasks by id (all of them, up to ``MAX_TASKS``)."""
        items: list[dict[str, Any]] = []
        while len(items) < MAX_TASKS:
            query = urlencode({"run_id": run_id, "limit": MAX_PAGE, "offset": len(items)})
            page = self._get(
                f"{workflow_path(workflow_id)}/tasks?{query}", f"workflow {workflow_id!r}"
            )
            batch = page.get("items") or []
            items.extend(batch)
            if not batch or len(items) >= int(page.get("total") or 0):
                break
        return items

    def _get(self, path: str, what: str) -> dict[str, Any]:
        result = self._transport.send("GET", path)
        if result.outcome is Outcome.DELIVERED:
            try:
                answer = json.loads(result.content)
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                return answer
            raise RunsError(f"the server at {self.config.base_url} sent an answer that is not JSON")
        raise self._failure(result, what)

    def _failure(self, result: Result, what: str) -> RunsError:
        base = self.config.base_url
        if result.status is None:
            return RunsError(
                f"cannot reach the server at SERVER_BASE_URL={base!r}: {result.detail}"
            )
        if result.outcome is Outcome.AUTH:
            return RunsError(
                f"the server at {base} refused the token (HTTP {result.status}): check "
                f"{TOKEN_ENV} or {TOKEN_ENV}_FILE (the token is not shown)",
                EXIT_USAGE,
            )
        if result.status == 404:
            return RunsError(f"{what} not found on {base} for this token")
        return RunsError(f"the server at {base} answered {result.describe()}")
