"""Filling in the run-page URI template a server sends in its ``Dotflow-Dashboard`` header."""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import quote, urlsplit

_VARIABLE: Final = re.compile(r"\{([a-z_]+)\}")


def expand_run_link(template: str, workflow: Any) -> str | None:
    """``template`` with ``{workflow_id}`` and ``{run_id}`` percent-encoded in, or None
    when it names a variable this run has no value for or is not an http(s) URL."""
    values = {
        "workflow_id": getattr(workflow, "workflow_id", None),
        "run_id": getattr(workflow, "run_id", None),
    }
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None:
            missing = True
            return ""
        text = quote(str(value), safe="")
        return text.replace(".", "%2E") if text in (".", "..") else text

    link = _VARIABLE.sub(fill, template.strip())
    if missing or urlsplit(link).scheme not in ("http", "https") or not urlsplit(link).netloc:
        return None
    return link
