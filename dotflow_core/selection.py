"""Which providers are active, and why.

First rule that applies wins:

1. ``flag``: an explicit choice (``dotflow start --provider``, ``DotFlow(providers=...)``);
2. ``env``: ``DOTFLOW_PROVIDER``;
3. ``config``: ``provider`` in ``[tool.dotflow]`` / ``dotflow.toml``;
4. ``auto``: managed mode, when ``SERVER_BASE_URL`` and ``SERVER_USER_TOKEN``
   are both set and the ``api`` provider is installed;
5. ``default``: the ``default`` provider, when installed;
6. ``none``: no provider; every hook is a no-op.

A selection is a comma-separated list of names (events fan out to all of
them); the word ``none`` selects no provider at all.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

import attrs

from dotflow_core.errors import ConfigurationError
from dotflow_core.settings import Settings

logger = logging.getLogger("dotflow.providers")

PROVIDER_ENV = "DOTFLOW_PROVIDER"
BASE_URL_ENV = "SERVER_BASE_URL"
TOKEN_ENV = "SERVER_USER_TOKEN"
MANAGED_PROVIDER = "api"
DEFAULT_PROVIDER = "default"
NO_PROVIDER = "none"

_warned_missing_api = False


@attrs.frozen
class Selection:
    """The providers to activate and the rule that chose them."""

    names: tuple[str, ...]
    #: One of ``flag``, ``env``, ``config``, ``auto``, ``default``, ``none``.
    source: str
    #: Something the user should be told once (e.g. managed mode is set up but not installed).
    notice: str | None = None

    def describe(self) -> str:
        """``api (auto)``, ``none (none)``...: names and source in a few words."""
        return f"{','.join(self.names) or NO_PROVIDER} ({self.source})"


def parse_names(value: str | Sequence[str], origin: str) -> tuple[str, ...]:
    """Split ``"api,default"`` (or a list) into names; ``none`` means no provider.

    :raises ConfigurationError: an empty name, or ``none`` mixed with others.
    """
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, (list, tuple)) and value:
        items = list(value)
    else:  # an empty list, a number, a boolean or a table from a config file
        items = [None]
    names: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigurationError(
                f"{origin}: {shown_value(value)} is not a provider list; "
                f"use comma-separated names such as 'api,default', or 'none'"
            )
        name = item.strip()
        if name not in names:
            names.append(name)
    if NO_PROVIDER in names:
        if len(names) > 1:
            raise ConfigurationError(f"{origin}: 'none' cannot be combined with other providers")
        return ()
    return tuple(names)


def shown_value(value: object) -> str:
    """A setting's value as its user wrote it (TOML words, not Python reprs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return repr(list(value))
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def select_providers(
    settings: Settings, installed: Collection[str], flag: str | None = None
) -> Selection:
    """Apply the selection rules (module docstring) to a flag, settings and what is installed."""
    if flag is not None:
        return Selection(parse_names(flag, "--provider"), "flag")
    from_env = settings.environ.get(PROVIDER_ENV, "").strip()
    if from_env:
        return Selection(parse_names(from_env, PROVIDER_ENV), "env")
    from_config = settings.config.get("provider")
    if from_config is not None:
        return Selection(parse_names(from_config, settings.origin("provider")), "config")
    _warn_misspelt_provider_key(settings)
    managed = bool(settings.environ.get(BASE_URL_ENV) and settings.environ.get(TOKEN_ENV))
    notice = None
    if managed:
        if MANAGED_PROVIDER in installed:
            return Selection((MANAGED_PROVIDER,), "auto")
        notice = (
            f"{BASE_URL_ENV} and {TOKEN_ENV} are set but the {MANAGED_PROVIDER!r} provider is "
            f"not installed, so nothing is reported to the server; "
            f"pip install dotflow-server-api to enable managed mode"
        )
        _warn_missing_api_once(notice)
    if DEFAULT_PROVIDER in installed:
        return Selection((DEFAULT_PROVIDER,), "default", notice)
    return Selection((), NO_PROVIDER, notice)


def _warn_misspelt_provider_key(settings: Settings) -> None:
    """A top-level config key that looks like ``provider`` would otherwise be ignored silently."""
    keys = [key for key, value in settings.config.items() if not isinstance(value, Mapping)]
    if not keys:
        return
    import difflib

    for key in keys:
        if difflib.get_close_matches(key.lower(), ("provider", "providers"), n=1, cutoff=0.75):
            logger.warning(
                "%s: unknown key, ignored; did you mean 'provider'?", settings.origin(key)
            )


def _warn_missing_api_once(notice: str) -> None:
    global _warned_missing_api
    if not _warned_missing_api:
        _warned_missing_api = True
        logger.warning(notice)
